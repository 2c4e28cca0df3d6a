#!/usr/bin/env bash
# The long R-D study of docs/RD_STUDY.md (2000 steps, 3-4 seeds, 4 λ per method, plus the lr 5e-4 check), run from a
# git worktree at the commit the study started from, so that later work cannot change the code under it.
# Resumable: it copies this checkout's partial results into the worktree and the study skips the runs they hold.
#
#   benchmarks/rd_study_long.sh [WORKTREE]          (default: ../lit-hpcm-study; runs for hours, `--jobs 2`)
#   cp WORKTREE/benchmarks/results/rd_study_2000*.json benchmarks/results/   (and the _weights folders), then commit
set -euo pipefail
COMMIT=3ec9d9d  # the study's code; recorded in every run's provenance
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORKTREE="${1:-$REPO/../lit-hpcm-study}"
RESULTS=benchmarks/results
[ -d "$WORKTREE" ] || git -C "$REPO" worktree add --detach "$WORKTREE" "$COMMIT"
for name in rd_study_2000 rd_study_2000_lr5e-4; do
  if [ -f "$REPO/$RESULTS/$name.json" ] && [ ! -f "$WORKTREE/$RESULTS/$name.json" ]; then
    cp "$REPO/$RESULTS/$name.json" "$WORKTREE/$RESULTS/"
    [ -d "$REPO/$RESULTS/${name}_weights" ] && cp -r "$REPO/$RESULTS/${name}_weights" "$WORKTREE/$RESULTS/"
  fi
done
cd "$WORKTREE"
export PYTHONPATH="$WORKTREE"  # the worktree's lit_hpcm, not the installed checkout's
study() { python benchmarks/rd_study.py --jobs 2 --seeds 0 1 2 "$@"; }
MAIN=(-o $RESULTS/rd_study_2000.json --plot docs/rd_study_2000.png --curves docs/rd_study_2000_curves.png)
# Order since seeds 0 and 1 of the main grid were in: the lr check, then the main grid's seed 2, then cautious.
study --methods adam famo_rd famo_anchored --lr 5e-4 --lambdas_adam 0.0012 --lambdas_famo_rd 0.013 \
    --lambdas_famo_anchored 0.005 -o $RESULTS/rd_study_2000_lr5e-4.json
study --methods adam famo_rd famo_anchored "${MAIN[@]}"
study --methods adam famo_rd famo_anchored cautious "${MAIN[@]}"
# then a fourth seed of the three main methods, for the collapse rate (cautious keeps 3)
study --seeds 0 1 2 3 --methods adam famo_rd famo_anchored "${MAIN[@]}"

#!/usr/bin/env bash
# Run every point of a grid sweep file (configs/sweeps/*.yaml, configs/ablations/*.yaml) one after another,
# without a W&B server: `lit-hpcm sweep-grid` (here its light entry point, python -m lit_hpcm.sweeps.grid)
# writes the plan, the command W&B's agent would run for each point as one shell-quoted line, and this loop
# runs it, appending your LightningCLI overrides to every run.
#
#   configs/sweeps/grid.sh SWEEP.yaml [OVERRIDES...]
#   configs/sweeps/grid.sh configs/sweeps/gamma_wlr.yaml --data.train_dir /data/train --data.val_dir /data/kodak
#   configs/sweeps/grid.sh configs/ablations/freezing.yaml -c configs/sweeps/demo_scale.yaml
#
# Run it from the repository root (the sweep files name configs by relative path). DRY_RUN=1 prints the
# commands without running them. W&B loggers log offline unless WANDB_MODE says otherwise. A failed run does
# not stop the loop; the exit status is 1 when any run failed.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 SWEEP.yaml [LightningCLI overrides appended to every run]" >&2
    exit 2
fi
sweep=$1
shift
plan=$(python -m lit_hpcm.sweeps.grid "$sweep")
export WANDB_MODE=${WANDB_MODE:-offline}

total=$(wc -l <<< "$plan")
extra=""
if (($# > 0)); then
    extra=$(printf ' %q' "$@")
fi
index=0
failed=0
while IFS= read -r line; do
    index=$((index + 1))
    eval "command=($line)"
    echo "[$index/$total] $line${extra}" >&2
    if [[ -n ${DRY_RUN:-} ]]; then
        continue
    fi
    if ! "${command[@]}" "$@" < /dev/null; then
        echo "[$index/$total] failed" >&2
        failed=$((failed + 1))
    fi
done <<< "$plan"

if ((failed > 0)); then
    echo "$failed of $total runs failed" >&2
    exit 1
fi

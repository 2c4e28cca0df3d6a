"""Quality guard of the fast path: the same short training run, eager fp32 vs a fast mode.

For every seed both runs start from that seed and see the same crops of the bundled sample photos;
after `--steps` steps each is validated once (eval-mode forward on the held-out sample photos) and the
validation R-D loss, bpp and PSNR are compared. A short run from random weights is chaotic (float-level
differences alone move its end point by several percent), so the guard compares the mean over seeds:
the fast path passes when its mean validation loss is within `--tolerance` (relative) of the eager fp32
runs' mean. The spread of the fp32 runs over seeds is reported beside it as the noise scale.

    python benchmarks/quality_guard.py --preset base --steps 500 --seeds 0 1 2 --fast bf16-cl-graphs -o guard.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import lightning as L
import torch
from train_step import MODES, release

from _common import provenance, write_json
from lit_hpcm.data import ImageDataModule
from lit_hpcm.training.module import LitHPCM

REFERENCE_MODE = "fp32"


def train_and_validate(preset: str, mode: str, seed: int, steps: int, batch: int, workers: int) -> dict:
    """Fit one epoch of `steps` steps in `mode` from `seed`, validated at its end; the logged val metrics."""
    precision, fast_path = MODES[mode]
    L.seed_everything(seed, verbose=False)
    module = LitHPCM(preset=preset, lr=1e-4, **fast_path)
    data = ImageDataModule(patch_size=256, batch_size=batch, num_workers=workers, train_length=batch * steps)
    trainer = L.Trainer(
        accelerator="cuda" if torch.cuda.is_available() else "cpu", devices=1, precision=precision,
        max_steps=steps, benchmark=True, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )
    started = time.perf_counter()
    trainer.fit(module, datamodule=data)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return {"mode": mode, "seed": seed, "steps": steps, "batch": batch, "wall_s": time.perf_counter() - started,
            "val": metrics}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base", choices=["tiny", "base", "large"])
    parser.add_argument("--fast", nargs="+", default=["bf16-graphs"], choices=sorted(MODES))
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("-o", "--output", default="quality_guard.json")
    args = parser.parse_args(argv)

    report = {"benchmark": "quality_guard", "provenance": provenance(), "preset": args.preset,
              "tolerance": args.tolerance, "runs": [], "summary": {}}
    for seed in args.seeds:
        for mode in [REFERENCE_MODE, *args.fast]:
            run = train_and_validate(args.preset, mode, seed, args.steps, args.batch, args.workers)
            report["runs"].append(run)
            report["summary"] = summarize(report["runs"], args.tolerance)
            write_json(args.output, report)
            print(seed, mode, {k: round(v, 4) for k, v in run["val"].items()}, flush=True)
            release()
    print(json.dumps(report["summary"], indent=2))


def summarize(runs: list[dict], tolerance: float) -> dict:
    """Per mode: validation losses by seed, their mean and spread, and the mean's gap to fp32 over the same seeds."""
    by_mode: dict[str, dict[int, float]] = {}
    for run in runs:
        by_mode.setdefault(run["mode"], {})[run["seed"]] = run["val"]["val/loss"]
    reference = by_mode.get(REFERENCE_MODE, {})
    summary = {}
    for mode, losses in by_mode.items():
        seeds = sorted(set(losses) & set(reference))
        if not seeds:
            continue
        mean = statistics.fmean(losses[s] for s in seeds)
        reference_mean = statistics.fmean(reference[s] for s in seeds)
        gap = mean / reference_mean - 1
        summary[mode] = {"seeds": seeds, "val_loss": [losses[s] for s in seeds], "mean": mean,
                         "stdev": statistics.stdev(losses[s] for s in seeds) if len(seeds) > 1 else None,
                         "relative_gap_of_mean": gap, "passes": abs(gap) <= tolerance}
    return summary


if __name__ == "__main__":
    main()

"""Quality guard of the fast path: the same short training run, eager fp32 vs a fast mode.

Both runs start from the same seed and see the same crops of the bundled sample photos; after
`--steps` steps each is validated once (eval-mode forward on the held-out sample photos) and the
validation R-D loss, bpp and PSNR are compared. The fast path passes when its validation loss is
within `--tolerance` (relative) of the eager fp32 run's.

    python benchmarks/quality_guard.py --preset base --steps 500 --fast bf16-graphs -o guard.json
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch
from _common import provenance, write_json
from train_step import MODES, release

from lit_hpcm.data import ImageDataModule
from lit_hpcm.module import LitHPCM

REFERENCE_MODE = "fp32"


def train_and_validate(preset: str, mode: str, steps: int, batch: int, workers: int) -> dict:
    """Fit one epoch of `steps` steps in `mode` (seed 0), validated at its end; the logged val metrics."""
    precision, fast_path = MODES[mode]
    L.seed_everything(0, verbose=False)
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
    return {"mode": mode, "steps": steps, "batch": batch, "wall_s": time.perf_counter() - started, "val": metrics}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base", choices=["tiny", "base", "large"])
    parser.add_argument("--fast", nargs="+", default=["bf16-graphs"], choices=sorted(MODES))
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("-o", "--output", default="quality_guard.json")
    args = parser.parse_args(argv)

    report = {"benchmark": "quality_guard", "provenance": provenance(), "preset": args.preset, "runs": []}
    reference = None
    for mode in [REFERENCE_MODE, *args.fast]:
        run = train_and_validate(args.preset, mode, args.steps, args.batch, args.workers)
        if reference is None:
            reference = run["val"]["val/loss"]
        run["relative_loss_gap"] = run["val"]["val/loss"] / reference - 1
        run["passes"] = abs(run["relative_loss_gap"]) <= args.tolerance
        report["runs"].append(run)
        write_json(args.output, report)
        print(mode, {k: round(v, 4) for k, v in run["val"].items()}, f"gap {run['relative_loss_gap']:+.4%}", flush=True)
        release()


if __name__ == "__main__":
    main()

"""Training-step speed of the real `LitHPCM` step (manual optimization included), per mode and recipe.

Each configuration runs `Trainer.fit` on 256² crops of the bundled sample photos for warm-up + timed
steps; the step time is the gap between consecutive batch ends (data fetch, Lightning hooks, forward,
backward, clipping, optimizer and FAMO included), with the device synchronised at both ends of the timed
window (mean) and the step's own device read pacing the steps between them (median). Reported: median
and mean step time, img/s, peak allocated and reserved memory over the whole run (warm-up and CUDA-graph
capture included).

    python benchmarks/train_step.py --presets base --batch-sizes 16 --modes fp32 bf16-compile -o out.json
"""

from __future__ import annotations

import argparse
import gc
import time
import traceback

import lightning as L
import torch

from _common import median, provenance, synchronize, write_json
from lit_hpcm.data import ImageDataModule
from lit_hpcm.training.module import LitHPCM

# Mode name -> (Trainer precision, LitHPCM fast-path options). TF32 is on in every mode (official setting).
MODES: dict[str, tuple[str, dict]] = {
    "fp32": ("32-true", {}),
    "bf16": ("bf16-mixed", {}),
    "bf16-cl": ("bf16-mixed", {"channels_last": True}),
    "fp32-compile": ("32-true", {"compile_model": True}),
    "bf16-compile": ("bf16-mixed", {"compile_model": True}),
    "bf16-compile-cl": ("bf16-mixed", {"compile_model": True, "channels_last": True}),
    "bf16-compile-cudagraphs": ("bf16-mixed", {"compile_model": {"mode": "reduce-overhead"}}),
    "fp32-graphs": ("32-true", {"cuda_graphs": True}),
    "bf16-graphs": ("bf16-mixed", {"cuda_graphs": True}),
    "bf16-cl-graphs": ("bf16-mixed", {"cuda_graphs": True, "channels_last": True}),
}

# Recipe name -> optimizer and balancing settings of LitHPCM.
RECIPES: dict[str, dict] = {
    "adam": {"optimizer": "adam", "balancing": "none"},
    "famo_same_batch": {"optimizer": "cautious_adam", "balancing": "famo", "famo_update": "same_batch"},
    "famo_next_batch": {"optimizer": "cautious_adam", "balancing": "famo", "famo_update": "next_batch"},
}


class StepClock(L.Callback):
    """Host time at the end of every training batch; the device is synchronised when the timed window opens
    and when it closes.

    LitHPCM's step reads one flag back from the device (its finiteness check), so the host never runs more
    than one step ahead and the gaps between batch ends follow the device's pace. Synchronising at every
    batch end instead would also queue the host's work for the next step behind the device's, which is not
    how training runs.
    """

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps = warmup, steps
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if len(self.ends) in (self.warmup - 1, self.warmup + self.steps - 1):
            synchronize(pl_module.device)
        self.ends.append(time.perf_counter())

    def timed_steps(self) -> list[float]:
        """Seconds of each step after warm-up (gaps between consecutive batch ends)."""
        ends = self.ends[self.warmup - 1 :]
        return [b - a for a, b in zip(ends, ends[1:])]


def measure(preset: str, batch: int, mode: str, recipe: str, steps: int, warmup: int, workers: int) -> dict:
    """One configuration: fit for warmup + steps batches and summarise the timed ones."""
    precision, fast_path = MODES[mode]
    accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    L.seed_everything(0, verbose=False)
    module = LitHPCM(preset=preset, lr=1e-4, famo_gamma=0.002, **RECIPES[recipe], **fast_path)
    data = ImageDataModule(patch_size=256, batch_size=batch, num_workers=workers, train_length=batch * (steps + warmup))
    clock = StepClock(warmup, steps)
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, precision=precision, max_steps=steps + warmup, benchmark=True,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock],
    )
    if accelerator == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.fit(module, datamodule=data)
    times = clock.timed_steps()
    step = median(times)
    row = {
        "preset": preset, "batch": batch, "mode": mode, "recipe": recipe, "precision": precision,
        "fast_path": fast_path, "timed_steps": len(times), "median_step_s": step, "img_per_s": batch / step,
        "mean_step_s": sum(times) / len(times),
        "min_step_s": min(times), "max_step_s": max(times), "wall_s": time.perf_counter() - started,
        "skipped_steps": module.skipped_steps,
    }
    if accelerator == "cuda":
        row["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        row["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    return row


def release() -> None:
    """Forget compiled graphs and cached blocks between configurations."""
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["base"], choices=["tiny", "base", "large"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[16])
    parser.add_argument("--modes", nargs="+", default=["fp32", "bf16-compile"], choices=sorted(MODES))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=sorted(RECIPES))
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after warm-up)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (compilation happens here)")
    parser.add_argument("--workers", type=int, default=8, help="data-loader workers")
    parser.add_argument("-o", "--output", default="train_step.json")
    args = parser.parse_args(argv)

    report = {"benchmark": "train_step", "provenance": provenance(), "rows": []}
    for preset in args.presets:
        for batch in args.batch_sizes:
            for mode in args.modes:
                for recipe in args.recipes:
                    try:
                        row = measure(preset, batch, mode, recipe, args.steps, args.warmup, args.workers)
                    except Exception as error:  # one failing configuration must not lose the others
                        row = {"preset": preset, "batch": batch, "mode": mode, "recipe": recipe,
                               "error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()[-2000:]}
                    report["rows"].append(row)
                    write_json(args.output, report)
                    print(_summary_line(row), flush=True)
                    release()


def _summary_line(row: dict) -> str:
    head = f"{row['preset']:5s} b{row['batch']:<3d} {row['mode']:24s} {row['recipe']:16s}"
    if "error" in row:
        return f"{head} ERROR {row['error'][:200]}"
    memory = f" peak {row['peak_allocated_gib']:.2f} GiB" if "peak_allocated_gib" in row else ""
    return f"{head} {row['median_step_s'] * 1000:8.1f} ms {row['img_per_s']:7.1f} img/s{memory} (wall {row['wall_s']:.0f} s)"


if __name__ == "__main__":
    main()

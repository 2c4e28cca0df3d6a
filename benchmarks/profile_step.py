"""Where the time of a training step goes: torch.profiler over a few `LitHPCM` steps.

Kernel times are summed by kernel name over `--steps` profiled steps after warm-up, and
written as JSON with the per-step total: with launch overhead removed (CUDA graphs), that total is
what a step cannot go below without changing the kernels themselves.

    python benchmarks/profile_step.py --preset base --batch 16 --mode bf16-cl -o profile.json
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch
from torch.profiler import ProfilerActivity, profile
from train_step import MODES, RECIPES

from _common import provenance, synchronize, write_json
from lit_hpcm.data import ImageDataModule
from lit_hpcm.training.module import LitHPCM


class ProfileWindow(L.Callback):
    """Profiles training batches [start, start + count)."""

    def __init__(self, start: int, count: int):
        self.start, self.count = start, count
        self.profiler = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])

        self.wall_s = float("nan")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.start:
            synchronize(pl_module.device)
            self.profiler.__enter__()
            self._opened = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.start + self.count:
            synchronize(pl_module.device)
            self.wall_s = time.perf_counter() - self._opened
            self.profiler.__exit__(None, None, None)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base", choices=["tiny", "base", "large"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--mode", default="bf16-cl", choices=sorted(MODES))
    parser.add_argument("--recipe", default="adam", choices=sorted(RECIPES))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("-o", "--output", default="profile.json")
    args = parser.parse_args(argv)

    precision, fast_path = MODES[args.mode]
    L.seed_everything(0, verbose=False)
    module = LitHPCM(preset=args.preset, **RECIPES[args.recipe], **fast_path)
    warmup = 3
    window = ProfileWindow(warmup, args.steps)
    data = ImageDataModule(patch_size=256, batch_size=args.batch, num_workers=8,
                           train_length=args.batch * (warmup + args.steps + 1))
    accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=warmup + args.steps + 1,
                        benchmark=True, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[window])
    trainer.fit(module, datamodule=data)
    # Kernel rows only (device-side events): operator rows repeat their kernels' time.
    events = [e for e in window.profiler.key_averages()
              if e.device_type == torch.autograd.DeviceType.CUDA and e.self_device_time_total > 0]
    events.sort(key=lambda e: e.self_device_time_total, reverse=True)
    total_ms = sum(e.self_device_time_total for e in events) / 1000 / args.steps
    rows = [{"op": e.key, "calls_per_step": e.count / args.steps, "ms_per_step": e.self_device_time_total / 1000 / args.steps}
            for e in events[: args.top]]
    launches = sum(e.count for e in events) / args.steps
    # Host side: operators by their own CPU time (what the host spends issuing work, e.g. around graph replays).
    host = [e for e in window.profiler.key_averages() if e.self_cpu_time_total > 0]
    host.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    host_rows = [{"op": e.key, "calls_per_step": e.count / args.steps, "self_cpu_ms_per_step": e.self_cpu_time_total / 1000 / args.steps}
                 for e in host[: args.top]]
    write_json(args.output, {"benchmark": "profile_step", "provenance": provenance(), "preset": args.preset,
                             "batch": args.batch, "mode": args.mode, "recipe": args.recipe,
                             "wall_ms_per_step": window.wall_s * 1000 / args.steps, "gpu_kernel_ms_per_step": total_ms,
                             "kernels_per_step": launches, "top": rows, "host_top": host_rows})
    print(f"wall {window.wall_s * 1000 / args.steps:.1f} ms/step; GPU kernel time {total_ms:.1f} ms/step over {launches:.0f} kernels/step")
    for row in rows[:15]:
        print(f"{row['ms_per_step']:8.2f} ms  {row['calls_per_step']:7.0f}×  {row['op'][:90]}")
    print("host (self CPU time):")
    for row in host_rows[:15]:
        print(f"{row['self_cpu_ms_per_step']:8.2f} ms  {row['calls_per_step']:7.0f}×  {row['op'][:90]}")


if __name__ == "__main__":
    main()

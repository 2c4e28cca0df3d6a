"""Soak test of resuming: the demo config trained while being killed with SIGKILL, against an uninterrupted run.

    python benchmarks/soak.py --steps 2000 --kill-every 200 -o soak.json [-- extra lit-hpcm fit overrides]

Run "killed": ``lit-hpcm fit -c configs/demo.yaml --ckpt_path last`` (the real CLI, a fresh process each
time) is killed with SIGKILL about every --kill-every optimizer steps: at ``k·every + offset`` with a
seeded random offset of up to ±--jitter·every, plus a random delay of up to --delay seconds after that
step, so kills land mid-step, mid-validation or mid-checkpoint-write. It is then restarted with
``--ckpt_path last`` until it completes. Run "straight": the same command, never killed. Both write
``last`` every --checkpoint-every steps (mid-epoch: the demo epoch is 16 steps) with a ModelCheckpoint
that monitors nothing: one that monitors ``val/loss`` skips its step saves after a resume until the
next validation (Lightning does not restore logged metrics), which would only mean fewer resume points.

Compared at the end: every tensor and value of the two final ``last.ckpt`` (weights, optimizer and FAMO
state, loop counters, callback states, RNG; ModelCheckpoint's paths aside) and the final validation
metrics of the CSV logs. ``--steps`` should be a multiple of the epoch length (16) and of
--checkpoint-every, so that both runs end with a validation and a checkpoint at the last step.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch

from _common import checkpoint_differences, provenance, write_json

REPO = Path(__file__).resolve().parents[1]
STEP_MARK = "lit-hpcm-soak step "


class StepBeacon(L.Callback):
    """Prints the optimizer step after every training batch, so the soak driver can time its kills."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        print(f"{STEP_MARK}{trainer.global_step}", flush=True)


def fit_command(run_dir: Path, args: argparse.Namespace) -> list[str]:
    """`lit-hpcm fit` of the demo config writing everything under ``run_dir``, resuming from its last."""
    overrides = {
        "trainer": {
            "max_steps": args.steps, "max_epochs": -1, "default_root_dir": str(run_dir), "enable_progress_bar": False,
            "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                        "init_args": {"save_dir": str(run_dir), "name": "logs"}}],
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"dirpath": str(run_dir / "checkpoints"), "save_top_k": 0, "save_last": True,
                               "every_n_train_steps": args.checkpoint_every}},
                {"class_path": "soak.StepBeacon"},
            ],
        },
    }
    config = run_dir / "soak.yaml"
    config.write_text(json.dumps(overrides))  # JSON is YAML
    return [sys.executable, "-m", "lit_hpcm.cli", "fit", "-c", args.config, "-c", str(config),
            *args.overrides, "--ckpt_path", "last"]


def _last_step(run_dir: Path):
    """global_step of ``run_dir``'s last checkpoint (None when there is none yet)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    return torch.load(last, map_location="cpu", weights_only=True)["global_step"] if last.is_file() else None


def _written_since(run_dir: Path, since: float) -> bool:
    """Whether a checkpoint write of this attempt was cut off (its hidden ``.partial`` file is left)."""
    return any(p.stat().st_mtime >= since for p in (run_dir / "checkpoints").glob(".*.partial"))


def run(run_dir: Path, args: argparse.Namespace, kill_at: list[int], rng: random.Random) -> dict:
    """Fit in ``run_dir`` to the end, killing the process once it passes each step of ``kill_at``."""
    run_dir.mkdir(parents=True, exist_ok=False)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "benchmarks")]))
    pending, kills, resumed, started = list(kill_at), [], [], time.perf_counter()
    for attempt in range(len(kill_at) + 1):
        resumed_from, attempt_started = _last_step(run_dir), time.time()
        resumed.append(resumed_from)
        with open(run_dir / f"attempt{attempt}.log", "w") as log:
            child = subprocess.Popen(fit_command(run_dir, args), cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=log, text=True)
            try:
                killed_after = _watch(child, pending, rng, args.delay)
            finally:
                if child.poll() is None:
                    child.kill()
                child.wait()
        if killed_after is None:
            if child.returncode != 0:
                raise RuntimeError(f"{run_dir.name}: fit exited with {child.returncode}; see attempt{attempt}.log")
            wall = round(time.perf_counter() - started, 1)
            return {"kills": kills, "attempts_resumed_from": resumed, "wall_seconds": wall}
        target = pending.pop(0)
        kills.append({"target_step": target, "last_step_seen": killed_after, "resumed_from": resumed_from,
                      "during_checkpoint_write": _written_since(run_dir, attempt_started)})
        print(f"{run_dir.name}: killed after step {killed_after} (target {target}, this attempt resumed from "
              f"{resumed_from})", flush=True)
    raise RuntimeError(f"{run_dir.name}: still running after {len(kill_at)} kills")


def _watch(child: subprocess.Popen, pending: list[int], rng: random.Random, delay: float):
    """Follow the child's step marks; SIGKILL it (after a random delay) once it reaches ``pending[0]``.
    Returns the last step seen before the kill, or None when the child ended by itself."""
    for line in child.stdout:
        if not line.startswith(STEP_MARK):
            continue
        step = int(line[len(STEP_MARK):])
        if pending and step >= pending[0]:
            time.sleep(rng.uniform(0, delay))
            child.send_signal(signal.SIGKILL)
            return step
    return None


def final_validation(run_dir: Path) -> dict:
    """The val/* metrics of the last validation in the run's CSV logs (the newest version folder that has one)."""
    for metrics in sorted((run_dir / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:]),
                          reverse=True):
        rows = [row for row in csv.DictReader(metrics.open()) if row.get("val/loss")]
        if rows:
            return {k: v for k, v in rows[-1].items() if k.startswith("val/") or k in ("epoch", "step")}
    return {}


def kill_schedule(steps: int, every: int, jitter: float, rng: random.Random) -> list[int]:
    """Kill targets k·every + offset (|offset| ≤ jitter·every) for k = 1, 2, … below ``steps``."""
    spread = int(jitter * every)
    targets = [k * every + rng.randint(-spread, spread) for k in range(1, steps // every + 1)]
    return [t for t in targets if 0 < t < steps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--kill-every", type=int, default=200)
    parser.add_argument("--jitter", type=float, default=0.25, help="random offset of each kill, × kill-every")
    parser.add_argument("--delay", type=float, default=1.0, help="random extra seconds after the target step")
    parser.add_argument("--checkpoint-every", type=int, default=25, help="ModelCheckpoint every_n_train_steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lit_hpcm_soak"))
    parser.add_argument("-o", "--output", default="soak.json")
    parser.add_argument("overrides", nargs="*", help="extra `lit-hpcm fit` arguments (after --)")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    kill_at = kill_schedule(args.steps, args.kill_every, args.jitter, rng)
    report = {"description": "benchmarks/soak.py: demo config, kill -9 and --ckpt_path last vs uninterrupted",
              "provenance": provenance(), "settings": {k: v for k, v in vars(args).items() if k != "workdir"} |
              {"workdir": str(args.workdir), "kill_targets": kill_at}}
    report["killed"] = run(args.workdir / "killed", args, kill_at, rng)
    write_json(args.output, report)
    report["straight"] = run(args.workdir / "straight", args, [], rng)

    finals = [torch.load(args.workdir / name / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
              for name in ("killed", "straight")]
    metrics = {name: final_validation(args.workdir / name) for name in ("killed", "straight")}
    diff = checkpoint_differences(*finals)
    report["comparison"] = {
        "final_steps": [f["global_step"] for f in finals],
        "kills_survived": len(report["killed"]["kills"]),
        "kills_during_checkpoint_write": sum(k["during_checkpoint_write"] for k in report["killed"]["kills"]),
        "checkpoints_equal": not diff,
        "differences": diff[:20],
        "final_validation": metrics,
        "final_validation_equal": bool(metrics["killed"]) and metrics["killed"] == metrics["straight"],
    }
    write_json(args.output, report)
    print(json.dumps(report["comparison"], indent=2))


if __name__ == "__main__":
    main()

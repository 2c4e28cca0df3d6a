"""What every benchmark shares: device synchronisation, medians, the run's provenance, JSON output."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping

import torch

from lit_hpcm.files import write_atomically


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so host clocks measure it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Seconds per call of `fn`, each call bracketed by device synchronisations, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _cpu_name() -> str:
    """The CPU's model name where Linux reports it, else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance() -> dict:
    """Device, software versions and git commit of this run."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    info = {
        "commit": commit or "unknown",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the vector ISA PyTorch's kernels use
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_json(path: str | Path, payload: dict) -> None:
    """Write `payload` as indented JSON (rewritten after every measurement, so a cut-off run keeps its rows)."""
    text = json.dumps(payload, indent=2) + "\n"
    write_atomically(path, lambda handle: handle.write(text.encode()))


def checkpoint_differences(a, b, where: str = "") -> list[str]:
    """Where two checkpoint trees differ, as paths like ``/optimizer_states[0]/state/3/exp_avg`` (tensors
    compared bit for bit). ModelCheckpoint states are skipped: they hold the run's own file paths. The soak
    benchmark and the fault-tolerance tests use it to show that a resumed run ends exactly where an uninterrupted
    one does."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [where]
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if set(a) != set(b):
            return [f"{where} keys {sorted(map(str, set(a) ^ set(b)))}"]
        keys = [k for k in a if not str(k).startswith("ModelCheckpoint")]
        return [d for k in keys for d in checkpoint_differences(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in checkpoint_differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [where]

"""lit-hpcm against the official HPCM code, side by side: same weights, same inputs, alternating runs.

The official code is not part of this repository: give a checkout of github.com/lyq133/LIC-HPCM with ``--official``.
Its entropy coder is a C++ extension; for `compress`/`decompress` build it once in the checkout::

    cd LIC-HPCM/src/entropy_models/entropy_coders/unbounded_rans && python setup.py build
    cp build/lib*/*.so ../../     # next to src/entropy_models/__init__.py

Each implementation runs in its own worker process, set up as its users run it: ours with the CPU allocator
setting that `lit-hpcm` applies at start (`lit_hpcm.training.cpu_allocator`; ``--allocator`` picks another for a comparison),
the official one with the C library's defaults. Every process imports CompressAI's coding core only, as `lit-hpcm`
does (`lit_hpcm.codec.compressai_core`; the official worker imports it too, with lit-hpcm's scale table and weight
importer). The parent asks them in turn, alternating who goes first, so both see the same machine load.
Measured per pair: the training step (train-mode forward, R-D loss, backward) on a batch of crops, the eval
forward, `compress` and `decompress` of one image; medians and the per-pair ratio ours/official (below 1: ours is
faster), the bytes each coder wrote, and the peak RSS of a fresh process that runs three training steps. Weights:
the official model's seeded random initialisation, imported into ours with `lit_hpcm.models.official.load_official`.

    python benchmarks/vs_official.py --official ~/LIC-HPCM -o benchmarks/results/vs_official.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from _common import provenance, time_call, write_json
from lit_hpcm.codec.compressai_core import load_coding_core

load_coding_core()  # as `lit-hpcm` does, in every process of this script (the official code does not use CompressAI)

from lit_hpcm import codec  # noqa: E402  (after the line above)
from lit_hpcm.models import HPCM  # noqa: E402
from lit_hpcm.models.entropy import official_scale_table  # noqa: E402
from lit_hpcm.models.official import load_official  # noqa: E402
from lit_hpcm.training.cpu_allocator import keep_freed_memory  # noqa: E402

LMBDA = 0.0067


def official_model(checkout: Path, seed: int) -> torch.nn.Module:
    """The official HPCM-Base from the checkout, seeded random weights, CDF tables built."""
    sys.path.insert(0, str(checkout))
    try:
        from src.models.HPCM_Base import HPCM
    except ImportError as err:
        raise SystemExit(f"{checkout}: cannot import the official HPCM ({err}); --official is a checkout of "
                         "github.com/lyq133/LIC-HPCM with its entropy coder built (see this script's docstring)")
    torch.manual_seed(seed)
    ones = torch.ones
    if not torch.cuda.is_available():
        # HPCM_Base creates its channel multipliers with device="cuda"; without a GPU they are made on the CPU.
        torch.ones = lambda *size, device=None, **kw: ones(*size, device="cpu" if device == "cuda" else device, **kw)
    try:
        model = HPCM()
    finally:
        torch.ones = ones
    model.update(official_scale_table())
    return model


def rd_loss(x: torch.Tensor, x_hat: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """λ·255²·MSE + bpp for a batch x [B, 3, H, W], `bits` the total over the batch."""
    return LMBDA * 255**2 * torch.nn.functional.mse_loss(x_hat, x) + bits / (x.shape[0] * x.shape[2] * x.shape[3])


def training_step(model, x: torch.Tensor, ours: bool) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(x)
    if ours:
        bits = sum(b.sum() for b in out["bits"].values())
    else:
        bits = sum(-torch.log2(likelihood).sum() for likelihood in out["likelihoods"].values())
    rd_loss(x, out["x_hat"], bits).backward()


def eval_forward(model, x: torch.Tensor) -> None:
    model.eval()
    with torch.no_grad():
        model(x)


ALLOCATORS = ("cli", "default", "thp")


def _worker_command(which: str, role: str, args) -> tuple[list[str], dict]:
    """The command line and environment of a worker process (`role`: "timing" or "rss")."""
    command = [sys.executable, __file__, "--official", str(args.official), "--worker", which, "--role", role,
               "--batch", str(args.batch), "--crop", str(args.crop), "--threads", str(args.threads),
               "--eval-size", *map(str, args.eval_size), "--allocator", args.allocator]
    env = dict(os.environ)
    if which == "ours" and args.allocator == "thp":
        env["THP_MEM_ALLOC_ENABLE"] = "1"  # PyTorch's 2 MiB-page allocation, read at the process's first allocation
    return command, env


def peak_rss_mib(which: str, args) -> float:
    """Peak resident memory (MiB) of a fresh process that builds `which` and runs three training steps."""
    command, env = _worker_command(which, "rss", args)
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"the {which} RSS probe failed:\n{done.stderr}")
    return float(done.stdout.strip().splitlines()[-1])


def _build(which: str, args):
    """The measured model: the official one, or ours with the official one's weights."""
    official = official_model(args.official, seed=0)
    return official if which == "official" else load_official(official.state_dict(), "base")


def _cases(which: str, model, args) -> tuple[dict, int | None]:
    """name -> a function that runs it once, and the bytes this implementation's coder writes for the image."""
    ours = which == "ours"
    crops = torch.rand(args.batch, 3, args.crop, args.crop, generator=torch.Generator().manual_seed(1))
    image = torch.rand(1, 3, *args.eval_size, generator=torch.Generator().manual_seed(2))
    cases = {
        "training_step": lambda: training_step(model, crops, ours),
        "eval_forward": lambda: eval_forward(model, image),
    }
    if args.skip_codec:
        return cases, None
    model.eval()
    with torch.no_grad():
        if ours:
            data = codec.encode(model, image[0])
            coded = codec.coded_bytes(data)
            cases["compress"] = torch.no_grad()(lambda: codec.encode(model, image[0]))
            cases["decompress"] = torch.no_grad()(lambda: codec.decode_tensor(data, model))
        else:
            packed = model.compress(image)
            coded = sum(len(s) for s in packed["strings"])  # [y_string, z_string]
            cases["compress"] = torch.no_grad()(lambda: model.compress(image))
            cases["decompress"] = torch.no_grad()(lambda: model.decompress(packed["strings"], packed["shape"]))
    return cases, coded


def worker(args) -> None:
    """A worker process. "rss": three training steps, then print the peak RSS in MiB. "timing": print the coded
    bytes, then for each case name read on stdin run it once and print its seconds."""
    if args.worker == "ours" and args.allocator == "cli":
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    ours = args.worker == "ours"
    if args.role == "rss":
        # only the measured model is built (its weights do not change the memory)
        model = HPCM("base") if ours else official_model(args.official, seed=0)
        x = torch.rand(args.batch, 3, args.crop, args.crop, generator=torch.Generator().manual_seed(1))
        for _ in range(3):
            training_step(model, x, ours)
        # VmHWM, not getrusage's ru_maxrss: Linux keeps the parent's ru_maxrss across fork and exec.
        peak_kib = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        print(int(peak_kib) / 1024)
        return
    model = _build(args.worker, args)
    cases, coded = _cases(args.worker, model, args)
    print(json.dumps({"cases": list(cases), "bytes": coded}), flush=True)
    for line in sys.stdin:
        print(time_call(cases[line.strip()], torch.device("cpu"), repeats=1, warmup=0)[0], flush=True)


class Worker:
    """The parent's handle on a timing worker."""

    def __init__(self, which: str, args):
        command, env = _worker_command(which, "timing", args)
        self.which = which
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.hello = json.loads(self._reply())

    def _reply(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.which} worker stopped (exit status {self.process.wait()}); its error is above")
        return line

    def time(self, case: str) -> float:
        self.process.stdin.write(case + "\n")
        self.process.stdin.flush()
        return float(self._reply())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, help="checkout of github.com/lyq133/LIC-HPCM")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--crop", type=int, default=256, help="training crop side")
    parser.add_argument("--eval-size", type=int, nargs=2, default=(512, 768), metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=5, help="pairs per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--allocator", choices=ALLOCATORS, default="cli",
                        help="ours: cli = as lit-hpcm runs (keep freed memory), default = the C library's, "
                             "thp = PyTorch's THP_MEM_ALLOC_ENABLE=1; the official code always runs with defaults")
    parser.add_argument("--skip-codec", action="store_true", help="no compress/decompress (coder not built)")
    parser.add_argument("--worker", choices=["ours", "official"], help=argparse.SUPPRESS)
    parser.add_argument("--role", choices=["timing", "rss"], help=argparse.SUPPRESS)
    parser.add_argument("-o", "--output", default="vs_official.json")
    args = parser.parse_args()
    if args.official is None:
        parser.error("give --official PATH, a checkout of github.com/lyq133/LIC-HPCM (this repository does not "
                     "include the official code; see the docstring for building its entropy coder)")
    if args.worker:
        return worker(args)
    workers = {who: Worker(who, args) for who in ("ours", "official")}
    payload = {"benchmark": "vs_official", "provenance": provenance(),
               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "bytes": {who: w.hello["bytes"] for who, w in workers.items()}, "results": {}}
    for name in workers["ours"].hello["cases"]:
        for w in workers.values():
            w.time(name)  # warm-up
        times = {"ours": [], "official": []}
        for r in range(args.repeats):
            order = ["ours", "official"] if r % 2 == 0 else ["official", "ours"]
            for who in order:
                times[who].append(workers[who].time(name))
        ratios = [a / b for a, b in zip(times["ours"], times["official"])]
        payload["results"][name] = {"ours_s": statistics.median(times["ours"]),
                                    "official_s": statistics.median(times["official"]),
                                    "ratio_median": statistics.median(ratios), "ratios": ratios, "times": times}
        write_json(args.output, payload)
        print(f"{name:14s} ours {payload['results'][name]['ours_s']:.3f} s  official "
              f"{payload['results'][name]['official_s']:.3f} s  ratio {statistics.median(ratios):.2f}", flush=True)
    for w in workers.values():
        w.close()
    payload["peak_rss_mib"] = {who: peak_rss_mib(who, args) for who in ("ours", "official")}
    write_json(args.output, payload)
    print(f"bytes {payload['bytes']}; peak RSS of three training steps (MiB) {payload['peak_rss_mib']}")


if __name__ == "__main__":
    main()

"""lit-hpcm against the official HPCM code, side by side: same weights, same inputs, alternating runs in one process.

The official code is not part of this repository: give a checkout of github.com/lyq133/LIC-HPCM with ``--official``.
Its entropy coder is a C++ extension; for `compress`/`decompress` build it once in the checkout::

    cd LIC-HPCM/src/entropy_models/entropy_coders/unbounded_rans && python setup.py build
    cp build/lib*/*.so ../../     # next to src/entropy_models/__init__.py

Measured per pair (ours, official; the order alternates): the training step (train-mode forward, R-D loss,
backward) on a batch of crops, the eval forward, `compress` and `decompress` of one image; medians and the per-pair
ratio ours/official (below 1: ours is faster), the bytes each coder wrote, and the peak RSS of a process that runs
three training steps (each implementation in a fresh process). Weights: the official model's seeded random
initialisation, imported into ours with `lit_hpcm.official.load_official`.

    python benchmarks/vs_official.py --official ~/LIC-HPCM -o benchmarks/results/vs_official.json
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from _common import provenance, time_call, write_json

from lit_hpcm import codec
from lit_hpcm.models.entropy import official_scale_table
from lit_hpcm.official import load_official

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


def peak_rss_mib(which: str, args) -> float:
    """Peak resident memory (MiB) of a fresh process that builds `which` and runs three training steps."""
    command = [sys.executable, __file__, "--official", str(args.official), "--rss-probe", which,
               "--batch", str(args.batch), "--crop", str(args.crop), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def rss_probe(args) -> None:
    """Build only the measured model (its weights do not change the memory) and run three training steps."""
    from lit_hpcm.models import HPCM

    x = torch.rand(args.batch, 3, args.crop, args.crop, generator=torch.Generator().manual_seed(1))
    model = HPCM("base") if args.rss_probe == "ours" else official_model(args.official, seed=0)
    for _ in range(3):
        training_step(model, x, args.rss_probe == "ours")
    # VmHWM, not getrusage's ru_maxrss: Linux keeps the parent's ru_maxrss across fork and exec.
    peak_kib = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(int(peak_kib) / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, help="checkout of github.com/lyq133/LIC-HPCM")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--crop", type=int, default=256, help="training crop side")
    parser.add_argument("--eval-size", type=int, nargs=2, default=(512, 768), metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=3, help="pairs per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-codec", action="store_true", help="no compress/decompress (coder not built)")
    parser.add_argument("--rss-probe", choices=["ours", "official"], help=argparse.SUPPRESS)
    parser.add_argument("-o", "--output", default="vs_official.json")
    args = parser.parse_args()
    if args.official is None:
        parser.error("give --official PATH, a checkout of github.com/lyq133/LIC-HPCM (this repository does not "
                     "include the official code; see the docstring for building its entropy coder)")
    torch.set_num_threads(args.threads)
    if args.rss_probe:
        return rss_probe(args)
    official = official_model(args.official, seed=0)
    ours = load_official(official.state_dict(), "base")

    crops = torch.rand(args.batch, 3, args.crop, args.crop, generator=torch.Generator().manual_seed(1))
    image = torch.rand(1, 3, *args.eval_size, generator=torch.Generator().manual_seed(2))
    cases = {
        "training_step": (lambda: training_step(ours, crops, True), lambda: training_step(official, crops, False)),
        "eval_forward": (lambda: eval_forward(ours, image), lambda: eval_forward(official, image)),
    }
    bytes_written = {}
    if not args.skip_codec:
        ours.eval(), official.eval()
        with torch.no_grad():
            data = codec.encode(ours, image[0])
            packed = official.compress(image)
        bytes_written = {"ours": codec.coded_bytes(data),
                         "official": sum(len(s) for s in packed["strings"])}  # [y_string, z_string]

        def ours_compress():
            with torch.no_grad():
                codec.encode(ours, image[0])

        def official_compress():
            with torch.no_grad():
                official.compress(image)

        def ours_decompress():
            with torch.no_grad():
                codec.decode_tensor(data, ours)

        def official_decompress():
            with torch.no_grad():
                official.decompress(packed["strings"], packed["shape"])

        cases["compress"] = (ours_compress, official_compress)
        cases["decompress"] = (ours_decompress, official_decompress)

    payload = {"benchmark": "vs_official", "provenance": provenance(),
               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "bytes": bytes_written, "results": {}}
    for name, (ours_fn, official_fn) in cases.items():
        ours_fn(), official_fn()  # warm-up
        times = {"ours": [], "official": []}
        for r in range(args.repeats):
            order = [("ours", ours_fn), ("official", official_fn)]
            for who, fn in order if r % 2 == 0 else order[::-1]:
                times[who].append(time_call(fn, torch.device("cpu"), repeats=1, warmup=0)[0])
        ratios = [a / b for a, b in zip(times["ours"], times["official"])]
        payload["results"][name] = {"ours_s": statistics.median(times["ours"]),
                                    "official_s": statistics.median(times["official"]),
                                    "ratio_median": statistics.median(ratios), "ratios": ratios, "times": times}
        write_json(args.output, payload)
        print(f"{name:14s} ours {payload['results'][name]['ours_s']:.3f} s  official "
              f"{payload['results'][name]['official_s']:.3f} s  ratio {statistics.median(ratios):.2f}", flush=True)
    payload["peak_rss_mib"] = {who: peak_rss_mib(who, args) for who in ("ours", "official")}
    write_json(args.output, payload)
    print(f"bytes {bytes_written}; peak RSS of three training steps (MiB) {payload['peak_rss_mib']}")


if __name__ == "__main__":
    main()

"""Codec speed on a 768×512 photo: eval forward, compress and decompress through the file format.

The photo is scikit-image's `coffee` (600×400) resized to 768×512 (same 3:2 aspect). For each device
it reports the median latency of the eval-mode forward (fp32, and bf16 autocast and CUDA-graph variants
on the GPU), of `lit_hpcm.codec.encode` (compress + header) and of `decode`, and the coded size against
the size the likelihoods estimate. Weights are a seeded random initialisation unless --weights is given.

    python benchmarks/codec.py --preset base --devices cuda cpu -o codec.json
"""

from __future__ import annotations

import argparse
import traceback
from typing import Callable

import torch
from PIL import Image
from skimage import data as samples

from _common import median, provenance, time_call, write_json
from lit_hpcm import codec
from lit_hpcm.data.images import image_to_tensor
from lit_hpcm.models import HPCM
from lit_hpcm.models.weights import load_model
from lit_hpcm.training.cuda_graphs import capture_inference

WIDTH, HEIGHT = 768, 512


def test_photo() -> torch.Tensor:
    """[3, 512, 768] in [0, 1]."""
    image = Image.fromarray(samples.coffee()).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
    return image_to_tensor(image)


def build_model(preset: str, weights: str | None, device: torch.device) -> HPCM:
    if weights:
        return load_model(weights, preset=preset, device=device)
    torch.manual_seed(0)
    model = HPCM(preset).eval().to(device)
    model.update()
    return model


def forward_variants(model: HPCM, x: torch.Tensor) -> dict[str, Callable]:
    """Name -> eval forward of x [1, 3, H, W] to time: fp32 eager always; on the GPU also bf16 and CUDA graphs."""
    variants = {"fp32": model}
    if x.is_cuda:
        bf16 = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
        with bf16():
            variants["bf16"] = _under(bf16, model)
            variants["bf16-graphs"] = capture_inference(model, x)
        variants["fp32-graphs"] = capture_inference(model, x)
    return variants


def _under(context, fn):
    def run(x):
        with context():
            return fn(x)

    return run


def estimated_bytes(model: HPCM, x: torch.Tensor) -> float:
    """Size the eval-mode likelihoods predict for the y and z streams, in bytes."""
    with torch.no_grad():
        bits = model(x)["bits"]
    return float(sum(b.sum() for b in bits.values())) / 8


def measure_device(preset: str, weights: str | None, device: torch.device, repeats: int) -> dict:
    model = build_model(preset, weights, device)
    x = test_photo().to(device)
    batch = x.unsqueeze(0)
    row = {"device": str(device), "preset": preset, "image": f"coffee resized to {WIDTH}x{HEIGHT}", "forward_ms": {}}
    try:
        with torch.no_grad():
            variants = forward_variants(model, batch)
    except Exception as error:  # keep the eager figure if a capture fails
        variants = {"fp32": model}
        row["capture_error"] = f"{type(error).__name__}: {error}"[:300]
    for name, forward in variants.items():
        with torch.no_grad():
            try:
                times = time_call(lambda: forward(batch), device, repeats, warmup=3)
                row["forward_ms"][name] = median(times) * 1000
            except Exception as error:  # a variant that cannot compile must not lose the others
                row["forward_ms"][name] = f"{type(error).__name__}: {error}"[:300]
    files = []
    encode_times = time_call(lambda: files.append(codec.encode(model, x)), device, repeats, warmup=1)
    data = files[-1]
    decoded = []
    decode_times = time_call(lambda: decoded.append(codec.decode_tensor(data, model)[0]), device, repeats, warmup=1)
    row |= {
        "encode_ms": median(encode_times) * 1000,
        "decode_ms": median(decode_times) * 1000,
        "file_bytes": len(data),
        "estimated_bytes": estimated_bytes(model, batch),
        "deterministic_files": all(f == data for f in files),
        "bpp": 8 * len(data) / (WIDTH * HEIGHT),
    }
    row["coded_over_estimated"] = row["file_bytes"] / row["estimated_bytes"]
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base", choices=["tiny", "base", "large"])
    parser.add_argument("--weights", help="a lit-hpcm or official checkpoint (default: seeded random weights)")
    parser.add_argument("--devices", nargs="+", default=["cuda", "cpu"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("-o", "--output", default="codec.json")
    args = parser.parse_args(argv)

    torch.backends.cuda.matmul.allow_tf32 = True  # the official setting, as in training
    report = {"benchmark": "codec", "provenance": provenance(), "rows": []}
    for name in args.devices:
        device = torch.device(name)
        try:
            row = measure_device(args.preset, args.weights, device, args.repeats)
        except Exception as error:
            row = {"device": name, "error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()[-2000:]}
        report["rows"].append(row)
        write_json(args.output, report)
        print(row if "error" in row else {k: v for k, v in row.items() if k != "image"}, flush=True)


if __name__ == "__main__":
    main()

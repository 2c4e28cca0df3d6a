"""Files encoded on one device kind and decoded on the other: exact, or refused — never a wrong image.

For each sample photo: encode on the GPU and on the CPU; decode each file on its own device (must equal
that device's eval-mode reconstruction bit for bit), then on the other device twice: through
`lit_hpcm.codec.decode` (expected: a clear ValueError) and through the bare `model.decompress`, which
shows what the guard prevents (fraction of pixels that differ, PSNR of the wrong decode against the right one).

    python benchmarks/cross_device.py --preset base -o cross_device.json
"""

from __future__ import annotations

import argparse
import copy

import torch
from PIL import Image
from skimage import data as samples

from _common import provenance, write_json
from lit_hpcm import codec
from lit_hpcm.data.images import image_to_tensor
from lit_hpcm.models import HPCM

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def photo(name: str) -> torch.Tensor:
    """[3, H, W] in [0, 1]."""
    return image_to_tensor(Image.fromarray(getattr(samples, name)()))


def models(preset: str) -> dict[str, HPCM]:
    """The same seeded weights on the CPU and the GPU, tables built."""
    torch.manual_seed(0)
    cpu = HPCM(preset).eval()
    cpu.update()
    gpu = copy.deepcopy(cpu).cuda()
    gpu.update()
    return {"cpu": cpu, "cuda": gpu}


def own_device_exact(model: HPCM, x: torch.Tensor, data: bytes) -> bool:
    """The file decodes, on its device, to the eval-mode reconstruction rounded to 8 bits."""
    decoded, _ = codec.decode_tensor(data, model)
    with torch.no_grad():
        reference = model(x.unsqueeze(0).to(next(model.parameters()).device))["x_hat"][0].clamp(0, 1)
    return torch.equal(to_8bit(decoded), to_8bit(reference))


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """[3, H, W] in [0, 1] -> uint8, rounded as a saved PNG is."""
    return (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)


def cross(models_: dict[str, HPCM], source: str, target: str, x: torch.Tensor, data: bytes) -> dict:
    """Decode a `source` file on `target`: through the codec (guarded) and bare (unguarded)."""
    row = {"encoded_on": source, "decoded_on": target}
    try:
        codec.decode_tensor(data, models_[target])
        row["codec_decode"] = "accepted"
    except ValueError as error:
        row["codec_decode"] = f"refused: {error}"
    right, _ = codec.decode_tensor(data, models_[source])
    try:
        bare = bare_decode(models_[target], data)
    except Exception as error:  # a garbled stream may also fail loudly inside the entropy decoder
        row["bare_decode"] = f"{type(error).__name__}: {error}"[:300]
        return row
    return row | compared(to_8bit(bare), to_8bit(right))


def compared(bare: torch.Tensor, right: torch.Tensor) -> dict:
    """A bare decode against the right one, both 8-bit [3, H, W]: the fraction of pixel values that differ and the
    PSNR between them (None when equal)."""
    mse = torch.mean((bare.float() - right.float()) ** 2).item()
    return {
        "bare_decode_pixels_differ": (bare != right).float().mean().item(),
        "bare_decode_psnr_vs_right_db": None if mse == 0 else 10 * torch.log10(torch.tensor(255.0**2 / mse)).item(),
    }


def bare_decode(model: HPCM, data: bytes) -> torch.Tensor:
    """Decode without the codec's guards: what a format without them would hand back. [3, H, W]"""
    header, z_string, y_string = codec.read_header(data)
    return model.decompress([[y_string], [z_string]], (header.height, header.width))["x_hat"][0]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base", choices=["tiny", "base", "large"])
    parser.add_argument("-o", "--output", default="cross_device.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("cross_device.py needs a CUDA GPU")
    pair = models(args.preset)
    report = {"benchmark": "cross_device", "provenance": provenance(), "rows": []}
    for name in PHOTOS:
        x = photo(name)
        files = {device: codec.encode(model, x) for device, model in pair.items()}
        row = {"photo": name, "size": list(x.shape[-2:])}
        row |= {f"exact_on_{d}": own_device_exact(pair[d], x, files[d]) for d in pair}
        row["files_identical_across_devices"] = files["cpu"] == files["cuda"]
        row["cross"] = [cross(pair, "cuda", "cpu", x, files["cuda"]), cross(pair, "cpu", "cuda", x, files["cpu"])]
        report["rows"].append(row)
        write_json(args.output, report)
        print(row, flush=True)


if __name__ == "__main__":
    main()

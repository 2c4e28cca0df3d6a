"""Real-bitstream measurement of one image: file bytes, 8-bit quality, timings.

Shared by `LitHPCM.test_step` and `lit-hpcm eval`, so both report the same numbers: `bpp` counts the
entropy-coded strings (the convention of CompressAI's eval_model and the official HPCM test, which BD-rate
against the reference curves needs), `bpp-file` the whole file written by `lit_hpcm.codec` (header,
lengths and CRC included); PSNR and MS-SSIM compare the 8-bit images a user would actually store
(original and reconstruction rounded to integers in [0, 255]).
"""

from __future__ import annotations

import math
import time
from typing import Any, Iterable, Sequence

import torch
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as ms_ssim

from .. import codec
from ..data.images import quantize_to_8bit
from ..models import HPCM
from .keys import MEASURES

# MS-SSIM's five scales with an 11-pixel window: torchmetrics needs side // 16 > 10, i.e. 176 pixels per side.
MS_SSIM_MIN_SIDE = 176

# The dtype MS-SSIM is computed in: float32 agrees with float64 far within what a report shows on 8-bit photos
# (tests/test_evaluation.py) and is much faster on the CPU, where float64 convolutions have no optimised kernel
# (see docs/PERFORMANCE.md).
MS_SSIM_DTYPE = torch.float32


def psnr_db(mse: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """PSNR in dB of mean squared errors (any shape) of images whose values peak at `peak` (1 for [0, 1] tensors,
    255 for 8-bit images); an MSE of 0 gives inf. The one PSNR formula of lit-hpcm: training logs and `test`."""
    return 10 * torch.log10(peak**2 / mse)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ms_ssim_8bit(original: torch.Tensor, recon: torch.Tensor, dtype: torch.dtype = MS_SSIM_DTYPE) -> float:
    """MS-SSIM of two 8-bit images [3, H, W] (uint8 or integer-valued floats in [0, 255]), computed in `dtype`.

    Both sides need at least `MS_SSIM_MIN_SIDE` pixels; the default dtype is the one `test` and `eval` report.
    Autocast is off: under a trainer's bf16 precision its convolutions would run in bf16 (a result far from the
    float32 one), so the reported quality would depend on a training setting.
    """
    with torch.autocast(original.device.type, enabled=False):
        return float(ms_ssim(recon[None].to(dtype) / 255, original[None].to(dtype) / 255, data_range=1.0))


def measure_image(model: HPCM, x: torch.Tensor, name: str) -> dict[str, Any]:
    """One row for image x [3, H, W] in [0, 1] (on the model's device); `model.update()` must be done."""
    device = next(model.parameters()).device
    _synchronize(device)
    start = time.perf_counter()
    data = codec.encode(model, x)
    _synchronize(device)
    encoded = time.perf_counter()
    x_hat, _ = codec.decode_tensor(data, model)
    _synchronize(device)
    decoded = time.perf_counter()
    original = quantize_to_8bit(x).double()
    recon = quantize_to_8bit(x_hat).double()
    mse = float((original - recon).pow(2).mean())
    height, width = x.shape[-2:]
    row = {
        "name": name,
        "height": int(height),
        "width": int(width),
        "bytes": len(data),
        # the literature's rate: the entropy-coded strings alone (BD-rate, RD plots, reference curves)
        "bpp": 8.0 * codec.coded_bytes(data) / (height * width),
        # the whole file, header and CRC included
        "bpp-file": 8.0 * len(data) / (height * width),
        "psnr-rgb": float(psnr_db(torch.tensor(mse, dtype=torch.float64), peak=255.0)),
        "ms-ssim-rgb": None,
        "ms-ssim-db-rgb": None,
        "encoding_time": encoded - start,
        "decoding_time": decoded - encoded,
    }
    if min(height, width) >= MS_SSIM_MIN_SIDE:
        value = ms_ssim_8bit(original, recon)
        row["ms-ssim-rgb"] = value
        row["ms-ssim-db-rgb"] = -10 * math.log10(max(1 - value, 1e-12))
    return row


def measure_images(model: HPCM, images: Iterable[tuple[torch.Tensor, str]]) -> list[dict[str, Any]]:
    """The evaluation routine `test` and `eval` share: one `measure_image` row per (image [3, H, W], name)."""
    return [measure_image(model, x, name) for x, name in images]


def summarize(rows: Sequence[dict[str, Any]], name: str, description: str = "", meta: dict | None = None) -> dict:
    """Rows of one model -> one RD point in CompressAI's results layout, rows kept under `per_image`.

    Metrics are means over images (as CompressAI's eval_model reports them); MS-SSIM means are over
    the images large enough for it and are omitted when there are none.
    """
    if not rows:
        raise ValueError("no images were measured")
    results: dict[str, list[float]] = {}
    for key in MEASURES:
        values = [r[key] for r in rows if r[key] is not None]
        if values:
            results[key] = [sum(values) / len(values)]
    return {"name": name, "description": description, "meta": meta or {}, "results": results, "per_image": list(rows)}

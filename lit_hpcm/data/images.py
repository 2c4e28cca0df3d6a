"""Image files <-> tensors: the one place that knows about PIL modes, bit depths and file errors.

Shared by the data module (training crops, evaluation images) and the image codec (files in, files out).
The codec works on RGB in [0, 1]; every reader here ends there and every writer starts there::

    file --open_image--> PIL.Image (any mode) --image_to_tensor--> Tensor[3, H, W] float32 in [0, 1]
    Tensor[3, H, W] --tensor_to_image--> PIL.Image "RGB" | "L" --save_image--> file (atomic)

What the conversion keeps and drops:

- Alpha is dropped, not composited: the codec codes colour only, so an RGBA photo is coded as its RGB planes.
- Grayscale is replicated to three channels; palette images are expanded through their palette.
- 16-bit data (PIL modes ``I;16*``, and mode ``I`` with values in [0, 65535], which is how PIL returns 16-bit
  PGM/PPM) is divided by 65535; other ``I`` data by the full int32 range. Float data (mode ``F``) is clipped
  to [0, 1]. Pillow itself decodes 48-bit RGB PNGs to 8-bit RGB, so those arrive with 8 bits.
- No colour management: ICC profiles are ignored and CMYK/YCbCr/LAB/HSV use PIL's plain conversions;
  EXIF orientation is not applied (pixels are coded as stored).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image

from ..files import write_atomically

__all__ = [
    "IMAGE_SUFFIXES",
    "describe_image",
    "find_images",
    "image_to_tensor",
    "open_image",
    "quantize_to_8bit",
    "save_image",
    "tensor_to_image",
]

PathLike = Union[str, os.PathLike]

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".pnm", ".ppm", ".tif", ".tiff", ".webp")
"""File suffixes (lower case) that :func:`find_images` treats as images; matching ignores case."""

_UINT16_MAX = 65535.0
_INT32_MIN = float(np.iinfo(np.int32).min)
_INT32_SPAN = float(np.iinfo(np.uint32).max)


def open_image(path: PathLike) -> Image.Image:
    """Open and fully decode one image file.

    Decoding happens here (``load()``), so a truncated or corrupt file fails now with a one-line
    ``ValueError("<path>: <what is wrong>")`` rather than later, deep inside a data loader worker.
    Truncated files are rejected (``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone).
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, not an image file")
    try:
        with Image.open(path) as img:
            img.load()
    # PIL reports bad files through many unrelated types (UnidentifiedImageError, OSError "image file is
    # truncated", SyntaxError, DecompressionBombError, struct.error, zlib.error, ...): all mean "unreadable".
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{path}: cannot read image ({type(err).__name__}: {err})") from None
    return img


def _integer_bits(img: Image.Image) -> int:
    """Bits per sample of an integer image of mode ``I``: 16 when its values fit [0, 65535], else 32."""
    low, high = img.getextrema()
    return 16 if 0 <= low and high <= _UINT16_MAX else 32


def describe_image(img: Image.Image) -> dict:
    """What an image was before conversion: ``{"mode": str, "bits": int, "size": (width, height)}``.

    ``bits`` is per sample: 1 for mode ``1``, 16 for ``I;16*``, 16 or 32 for ``I`` (see module notes),
    32 for ``F``, 8 otherwise.
    """
    if img.mode == "1":
        bits = 1
    elif img.mode.startswith("I;16"):
        bits = 16
    elif img.mode == "I":
        bits = _integer_bits(img)
    elif img.mode == "F":
        bits = 32
    else:
        bits = 8
    return {"mode": img.mode, "bits": bits, "size": img.size}


def _single_band_to_unit(img: Image.Image) -> np.ndarray:
    """High-bit-depth single-band image (``I;16*``, ``I``, ``F``) -> float32 array [H, W] in [0, 1]."""
    if img.mode == "F":
        return np.clip(np.nan_to_num(np.asarray(img, dtype=np.float32)), 0.0, 1.0)
    values = np.asarray(img, dtype=np.float64)
    if img.mode == "I" and _integer_bits(img) == 32:
        values = (values - _INT32_MIN) / _INT32_SPAN
    else:
        values = values / _UINT16_MAX
    return values.astype(np.float32)


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """Any PIL image -> ``Tensor[3, H, W]`` float32 in [0, 1] (RGB; see the module notes for each mode)."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        gray = torch.from_numpy(_single_band_to_unit(img))
        return gray.unsqueeze(0).expand(3, -1, -1).contiguous()
    try:
        rgb = img if img.mode == "RGB" else img.convert("RGB")
    except ValueError as err:
        raise ValueError(f"image mode {img.mode!r} cannot be converted to RGB ({err})") from None
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)


def quantize_to_8bit(x: torch.Tensor) -> torch.Tensor:
    """``Tensor[..., H, W]`` in [0, 1] -> uint8 of the same shape: clamp, scale by 255, round half to even.

    This is what a reconstruction becomes when written to an 8-bit file; metrics on "the decoded image"
    should be computed on these values.
    """
    return x.detach().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


def tensor_to_image(x: torch.Tensor, mode: str = "RGB") -> Image.Image:
    """``Tensor[3, H, W]`` or ``[1, 3, H, W]`` in [0, 1] -> 8-bit PIL image of ``mode`` "RGB" or "L".

    Values are clamped and rounded half to even (:func:`quantize_to_8bit`). Mode "L" (for grayscale
    originals) is PIL's ITU-R 601-2 luma conversion of the RGB image.
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a tensor of shape [3, H, W] or [1, 3, H, W], got {list(x.shape)}")
    pixels = quantize_to_8bit(x).permute(1, 2, 0).cpu().numpy()
    rgb = Image.fromarray(np.ascontiguousarray(pixels))
    return rgb if mode == "RGB" else rgb.convert("L")


def _format_for(path: Path) -> str:
    """PIL format name for the file suffix of ``path``; PNG when there is no suffix."""
    if not path.suffix:
        return "PNG"
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"{path}: PIL cannot write files with suffix {path.suffix!r}")
    return fmt


def save_image(image: Union[Image.Image, torch.Tensor], path: PathLike) -> Path:
    """Write an image (PIL, or a tensor as accepted by :func:`tensor_to_image`) to ``path``.

    The format follows the suffix (PNG without one). Written with `lit_hpcm.files.write_atomically`, so readers
    never see a half-written image; missing parent folders are created. Any failure is a ``ValueError`` naming
    ``path``. Returns ``path``.
    """
    path = Path(path)
    fmt = _format_for(path)
    img = tensor_to_image(image) if isinstance(image, torch.Tensor) else image
    try:
        write_atomically(path, lambda handle: img.save(handle, format=fmt))
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: cannot write image ({type(err).__name__}: {err})") from None
    return path


def find_images(folder: PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (suffix in :data:`IMAGE_SUFFIXES`, any case), sorted by path.

    Sorting makes the list, and so every index-based choice made from it, identical on every machine.
    A missing folder or one without images is a ``ValueError`` naming it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: folder does not exist" if not folder.exists() else f"{folder}: not a folder")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    images = sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise ValueError(f"{folder}: no image files (accepted suffixes: {' '.join(IMAGE_SUFFIXES)})")
    return images

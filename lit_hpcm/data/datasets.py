"""Training crops and evaluation images as torch datasets (no Lightning): the sources, the seeded crops and the
handling of unreadable files that `lit_hpcm.data.ImageDataModule` serves to the trainer.

Batches::

    train            Tensor[B, 3, P, P]                         P = patch_size, random crop + flips
    val/test/predict {"image": Tensor[B, 3, H, W], "name": [str] * B}   whole images, B = val_batch_size

Reproducible crops: training item ``i`` of epoch ``e`` is cut with a ``torch.Generator`` seeded from
``(seed, e, i)`` and uses image ``i mod N``. The training loader and its sampler, which carry the epoch to
the workers and the loader's position into checkpoints, are in :mod:`lit_hpcm.data.loader`.

Unreadable files: training skips them lazily (checking 100k files up front is slow): a bad file is
replaced by the next readable image in sorted order, deterministically, and recorded in a mask shared
with the loader workers (`TrainCrops.skipped`). Evaluation images are all decoded once when the split is set up
and bad ones dropped with a warning then (`readable_eval_images`), because substituting another image would
distort per-image reports and averages.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import ConfigError
from .images import find_images, image_to_tensor, open_image

__all__ = [
    "BUNDLED_EVAL_PHOTOS",
    "BUNDLED_TRAIN_PHOTOS",
    "EvalImages",
    "ReadableImages",
    "TrainCrops",
    "bundled_photos",
    "collate_eval",
    "folder_images",
    "pad_to_size",
    "random_crop",
    "readable_eval_images",
    "skipped_message",
]

BUNDLED_TRAIN_PHOTOS = (
    "astronaut.png",
    "coffee.png",
    "hubble_deep_field.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
)
"""Training split of scikit-image's bundled photos (the stereo pair stays together, on this side)."""

BUNDLED_EVAL_PHOTOS = ("chelsea.png", "rocket.jpg")
"""Validation/test split of scikit-image's bundled photos: two small natural photos (451x300, 640x427),
so validation on CPU stays quick."""

_SHOWN_NAMES = 5  # how many file names a skipped-files warning lists


def bundled_photos(names: tuple[str, ...]) -> list[Path]:
    """Paths of the given photos in the installed scikit-image's data folder (shipped in its wheel)."""
    try:
        import skimage.data
    except ImportError:
        raise ConfigError(
            "no image folders given and scikit-image is not installed: pass train_dir/val_dir/test_dir "
            "or install scikit-image for the bundled sample photos"
        ) from None
    paths = [Path(skimage.data.data_dir) / name for name in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(f"bundled sample photos missing from this scikit-image install: {', '.join(missing)}")
    return paths


def pad_to_size(x: torch.Tensor, size: int) -> torch.Tensor:
    """Pad ``Tensor[C, H, W]`` to at least ``[C, size, size]`` by mirror reflection, centred.

    Padding wider than the image keeps reflecting (numpy's "reflect"), and a 1-pixel dimension, which
    has nothing to reflect, is replicated. Dimensions already >= ``size`` are untouched.
    """
    pad_h, pad_w = max(size - x.shape[1], 0), max(size - x.shape[2], 0)
    if pad_h == 0 and pad_w == 0:
        return x
    widths = ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
    return torch.from_numpy(np.pad(x.numpy(), widths, mode="reflect"))


def random_crop(img: Image.Image, size: int, generator: torch.Generator, flips: bool = True) -> torch.Tensor:
    """A random ``size`` x ``size`` crop, with random horizontal/vertical flips if ``flips`` (the official HPCM
    recipe flips; the Balanced R-D authors' does not) -> ``Tensor[3, size, size]``.

    Draws from ``generator`` in a fixed order (top, left, then the flips if any). Cropping happens on the PIL image
    before conversion, so large photos are not converted whole; smaller images are padded (:func:`pad_to_size`).
    """
    width, height = img.size
    top = int(torch.randint(0, max(height - size, 0) + 1, (1,), generator=generator))
    left = int(torch.randint(0, max(width - size, 0) + 1, (1,), generator=generator))
    flip_h, flip_v = (torch.rand(2, generator=generator) < 0.5).tolist() if flips else (False, False)
    box = (left, top, left + min(width, size), top + min(height, size))
    crop = pad_to_size(image_to_tensor(img.crop(box)), size)
    if flip_h:
        crop = crop.flip(-1)
    if flip_v:
        crop = crop.flip(-2)
    return crop.contiguous()


def _item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator seeded by a well-mixed hash of (seed, epoch, index): nearby triples get unrelated streams."""
    state = np.random.SeedSequence((seed, epoch, index)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def skipped_message(what: str, bad: list[Path], total: int) -> str:
    shown = ", ".join(str(p) for p in bad[:_SHOWN_NAMES])
    more = f" and {len(bad) - _SHOWN_NAMES} more" if len(bad) > _SHOWN_NAMES else ""
    return f"{what}: skipped {len(bad)} unreadable of {total} image files: {shown}{more}"


class TrainCrops(Dataset):
    """Virtual epoch of ``length`` random crops over ``paths``; item -> ``Tensor[3, patch_size, patch_size]``.

    Index with ``(epoch, i)`` (what :class:`EpochTaggedSampler` yields) or with a plain ``i``, which uses
    the epoch last given to :meth:`set_epoch`.
    """

    def __init__(self, paths: list[Path], patch_size: int, length: int, seed: int = 0, flips: bool = True):
        if not paths:
            raise ValueError("TrainCrops needs at least one image path")
        self.paths = list(paths)
        self.patch_size = patch_size
        self.length = length
        self.seed = seed
        self.flips = flips
        self.epoch = 0
        # One flag per file, in shared memory so loader workers' discoveries reach the main process.
        self._bad = torch.zeros(len(self.paths), dtype=torch.bool).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by plain integer indices."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    @property
    def bad_files(self) -> list[Path]:
        """Files found unreadable so far (by this process or any loader worker)."""
        return [self.paths[i] for i in self._bad.nonzero().flatten().tolist()]

    @property
    def skipped_files(self) -> int:
        return int(self._bad.sum())

    def __getitem__(self, index: Union[int, tuple[int, int]]) -> torch.Tensor:
        epoch, index = index if isinstance(index, tuple) else (self.epoch, index)
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} crops")
        count = len(self.paths)
        for step in range(count):
            file_index = (index + step) % count
            if self._bad[file_index]:
                continue
            try:
                # A fresh generator per attempt: the crop does not depend on how many files were skipped.
                generator = _item_generator(self.seed, epoch, index)
                return random_crop(open_image(self.paths[file_index]), self.patch_size, generator, self.flips)
            except ValueError:
                self._bad[file_index] = True
        raise ValueError(skipped_message("training images", self.paths, count) + " (none left to train on)")


class EvalImages(Dataset):
    """Whole images; item -> ``{"image": Tensor[3, H, W], "name": str}``, names relative to ``root``."""

    def __init__(self, paths: list[Path], root: Path):
        self.paths = list(paths)
        self.root = root

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        return {"image": image_to_tensor(open_image(path)), "name": path.relative_to(self.root).as_posix()}


def collate_eval(items: list[dict]) -> dict:
    """Stack evaluation items -> ``{"image": Tensor[B, 3, H, W], "name": list[str]}`` (sizes must match)."""
    sizes = {tuple(item["image"].shape[1:]) for item in items}
    if len(sizes) > 1:
        listed = ", ".join(f"{item['name']} {item['image'].shape[2]}x{item['image'].shape[1]}" for item in items)
        raise ValueError(f"val_batch_size > 1 needs images of one size; this batch has {listed}")
    return {"image": torch.stack([item["image"] for item in items]), "name": [item["name"] for item in items]}


def folder_images(split: str, folder: str) -> tuple[list[Path], Path]:
    """(sorted image paths under ``folder``, ``folder`` as the root of their names); errors name the split."""
    try:
        return find_images(folder), Path(folder)
    except ValueError as err:
        raise ConfigError(f"{split}_dir: {err}") from None


def _readable(paths: list[Path], limit: Optional[int]) -> tuple[list[Path], list[Path]]:
    """Split sorted ``paths`` into (readable, unreadable) by decoding each, stopping at ``limit`` readable."""
    good, bad = [], []
    for path in paths:
        if limit is not None and len(good) == limit:
            break
        try:
            open_image(path)
            good.append(path)
        except ValueError:
            bad.append(path)
    return good, bad


class ReadableImages(NamedTuple):
    """What `readable_eval_images` found: the images to use, the files skipped, and the line that says so."""

    images: EvalImages
    skipped: list[Path]
    message: Optional[str]  # None when every file was readable


def readable_eval_images(what: str, paths: list[Path], root: Path, limit: Optional[int] = None) -> ReadableImages:
    """The readable images among sorted ``paths`` (the first ``limit`` of them) and the unreadable ones.

    Every file is decoded here, before anything is measured, so a bad file is skipped and counted up front
    instead of aborting a run midway. ``ConfigError`` (a ValueError) naming ``what`` when none is readable.
    """
    good, bad = _readable(paths, limit)
    message = skipped_message(what, bad, len(good) + len(bad)) if bad else None
    if not good:
        raise ConfigError(f"{what}: no readable images among {len(bad)} files")
    return ReadableImages(EvalImages(good, root), bad, message)



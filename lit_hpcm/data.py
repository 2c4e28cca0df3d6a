"""ImageDataModule: random training crops and whole evaluation images from folders (or bundled photos).

Batches::

    train            Tensor[B, 3, P, P]                         P = patch_size, random crop + flips
    val/test/predict {"image": Tensor[B, 3, H, W], "name": [str] * B}   whole images, B = val_batch_size

Where the images come from:

- No folder given at all (train_dir, val_dir, test_dir all unset) and ``bundled_photos`` on (the default, and
  the demo configs): scikit-image's bundled photos, read from the installed package (nothing is downloaded),
  said in one line at setup. Fixed disjoint split: :data:`BUNDLED_TRAIN_PHOTOS` for training,
  :data:`BUNDLED_EVAL_PHOTOS` for validation, test and predict. Bundled photos are never mixed with folders:
  once any folder is given, every split uses folders only. The recipe configs turn ``bundled_photos`` off, so
  a forgotten ``--data.train_dir`` is an error, not a run on the demo photos.
- With folders: training needs ``train_dir``; test/predict need ``test_dir``; without ``val_dir`` there is
  no validation (logged once). Folders are searched recursively for :data:`~lit_hpcm.images.IMAGE_SUFFIXES`.
  A missing source or a folder without images is a one-line :class:`~lit_hpcm.errors.ConfigError`, which the
  CLI finds before the run writes anything (:meth:`ImageDataModule.check_sources`).
- ``predict_dir``, when set, is what predict reads instead of the test images, whatever the other sources
  (so a model trained on the bundled photos can compress a folder of your own).

Reproducible crops: training item ``i`` of epoch ``e`` is cut with a ``torch.Generator`` seeded from
``(seed, e, i)`` and uses image ``i mod N``. The training loader and its sampler, which carry the epoch to
the workers and the loader's position into checkpoints, are in :mod:`lit_hpcm.resumable_loader`.

Unreadable files: training skips them lazily (checking 100k files up front is slow): a bad file is
replaced by the next readable image in sorted order, deterministically, and recorded in a mask shared
with the loader workers; :attr:`ImageDataModule.skipped_files` counts them and one warning lists them
at the end of fitting. Evaluation images are all decoded once at ``setup`` and bad ones dropped with a
warning then, because substituting another image would distort per-image reports and averages.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple, Optional, Union

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lit_hpcm.errors import ConfigError
from lit_hpcm.images import find_images, image_to_tensor, open_image
from lit_hpcm.resumable_loader import EpochTaggedSampler, ResumableLoader

__all__ = [
    "BUNDLED_EVAL_PHOTOS",
    "BUNDLED_TRAIN_PHOTOS",
    "EvalImages",
    "ImageDataModule",
    "ReadableImages",
    "TrainCrops",
    "bundled_photos",
    "collate_eval",
    "pad_to_size",
    "random_crop",
    "readable_eval_images",
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


def _skipped_message(what: str, bad: list[Path], total: int) -> str:
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
        raise ValueError(_skipped_message("training images", self.paths, count) + " (none left to train on)")


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


def _folder_images(split: str, folder: str) -> tuple[list[Path], Path]:
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
    message = _skipped_message(what, bad, len(good) + len(bad)) if bad else None
    if not good:
        raise ConfigError(f"{what}: no readable images among {len(bad)} files")
    return ReadableImages(EvalImages(good, root), bad, message)


class ImageDataModule(LightningDataModule):
    """Training crops and evaluation images (see the module docstring for sources, seeding and bad files).

    Args:
        train_dir: folder of training images (searched recursively).
        val_dir: folder of validation images; unset with other folders given: no validation.
        test_dir: folder of test/predict images. All three unset: bundled sample photos.
        predict_dir: folder of images for predict only (default: the test images).
        patch_size: side P of the square training crops.
        batch_size: training crops per step and per process.
        val_batch_size: evaluation images per step (1 unless all images share one size).
        num_workers: loader worker processes per loader.
        train_length: crops per epoch (all ranks together); default: one per training image. Rounded up
            to whole global batches (batch_size x world size) so every step has a full batch.
        max_val_images: validate on the first N readable images (sorted by path) only; test uses all.
        seed: seed of the crops and of the training order.
        random_flips: flip training crops at random (official HPCM recipe: yes; Balanced R-D authors: no).
        pin_memory: pin host memory for faster copies to a CUDA device (ignored without CUDA).
        bundled_photos: with no folder given, use scikit-image's bundled photos (the demo configs); off, a
            missing folder is an error (the recipe configs, which must not train on demo photos by mistake).
    """

    STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
    """The splits each stage reads (predict reads ``predict_dir`` instead of the test images when it is set)."""

    def __init__(
        self,
        train_dir: Optional[str] = None,
        val_dir: Optional[str] = None,
        test_dir: Optional[str] = None,
        predict_dir: Optional[str] = None,
        patch_size: int = 256,
        batch_size: int = 16,
        val_batch_size: int = 1,
        num_workers: int = 4,
        train_length: Optional[int] = None,
        max_val_images: Optional[int] = None,
        seed: int = 0,
        random_flips: bool = True,
        pin_memory: bool = True,
        bundled_photos: bool = True,
    ):
        super().__init__()
        for name, value in (("patch_size", patch_size), ("batch_size", batch_size), ("val_batch_size", val_batch_size)):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        for name, value in (("train_length", train_length), ("max_val_images", max_val_images)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 or unset, got {value}")
        if num_workers < 0 or seed < 0:
            raise ConfigError(f"num_workers and seed must be >= 0, got {num_workers} and {seed}")
        for name, folder in (("train_dir", train_dir), ("val_dir", val_dir), ("test_dir", test_dir),
                             ("predict_dir", predict_dir)):
            if folder is not None and not Path(folder).is_dir():
                what = "a file, not a folder" if Path(folder).exists() else "no such folder"
                raise ConfigError(f"{name} {folder}: {what}")
        self.save_hyperparameters()
        self.dirs = {"train": train_dir, "val": val_dir, "test": test_dir}
        self.predict_dir = predict_dir
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.train_length = train_length
        self.max_val_images = max_val_images
        self.seed = seed
        self.random_flips = random_flips
        self.pin_memory = pin_memory
        self.bundled_photos = bundled_photos
        self._listed: dict[str, Optional[tuple[list[Path], Path]]] = {}  # split -> what _sorted_paths found
        self.train_set: Optional[TrainCrops] = None
        self.val_set: Optional[EvalImages] = None
        self.test_set: Optional[EvalImages] = None
        self.predict_set: Optional[EvalImages] = None
        self._eval_skipped = 0

    @property
    def uses_bundled_photos(self) -> bool:
        return self.bundled_photos and all(folder is None for folder in self.dirs.values())

    def _sorted_paths(self, split: str) -> Optional[tuple[list[Path], Path]]:
        """(image paths, root for names) of a split, or None when the split has no source; listed once (the CLI's
        check and `setup` both ask, and a training folder may hold 100k files)."""
        if split not in self._listed:
            if self.uses_bundled_photos:
                paths = bundled_photos(BUNDLED_TRAIN_PHOTOS if split == "train" else BUNDLED_EVAL_PHOTOS)
                self._listed[split] = paths, paths[0].parent
            else:
                folder = self.dirs[split]
                self._listed[split] = None if folder is None else _folder_images(split, folder)
        return self._listed[split]

    def _required_paths(self, split: str) -> tuple[list[Path], Path]:
        found = self._sorted_paths(split)
        if found is None:
            raise ConfigError(self._missing_source(split))
        return found

    def _missing_source(self, split: str) -> str:
        """Why a split the stage needs has no images, and what to add."""
        if not self.bundled_photos and all(folder is None for folder in self.dirs.values()):
            hint = ("--data.train_dir DIR (and --data.val_dir DIR to validate)" if split == "train"
                    else f"--data.{split}_dir DIR")
            return (f"{split}_dir is not set: this config needs your images, {hint}; only the demo configs "
                    "use the bundled sample photos")
        return (f"{split}_dir is not set (bundled sample photos are used only when train_dir, val_dir "
                "and test_dir are all unset)")

    def check_sources(self, stage: str) -> None:
        """Raise a one-line ConfigError if a split `stage` reads has no source or its folder no images: what
        `setup` would find only after the trainer has made the run's log folder (the CLI calls this first)."""
        if stage == "predict" and self.predict_dir is not None:
            _folder_images("predict", self.predict_dir)
            return
        for split in self.STAGE_SPLITS[stage]:
            if split == "val":  # optional: without it there is no validation
                self._sorted_paths(split)
            else:
                self._required_paths(split)

    def _world(self) -> tuple[int, int]:
        """(world size, global rank) of the attached trainer; (1, 0) when used without one."""
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _make_train_set(self) -> TrainCrops:
        paths, _ = self._required_paths("train")
        global_batch = self.batch_size * self._world()[0]
        wanted = self.train_length or len(paths)
        length = -(-wanted // global_batch) * global_batch
        return TrainCrops(paths, self.patch_size, length, self.seed, self.random_flips)

    def _make_eval_set(self, split: str, paths: list[Path], root: Path, limit: Optional[int] = None) -> EvalImages:
        found = readable_eval_images(f"{split}_dir", paths, root, limit)
        if found.message:
            warnings.warn(found.message, stacklevel=2)
            self._eval_skipped += len(found.skipped)
        return found.images

    def setup(self, stage: str) -> None:
        """Build the datasets a stage needs ("fit": train + val; "validate"; "test"; "predict")."""
        if self.uses_bundled_photos and not (stage == "predict" and self.predict_dir is not None):
            rank_zero_info(f"ImageDataModule: no image folders given, so the demo data: {self._bundled_use(stage)} "
                           "of scikit-image's bundled photos")
        if stage == "fit":
            self.train_set = self._make_train_set()
        if stage in ("fit", "validate"):
            found = self._sorted_paths("val")
            if found is None:
                rank_zero_info("ImageDataModule: val_dir is not set, so there is no validation")
            self.val_set = None if found is None else self._make_eval_set("val", *found, limit=self.max_val_images)
        if stage == "test":
            self.test_set = self._make_eval_set("test", *self._required_paths("test"))
        if stage == "predict":
            if self.predict_dir is None:
                self.predict_set = self._make_eval_set("test", *self._required_paths("test"))
            else:
                self.predict_set = self._make_eval_set("predict", *_folder_images("predict", self.predict_dir))

    @staticmethod
    def _bundled_use(stage: str) -> str:
        """What a stage does with the bundled photos, in words."""
        if stage == "fit":
            return f"training on {len(BUNDLED_TRAIN_PHOTOS)} and validating on {len(BUNDLED_EVAL_PHOTOS)}"
        doing = {"validate": "validating", "test": "testing"}.get(stage, "predicting")
        return f"{doing} on {len(BUNDLED_EVAL_PHOTOS)}"

    @property
    def skipped_files(self) -> int:
        """Unreadable files skipped so far: found in training (lazily) plus dropped from evaluation sets."""
        return self._eval_skipped + (self.train_set.skipped_files if self.train_set is not None else 0)

    def _loader(self, dataset: Dataset, batch_size: int, loader_class: type = DataLoader, **kwargs) -> DataLoader:
        # An own generator: creating an iterator then draws its worker seed from it, not from the
        # global RNG that drives the model's training noise, so a resumed run keeps that RNG in step.
        return loader_class(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed),
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        world_size, rank = self._world()
        sampler = EpochTaggedSampler(self.train_set, num_replicas=world_size, rank=rank, seed=self.seed)
        return self._loader(
            self.train_set, self.batch_size, ResumableLoader, sampler=sampler, drop_last=True,
            persistent_workers=self.num_workers > 0, epoch_fn=self._training_epoch,
        )

    def _training_epoch(self) -> Optional[int]:
        """The epoch a training pass belongs to: the trainer's current epoch (None without a trainer: the
        sampler's own epoch is kept)."""
        return self.trainer.current_epoch if self.trainer is not None else None

    def val_dataloader(self) -> Union[DataLoader, list]:
        """Validation images, or an empty list (Lightning then skips validation) when there are none."""
        if self.val_set is None:
            return []
        return self._loader(
            self.val_set, self.val_batch_size, collate_fn=collate_eval, persistent_workers=self.num_workers > 0
        )

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.val_batch_size, collate_fn=collate_eval)

    def predict_dataloader(self) -> DataLoader:
        """The images of `predict_dir`, or the test images when it is not set."""
        return self._loader(self.predict_set, self.val_batch_size, collate_fn=collate_eval)

    def teardown(self, stage: str) -> None:
        """After fitting, one warning listing the training files that were skipped as unreadable."""
        if stage == "fit" and self.train_set is not None and self.train_set.skipped_files:
            warnings.warn(_skipped_message("train_dir", self.train_set.bad_files, len(self.train_set.paths)))

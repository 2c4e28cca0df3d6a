"""ImageDataModule: the training crops and evaluation images of `lit_hpcm.data.datasets` as Lightning loaders.

Where the images come from:

- No folder given at all (train_dir, val_dir, test_dir all unset) and ``bundled_photos`` on (the default, and
  the demo configs): scikit-image's bundled photos, read from the installed package (nothing is downloaded),
  said in one line at setup. Fixed disjoint split: :data:`BUNDLED_TRAIN_PHOTOS` for training,
  :data:`BUNDLED_EVAL_PHOTOS` for validation, test and predict. Bundled photos are never mixed with folders:
  once any folder is given, every split uses folders only. The recipe configs turn ``bundled_photos`` off, so
  a forgotten ``--data.train_dir`` is an error, not a run on the demo photos.
- With folders: training needs ``train_dir``; test/predict need ``test_dir``; without ``val_dir`` there is
  no validation (logged once). Folders are searched recursively for :data:`~lit_hpcm.data.images.IMAGE_SUFFIXES`.
  A missing source or a folder without images is a one-line :class:`~lit_hpcm.errors.ConfigError`, which the
  CLI finds before the run writes anything (:meth:`ImageDataModule.check_sources`).
- ``predict_dir``, when set, is what predict reads instead of the test images, whatever the other sources
  (so a model trained on the bundled photos can compress a folder of your own).

Unreadable training files are counted in :attr:`ImageDataModule.skipped_files` and listed in one warning at the
end of fitting.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Union

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError
from .datasets import (
    BUNDLED_EVAL_PHOTOS,
    BUNDLED_TRAIN_PHOTOS,
    EvalImages,
    TrainCrops,
    bundled_photos,
    collate_eval,
    folder_images,
    readable_eval_images,
    skipped_message,
)
from .loader import EpochTaggedSampler, ResumableLoader

__all__ = ["ImageDataModule"]


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
                self._listed[split] = None if folder is None else folder_images(split, folder)
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
            folder_images("predict", self.predict_dir)
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
                self.predict_set = self._make_eval_set("predict", *folder_images("predict", self.predict_dir))

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
            warnings.warn(skipped_message("train_dir", self.train_set.bad_files, len(self.train_set.paths)))

"""Images for training and evaluation: image I/O (`images`), torch datasets (`datasets`, no Lightning), the
resumable training loader (`loader`) and the Lightning datamodule (`datamodule`).

`ImageDataModule` loads Lightning on first use; the codec commands read images through this package without it.
"""

from __future__ import annotations

from .. import lazy_exports
from .datasets import BUNDLED_EVAL_PHOTOS, BUNDLED_TRAIN_PHOTOS, ReadableImages, bundled_photos, readable_eval_images

__all__ = ["BUNDLED_EVAL_PHOTOS", "BUNDLED_TRAIN_PHOTOS", "ImageDataModule", "ReadableImages", "bundled_photos",
           "readable_eval_images"]
__getattr__ = lazy_exports(__name__, {"ImageDataModule": "datamodule"})

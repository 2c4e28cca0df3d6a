"""`AtomicCheckpointIO`: Lightning's checkpoint writer, saving local files atomically (`checkpoint_io`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO

from .checkpoint_io import CheckpointError, unreadable_checkpoint, write_atomically

__all__ = ["AtomicCheckpointIO", "with_atomic_checkpoints"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that saves local files with :func:`write_atomically` and names bad files.

    Remote paths (``s3://`` and the like) go through Lightning's own writer: object stores publish an
    upload only once it is complete.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        write_atomically(path, lambda handle: torch.save(checkpoint, handle))
        return None

    def load_checkpoint(self, path, map_location: Optional[Callable] = lambda storage, loc: storage, **kwargs):
        if _is_local_file_protocol(path) and not Path(path).is_file():
            raise CheckpointError(f"{path}: no such checkpoint file")
        try:
            return super().load_checkpoint(path, map_location=map_location, **kwargs)
        except Exception as err:  # torch.load raises many types for corrupt, truncated or foreign files
            raise unreadable_checkpoint(path, err) from None


def with_atomic_checkpoints(plugins) -> list:
    """Trainer ``plugins`` plus an :class:`AtomicCheckpointIO`, unless they already hold a ``CheckpointIO``."""
    plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if any(isinstance(plugin, CheckpointIO) for plugin in plugins):
        return plugins
    return [*plugins, AtomicCheckpointIO()]

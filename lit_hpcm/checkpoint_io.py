"""Checkpoint files: written so that a kill never leaves a broken one, read so that a bad one is a clear error.

A kill at any moment of a save leaves the previous complete file or the new one.

Lightning's default writer serialises to memory, then writes through an fsspec transaction whose
temporary file lives in the system temp folder: the final move is a copy when that folder is on
another file system (a kill mid-copy leaves a truncated ``last.ckpt``), nothing is fsynced (a power
cut can leave an empty file behind a completed rename), and a killed save leaks its temporary file.

:func:`write_atomically` writes ``.<name>.partial`` beside the target, fsyncs it, renames it over the
target with ``os.replace`` (atomic within one file system) and fsyncs the folder so the rename itself
is durable. A writer killed mid-save leaves that hidden ``.partial`` file and an intact target; the
next save of the same name overwrites it. Lightning's ``--ckpt_path last`` ignores it (only
``last*.ckpt`` names count).

:class:`AtomicCheckpointIO` is the Lightning plugin (the ``lit-hpcm`` CLI adds it unless a config names
another ``CheckpointIO``). It also turns an unreadable checkpoint into a :class:`CheckpointError` that
names the file and says what is wrong, instead of a deep unpickling traceback; :func:`read_checkpoint`
does the same for ``lit_hpcm.checkpoints``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "read_checkpoint",
    "unreadable_checkpoint",
    "with_atomic_checkpoints",
    "write_atomically",
]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, unreadable, or not fitting the requested network.
    The message names the file (where there is one) and every problem found."""


def problem_list(problems: list[str], limit: int = 8) -> str:
    """The first `limit` problems of a checkpoint that does not fit, joined for one error line."""
    more = f"; … and {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


def unreadable_checkpoint(path, err: BaseException) -> CheckpointError:
    """The error for a file ``torch.load`` refused, with the first line of torch's reason."""
    reason = str(err).strip().splitlines()[0] if str(err).strip() else "no details"
    if "weights_only" in str(err) or "Weights only load failed" in reason:
        # torch's advice to retry with weights_only=False (arbitrary code execution) is not ours to give
        reason = "it holds something other than tensors and plain data"
    return CheckpointError(
        f"{path}: not a readable PyTorch checkpoint (corrupt, truncated or another format): "
        f"{type(err).__name__}: {reason}"
    )


def read_checkpoint(path: str | os.PathLike):
    """``torch.load`` (tensors and plain data only) of a local file onto the CPU; a missing or unreadable
    file is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt, truncated or foreign files
        raise unreadable_checkpoint(path, err) from None


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX; other systems have no directory handles)."""
    if os.name != "posix":
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Create or replace ``path`` with what ``write(handle)`` writes, so that it is never seen partial.

    An exception from ``write`` removes the temporary file and leaves ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


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

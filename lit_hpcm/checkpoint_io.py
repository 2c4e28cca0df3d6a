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
does the same for ``lit_hpcm.checkpoints``. The plugin lives in ``lit_hpcm.atomic_checkpoint_io`` and is
importable from here too, loading Lightning only when asked for: `lit-hpcm compress` reads checkpoints
without Lightning.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

__all__ = [  # the Lightning plugin's two names are loaded lazily by __getattr__ below
    "AtomicCheckpointIO",  # noqa: F822
    "CheckpointError",
    "read_checkpoint",
    "unreadable_checkpoint",
    "with_atomic_checkpoints",  # noqa: F822
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


def __getattr__(name: str):
    """The Lightning plugin's names, loaded (with Lightning) on first use."""
    if name in ("AtomicCheckpointIO", "with_atomic_checkpoints"):
        from . import atomic_checkpoint_io

        return getattr(atomic_checkpoint_io, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

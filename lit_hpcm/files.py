"""Files written so that a kill never leaves a broken one, and checkpoints read so that a bad one is a clear error.

:func:`write_atomically` is the one writer of files a run keeps (checkpoints, results JSON, images): it writes
``.<name>.partial`` beside the target, fsyncs it, renames it over the target with ``os.replace`` (atomic within one
file system) and fsyncs the folder so the rename itself is durable. A kill at any moment leaves the previous
complete file or the new one, plus at most that hidden ``.partial`` file, which the next save of the same name
overwrites (Lightning's ``--ckpt_path last`` looks only at ``last*.ckpt`` names). Lightning's own writer is not
used for local files because its temporary file lives in the system temp folder (the final move can be a copy
across file systems), nothing is fsynced, and a killed save leaks the temporary file.

:func:`read_checkpoint` loads tensors and plain data only and turns a missing or unreadable file into a
:class:`~lit_hpcm.errors.CheckpointError` naming the file. No Lightning here: `lit-hpcm compress` reads
checkpoints without it (the Lightning plugin is `lit_hpcm.training.checkpoint_io`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

from .errors import CheckpointError

__all__ = ["problem_list", "read_checkpoint", "unreadable_checkpoint", "write_atomically"]


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


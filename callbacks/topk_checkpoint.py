"""TopKCheckpoint: the best K checkpoints by a metric plus the last N, with a JSON manifest.

Long HPCM runs want both: the best checkpoints to evaluate and the most recent ones to resume or inspect
from. ModelCheckpoint keeps only the best K (and ``last.ckpt``); this subclass also saves every epoch's
checkpoint, keeps the newest N of them, never deletes a file that is in either set, and describes the kept
files in ``checkpoints.json``.

Crash safety: the manifest is replaced atomically and always rewritten *before* a file it listed is
deleted, so at any moment (a kill included) every path it lists exists. Checkpoint files themselves are
atomic when the trainer uses :class:`lit_hpcm.checkpoint_io.AtomicCheckpointIO` (the CLI default).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from lit_hpcm.checkpoint_io import write_atomically


class TopKCheckpoint(ModelCheckpoint):
    """ModelCheckpoint keeping the best ``save_top_k`` by ``monitor`` and the last ``save_last_n`` saves.

    Every ``every_n_epochs`` epochs (at validation end, as ModelCheckpoint decides) the epoch's checkpoint is
    written once: ModelCheckpoint writes it when it enters the top K, this class otherwise. A file is deleted
    only when it is in neither set. ``last.ckpt`` is kept too (``save_last=True``) so ``--ckpt_path last``
    resumes. After every save ``<dirpath>/checkpoints.json`` lists the kept epoch checkpoints, oldest first:
    ``{"path", "epoch", "step", "metric", "kind": "best" | "last" | "both"}``, written atomically and
    before any deletion.

    The kept sets are part of the callback's state, so a resumed run keeps managing the same files.

    Args:
        dirpath: folder of the checkpoints and the manifest (None: ``<trainer.default_root_dir>/checkpoints``).
        monitor, mode: metric ranking the best checkpoints and whether lower or higher is better.
        save_top_k: how many best checkpoints to keep (-1: all, 0: none).
        save_last_n: how many of the most recent epoch checkpoints to keep.
        every_n_epochs: save every this many epochs.
        filename: ModelCheckpoint's file name pattern (default ``{epoch}-{step}``).
        verbose: log each save decision.
    """

    MANIFEST = "checkpoints.json"
    FOLDER = "checkpoints"  # under trainer.default_root_dir when no dirpath is given

    def __init__(
        self,
        dirpath: Optional[str] = None,
        monitor: str = "val/loss",
        mode: Literal["min", "max"] = "min",
        save_top_k: int = 2,
        save_last_n: int = 2,
        every_n_epochs: int = 1,
        filename: Optional[str] = None,
        verbose: bool = False,
    ) -> None:
        if save_last_n < 0 or every_n_epochs < 1:
            raise ValueError(f"need save_last_n >= 0 and every_n_epochs >= 1, got {save_last_n}, {every_n_epochs}")
        super().__init__(
            dirpath=dirpath, filename=filename, monitor=monitor, mode=mode, save_top_k=save_top_k,
            every_n_epochs=every_n_epochs, save_last=True, verbose=verbose,
        )
        self.save_last_n = save_last_n
        self.recent: list[str] = []  # the newest save_last_n epoch checkpoints, oldest first
        self.entries: dict[str, dict[str, Any]] = {}  # kept epoch checkpoint -> epoch, step, metric

    def kind(self, path: str) -> str:
        """Which kept set(s) ``path`` is in: "both", "best" or "last"."""
        best, last = path in self.best_k_models, path in self.recent
        return "both" if best and last else "best" if best else "last"

    # -- ModelCheckpoint hooks -------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.dirpath is None:  # before ModelCheckpoint's own default (inside the logger's version folder)
            self.dirpath = str(Path(trainer.default_root_dir, self.FOLDER).resolve())
        super().setup(trainer, pl_module, stage)

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        super()._save_topk_checkpoint(trainer, monitor_candidates)
        if self._last_global_step_saved != trainer.global_step:  # not among the best: save it as a recent one
            self._save_checkpoint(trainer, self._get_metric_interpolated_filepath_name(monitor_candidates, trainer))
        dropped = [p for p in self.entries if p not in self.recent and p not in self.best_k_models]
        for path in dropped:
            self.entries.pop(path)
        if trainer.is_global_zero:
            rows = [{"path": p, **e, "kind": self.kind(p)} for p, e in self.entries.items()]
            text = json.dumps(rows, indent=2) + "\n"
            write_atomically(Path(self.dirpath) / self.MANIFEST, lambda handle: handle.write(text.encode()))
        for path in dropped:  # only now that the manifest no longer lists them
            if self._should_remove_checkpoint(trainer, path, self._last_checkpoint_saved):
                self._remove_checkpoint(trainer, path)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        if filepath != self.last_model_path:  # an epoch checkpoint: record it first, the record is in the file
            metric = trainer.callback_metrics.get(self.monitor)
            metric = float(metric) if metric is not None and math.isfinite(float(metric)) else None
            self.entries[filepath] = {"epoch": trainer.current_epoch, "step": trainer.global_step, "metric": metric}
            self.recent = [*self.recent, filepath][-self.save_last_n :] if self.save_last_n else []
        super()._save_checkpoint(trainer, filepath)

    def _remove_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        # Kept while listed in the manifest (the last N are always listed; a best one that ModelCheckpoint
        # evicts is deleted by _save_topk_checkpoint after the manifest is rewritten without it).
        if filepath in self.entries:
            return
        super()._remove_checkpoint(trainer, filepath)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "recent": self.recent, "entries": self.entries}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:  # as ModelCheckpoint: same folder only
            self.recent = list(state_dict.get("recent", []))
            self.entries = dict(state_dict.get("entries", {}))

"""TopKCheckpoint: the best K checkpoints by a metric plus the last N, with a JSON manifest.

Long HPCM runs want both: the best checkpoints to evaluate and the most recent ones to resume or inspect
from. ModelCheckpoint keeps only the best K (and ``last.ckpt``); this subclass also saves every epoch's
checkpoint, keeps the newest N of them, never deletes a file that is in either set, and describes the kept
files in ``checkpoints.json``.

Crash safety: the manifest is replaced atomically and always rewritten *before* a file it listed is
deleted, so at any moment (a kill included) every path it lists exists. Checkpoint files themselves are
atomic when the trainer uses :class:`lit_hpcm.training.checkpoint_io.AtomicCheckpointIO` (the CLI default).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Literal, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lit_hpcm.files import write_atomically


class TopKCheckpoint(ModelCheckpoint):
    """ModelCheckpoint keeping the best ``save_top_k`` by ``monitor`` and the last ``save_last_n`` saves.

    Every ``every_n_epochs`` epochs (at the training epoch's end, or after each validation when validation runs
    more often; ModelCheckpoint's rule) the epoch's checkpoint is written once. A file is deleted only when it is
    in neither set. The saving is this class's own, through public calls only (``trainer.save_checkpoint``,
    ``strategy.remove_checkpoint``, ModelCheckpoint's ``format_checkpoint_name`` and ``check_monitor_top_k``);
    ModelCheckpoint's two saving hooks are replaced, so no private member of it is relied on. ``last.ckpt`` is
    kept too (``save_last=True``) so ``--ckpt_path last`` resumes. After every save
    ``<dirpath>/checkpoints.json`` lists the kept epoch checkpoints, oldest first:
    ``{"path", "epoch", "step", "metric", "kind": "best" | "last" | "both"}``, written atomically and
    before any deletion. In a run that validates, only a checkpoint validated at its own step has a metric (and
    can rank among the best): one written between validations (at max_steps, say) gets ``"metric": null``,
    not the value an earlier validation left in ``trainer.callback_metrics``.

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
        self._saved_step: Optional[int] = None  # global step of the last epoch checkpoint this process wrote
        self._last_step: Optional[int] = None  # and of its last last.ckpt
        self._validated_step: Optional[int] = None  # global step of the last validation (not a sanity check)
        self.recent: list[str] = []  # the newest save_last_n epoch checkpoints, oldest first
        self.entries: dict[str, dict[str, Any]] = {}  # kept epoch checkpoint -> epoch, step, metric

    def kind(self, path: str) -> str:
        """Which kept set(s) ``path`` is in: "both", "best" or "last"."""
        best, last = path in self.best_k_models, path in self.recent
        return "both" if best and last else "best" if best else "last"

    # -- saving: ModelCheckpoint's two saving hooks replaced, on public trainer, strategy and ModelCheckpoint calls --
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """The folder (default ``<default_root_dir>/checkpoints``). ModelCheckpoint's warning that it is not empty
        waits for `on_fit_start`, where it is known whether the fit resumes (then the files there are its own)."""
        if self.dirpath is None:  # before ModelCheckpoint's own default (inside the logger's version folder)
            self.dirpath = str(Path(trainer.default_root_dir, self.FOLDER).resolve())
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
            super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A fresh fit into a folder that holds files warns (its own are written beside them, `-vN`); a resumed fit
        does not (the checkpoint it loaded is known here, after the restore)."""
        folder = Path(self.dirpath)
        if not trainer.ckpt_path and self.save_top_k != 0 and folder.is_dir() and any(folder.iterdir()):
            rank_zero_warn(f"Checkpoint directory {folder} exists and is not empty.")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._saves_at_epoch_end(trainer):
            self._save_epoch(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated_step = trainer.global_step
        if not self._saves_at_epoch_end(trainer):
            self._save_epoch(trainer)

    @staticmethod
    def _saves_at_epoch_end(trainer: pl.Trainer) -> bool:
        """ModelCheckpoint's rule: at the training epoch's end when validation runs once per epoch at its end
        (or not at all), otherwise after every validation."""
        return trainer.check_val_every_n_epoch == 1 and (sum(trainer.num_val_batches) == 0
                                                         or trainer.val_check_interval == 1.0)

    def _save_epoch(self, trainer: pl.Trainer) -> None:
        """Save this epoch's checkpoint once, enter it in the best and recent sets, refresh last.ckpt, rewrite
        the manifest, then delete what neither set holds."""
        if (trainer.sanity_checking or trainer.fast_dev_run or trainer.state.fn != "fit"
                or self._saved_step == trainer.global_step or (trainer.current_epoch + 1) % self.every_n_epochs):
            return
        metrics = {**trainer.callback_metrics, "epoch": torch.tensor(trainer.current_epoch),
                   "step": torch.tensor(trainer.global_step)}
        path = self._unused_name(trainer, metrics)
        score = self._score(trainer)
        metric = float(score) if score is not None and math.isfinite(float(score)) else None
        self.entries[path] = {"epoch": trainer.current_epoch, "step": trainer.global_step, "metric": metric}
        self.recent = [*self.recent, path][-self.save_last_n :] if self.save_last_n else []
        if self.save_top_k and score is not None and self.check_monitor_top_k(trainer, score):
            self._enter_best(path, score.detach().float().cpu())
        # the entries above are in the file: the callback's state is saved with it
        trainer.save_checkpoint(path, weights_only=self.save_weights_only)
        self._save_last(trainer)
        self._saved_step = trainer.global_step
        if self.verbose:
            rank_zero_info(f"TopKCheckpoint: saved {path} ({self.kind(path)}); {self.monitor} = {metric}")
        dropped = [p for p in self.entries if p not in self.recent and p not in self.best_k_models]
        for kept in dropped:
            self.entries.pop(kept)
        if trainer.is_global_zero:
            rows = [{"path": p, **e, "kind": self.kind(p)} for p, e in self.entries.items()]
            text = json.dumps(rows, indent=2) + "\n"
            write_atomically(Path(self.dirpath) / self.MANIFEST, lambda handle: handle.write(text.encode()))
        for path in dropped:  # only now that the manifest no longer lists them
            trainer.strategy.remove_checkpoint(path)

    def _unused_name(self, trainer: pl.Trainer, metrics: dict[str, Any]) -> str:
        """This epoch's file name, with ModelCheckpoint's `-vN` suffix while a kept checkpoint or a file has it (a
        `filename` without {epoch}/{step}, another run's files in the folder): a new epoch must not overwrite the
        best so far, nor anything it did not write. `file_exists` is ModelCheckpoint's (rank 0 answers for all)."""
        path, version = self.format_checkpoint_name(metrics), 1
        while path in self.entries or self.file_exists(path, trainer):
            path, version = self.format_checkpoint_name(metrics, ver=version), version + 1
        return path

    def _score(self, trainer: pl.Trainer) -> Optional[torch.Tensor]:
        """The monitored value of a checkpoint written now, None when it has none: in a run that validates, a
        validation must have run at this very step (callback_metrics still holds the last one's values)."""
        score = trainer.callback_metrics.get(self.monitor) if self.monitor else None
        validates = sum(trainer.num_val_batches) > 0
        return None if validates and self._validated_step != trainer.global_step else score

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A fit that stops between epoch saves (max_steps, a stop request) still leaves its last state."""
        if self._last_step != trainer.global_step:
            self._save_last(trainer)

    def _save_last(self, trainer: pl.Trainer) -> None:
        self.last_model_path = str(Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}")
        trainer.save_checkpoint(self.last_model_path, weights_only=self.save_weights_only)
        self._last_step = trainer.global_step

    def _enter_best(self, path: str, score: torch.Tensor) -> None:
        """Add `path` to the best set, evicting the k-th best when the set is full (the file itself goes only
        when it is not a recent one either), and update ModelCheckpoint's public best/k-th fields."""
        if torch.isnan(score):  # as ModelCheckpoint: a NaN ranks last
            score = torch.tensor(float("inf") if self.mode == "min" else float("-inf"))
        k = len(self.best_k_models) + 1 if self.save_top_k == -1 else self.save_top_k
        if len(self.best_k_models) == k:
            self.best_k_models.pop(self.kth_best_model_path)
        self.best_k_models[path] = score
        self.current_score = score
        worst, best = (max, min) if self.mode == "min" else (min, max)
        if len(self.best_k_models) == k:
            self.kth_best_model_path = worst(self.best_k_models, key=self.best_k_models.get)
            self.kth_value = self.best_k_models[self.kth_best_model_path]
        self.best_model_path = best(self.best_k_models, key=self.best_k_models.get)
        self.best_model_score = self.best_k_models[self.best_model_path]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "recent": self.recent, "entries": self.entries}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The kept sets of the same folder only (ModelCheckpoint's rule). A checkpoint of another folder (`test`
        of another run's file, a fit started from it) restores nothing, and without ModelCheckpoint's warning
        that the dirpath has changed: nothing here should follow the file."""
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)
            self.recent = list(state_dict.get("recent", []))
            self.entries = dict(state_dict.get("entries", {}))

"""The CSV logger of a run folder: one log folder per run, continued (not replaced) by a resumed fit.

Lightning's CSVLogger gives a resumed fit a new ``version_N`` folder, or, pointed at the old one, deletes its
``metrics.csv`` on the first write. A resumed run should read like the run that was never interrupted: the
same folder, the rows logged before the resumed step, then the resumed rows at their own steps. The
checkpoint records the folder and the first step the resumed run logs (`record_log_state`, called by LitHPCM when
it saves); the CLI gives the resumed run's logger that version and step (`continue_log`). Rows at later steps
(steps the resumed run trains again) are dropped. Whether Lightning repeats the epoch-end work at the checkpoint's step
depends on the hook that wrote it (a batch's end: no; the validation after it: the epoch-end hooks again), so
a row the resumed run logs again at an earlier step, with the same columns, is written once.
"""

from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path
from typing import Optional, Union

from lightning.pytorch.loggers import CSVLogger

NOT_METRICS = ("step", "epoch")  # columns every row has


class RunCSVLogger(CSVLogger):
    """CSVLogger writing ``<save_dir>/<name>/version_<n>/metrics.csv`` that a resumed fit continues.

    Args:
        save_dir: folder holding the log versions. None: the trainer's ``default_root_dir`` (the `lit-hpcm`
            CLI fills it in; used from Python, None means the working folder).
        name, prefix, flush_logs_every_n_steps: as CSVLogger.
        version: as CSVLogger; a name rather than a number (the CLI gives `test`, `validate` and `predict` their
            command's name) is that command's latest log, which the next one replaces without a warning.
        resume_step: continue an existing ``version`` from this step: keep its rows at earlier steps, drop the
            rest. None: a fresh metrics.csv.
    """

    def __init__(self, save_dir: Optional[str] = None, name: str = "logs", version: Union[int, str, None] = None,
                 prefix: str = "", flush_logs_every_n_steps: int = 100, resume_step: Optional[int] = None) -> None:
        super().__init__(save_dir if save_dir is not None else ".", name=name, version=version, prefix=prefix,
                         flush_logs_every_n_steps=flush_logs_every_n_steps)
        if resume_step is not None and version is None:
            raise ValueError(f"resume_step ({resume_step}) continues a log version: give the version too")
        self.resume_step = resume_step
        if resume_step is not None or isinstance(version, str):
            self._replace_quietly()
        self._carried: list[dict] = self._read_kept_rows() if resume_step is not None else []
        self._written_before_resume = {(int(row["step"]), _columns(row)) for row in self._carried}

    def _read_kept_rows(self) -> list[dict]:
        metrics = Path(self.log_dir) / "metrics.csv"
        if not metrics.is_file():
            return []
        with open(metrics, newline="") as handle:
            return [row for row in csv.DictReader(handle) if int(row["step"]) < self.resume_step]

    def _replace_quietly(self) -> None:
        """Lightning's writer warns that it replaces an existing metrics.csv: for a continued log (the kept rows
        are written back first thing) or a command's latest log that is the intent, so that one warning, for
        this folder only, is not shown."""
        warnings.filterwarnings("ignore", message=f"Experiment logs directory {re.escape(self.log_dir)} exists")

    def _write_carried_rows(self) -> None:
        """Put the kept rows back into the new metrics.csv (at once: the writer has just emptied the file)."""
        rows, self._carried = self._carried, []
        for row in rows:
            values = {key: _number(value) for key, value in row.items() if value not in ("", None) and key != "step"}
            self.experiment.log_metrics(values, int(row["step"]))
        self.save()

    def log_hyperparams(self, params=None) -> None:
        super().log_hyperparams(params)
        if self._carried:
            self._write_carried_rows()

    def log_metrics(self, metrics: dict, step: Optional[int] = None) -> None:
        if self._carried:
            self._write_carried_rows()
        if step is not None and (step, _columns(metrics)) in self._written_before_resume:
            return  # an epoch-end row Lightning logs again after the resume: already in the file
        super().log_metrics(metrics, step)

    def checkpoint_state(self, next_step: int) -> dict:
        """What a checkpoint records so a resumed run can continue this log, `next_step` being the first step
        that run logs. Flushes first, so every row logged up to the checkpoint is on disk."""
        self.save()
        return {"root_dir": str(Path(self.root_dir).resolve()), "version": self.version, "next_step": next_step}


def record_log_state(checkpoint: dict, loggers, next_step: int) -> None:
    """Put into ``checkpoint["lit_hpcm"]["log"]`` where the run's `RunCSVLogger` (the first, if several) logs and
    the first step a run resumed from this checkpoint logs; nothing without one."""
    run_logs = [logger for logger in loggers if isinstance(logger, RunCSVLogger)]
    if run_logs:
        checkpoint.setdefault("lit_hpcm", {})["log"] = run_logs[0].checkpoint_state(next_step)


def continue_log(logger_args, checkpoint: dict) -> None:
    """Make the config of a `RunCSVLogger` (its init args: ``save_dir``, ``name``, ``version``, ``resume_step``)
    continue the log a checkpoint recorded (`record_log_state`), when it writes to the same folder and names no
    version of its own."""
    state = checkpoint.get("lit_hpcm", {}).get("log")
    if state and logger_args.version is None and str((Path(logger_args.save_dir) / logger_args.name).resolve()) \
            == state["root_dir"]:
        logger_args.version, logger_args.resume_step = state["version"], state["next_step"]


def _columns(row: dict) -> frozenset:
    """The metric names a row holds (values present), without the step and epoch every row has."""
    return frozenset(key for key, value in row.items() if key not in NOT_METRICS and value not in ("", None))


def _number(text: str) -> Union[int, float]:
    """A metrics.csv cell as the value it was written from (integers, such as the epoch, stay integers)."""
    return int(text) if text.lstrip("-").isdigit() else float(text)

"""`lit-hpcm fit|validate|test|predict`: LightningCLI over `LitHPCM` and `ImageDataModule`, with the run folder,
checkpoint checks and resume rules of lit-hpcm."""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from pathlib import Path

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningCLI

from ..errors import CheckpointError, ConfigError, TrainingStopped
from ..files import read_checkpoint
from ..training.checkpoint_io import with_atomic_checkpoints
from ..training.lightning_private import ConfigOverCheckpointHyperparameters
from .commands import LIGHTNING_COMMANDS

LIGHTNING_CKPT_KEYWORDS = ("last", "best", "hpc", "registry")  # --ckpt_path values Lightning resolves itself


class HPCMCLI(ConfigOverCheckpointHyperparameters, LightningCLI):
    """LightningCLI over `LitHPCM` and `ImageDataModule`; the config file is saved beside each run.
    Checkpoints are written atomically (`AtomicCheckpointIO`) unless the config names a CheckpointIO."""

    def instantiate_trainer(self, **kwargs):
        """The trainer, or a one-line ConfigError for a setting it refuses (a GPU recipe on a machine without
        one: with what to add)."""
        trainer_config = (self.config_init[self.subcommand] if self.subcommand else self.config_init).get("trainer", {})
        plugins = kwargs.pop("plugins", trainer_config.get("plugins"))
        try:
            trainer = super().instantiate_trainer(plugins=with_atomic_checkpoints(plugins), **kwargs)
        except MisconfigurationException as err:
            raise ConfigError(_trainer_problem(err, trainer_config.get("accelerator"))) from None
        trainer.callbacks.append(_MidEpochBar())  # after the progress bar: its train bar exists by then
        return trainer

    def _check_data(self) -> None:
        """Before a subcommand runs (and its trainer makes the run's log folder): the data sources it reads."""
        from ..data import ImageDataModule

        if isinstance(self.datamodule, ImageDataModule):
            self.datamodule.check_sources(self.subcommand)

    before_fit = before_validate = before_test = _check_data

    def before_instantiate_classes(self) -> None:
        """Before anything is built: the run folder (what a run writes goes under `trainer.default_root_dir` unless
        the config names another place: `RunCSVLogger`'s and our `WandbLogger`'s save_dir here, the callbacks'
        dirpath and `model.test_results` default to it themselves); validate, test and predict log into one
        folder named after the command (logs/test), not a new version each time; `--ckpt_path last` made the
        newest last*.ckpt of the config's checkpoint callbacks; the checkpoint checked; a resumed fit's log
        continued in its folder."""
        from lit_hpcm.callbacks.topk_checkpoint import TopKCheckpoint

        from ..loggers import RunCSVLogger, WandbLogger
        from ..loggers.csv_logger import continue_log

        if not self.config.get("subcommand"):
            return
        config = self.config[self.config.subcommand]
        root = Path(config.trainer.default_root_dir or ".")
        loggers = [entry for entry in _entries(config.trainer.logger) if _is(entry, RunCSVLogger)]
        for entry in [*loggers, *(entry for entry in _entries(config.trainer.logger) if _is(entry, WandbLogger))]:
            if entry.init_args.save_dir is None:
                entry.init_args.save_dir = str(root)
        if self.config.subcommand != "fit":
            for entry in loggers:
                if entry.init_args.version is None:
                    entry.init_args.version = self.config.subcommand
        if config.get("ckpt_path") == "last":
            config.ckpt_path = _last_checkpoint(config.trainer.callbacks, root / TopKCheckpoint.FOLDER)
        if not config.get("ckpt_path") or config.ckpt_path in LIGHTNING_CKPT_KEYWORDS:
            return
        checkpoint = _checked_checkpoint(config.ckpt_path)
        if self.config.subcommand == "fit":
            for entry in loggers:
                continue_log(entry.init_args, checkpoint)

    def before_predict(self) -> None:
        """`predict` is for files: unless the config has a prediction writer, add a `CodecWriter` that
        stores the .hpcm files and decoded PNGs in <trainer.default_root_dir>/predictions."""
        from lightning.pytorch.callbacks import BasePredictionWriter

        from ..callbacks.codec_writer import CodecWriter

        self._check_data()
        if not any(isinstance(callback, BasePredictionWriter) for callback in self.trainer.callbacks):
            self.trainer.callbacks.append(CodecWriter(str(Path(self.trainer.default_root_dir) / "predictions")))


class _MidEpochBar(Callback):
    """A resumed fit starts the progress bar's epoch where Lightning 2.6 skips the epoch-start hooks (a checkpoint
    of mid-epoch or of an epoch's end, max_steps' last.ckpt included): the bar read "Training: 9/?" (no epoch,
    no total) until the next epoch."""

    def on_train_start(self, trainer, pl_module) -> None:
        bar, loop = trainer.progress_bar_callback, trainer.fit_loop
        if bar is not None and bar.is_enabled and (loop.restarted_mid_epoch or loop.restarted_on_epoch_end):
            bar.on_train_epoch_start(trainer, pl_module)


def _entries(value) -> list:
    """The class_path/init_args entries of a config's `trainer.logger` or `trainer.callbacks` (None, a bool,
    one entry or a list)."""
    if value is None or isinstance(value, bool):
        return []
    return [entry for entry in (value if isinstance(value, list) else [value]) if hasattr(entry, "class_path")]


def _is(entry, cls: type) -> bool:
    """Whether a config entry builds a `cls` (or a subclass); its class_path is as the user wrote it."""
    module, _, name = entry.class_path.rpartition(".")
    built = getattr(importlib.import_module(module), name, None)
    return isinstance(built, type) and issubclass(built, cls)


def _last_checkpoint(callbacks, topk_default: Path) -> str:
    """`--ckpt_path last` made a path before anything is built (so the checkpoint can be checked and its log
    continued): the newest last*.ckpt of the config's checkpoint callbacks, Lightning's rule. Left as "last"
    for Lightning when a callback's folder is only known once built (a ModelCheckpoint without dirpath) or
    when there is none yet (Lightning then starts from scratch: `last` can be set before the first run)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lit_hpcm.callbacks.topk_checkpoint import TopKCheckpoint

    folders = []
    for entry in _entries(callbacks):
        if _is(entry, ModelCheckpoint):
            dirpath = entry.init_args.dirpath or (topk_default if _is(entry, TopKCheckpoint) else None)
            if dirpath is None:
                return "last"
            folders.append(Path(dirpath))
    found = [path for folder in folders for path in folder.glob("last*.ckpt")]
    return str(max(found, key=lambda path: path.stat().st_mtime)) if found else "last"


def _trainer_problem(err: MisconfigurationException, accelerator) -> str:
    """Lightning's refusal in one line; for a GPU accelerator on a machine without one, what to add."""
    message = " ".join(str(err).split())
    if str(accelerator) in ("gpu", "cuda") and not torch.cuda.is_available():
        return (f"trainer.accelerator {accelerator}: this machine has no GPU ({message}); to run on the CPU add "
                "--trainer.accelerator cpu")
    return f"trainer: {message}"


def _checked_checkpoint(ckpt_path: str) -> dict:
    """Read `ckpt_path` and check it is a Lightning training checkpoint (a clear `CheckpointError` otherwise: a
    folder, a lit-hpcm weights file, an official HPCM file). Whether it fits the configured model (preset,
    FAMO state) is checked when it loads (`LitHPCM.on_load_checkpoint`)."""
    from ..models.weights import WEIGHTS_FORMAT

    if Path(ckpt_path).is_dir():
        raise CheckpointError(f"{ckpt_path}: a folder, not a checkpoint file")
    checkpoint = read_checkpoint(ckpt_path)
    if isinstance(checkpoint, dict) and checkpoint.get("format") == WEIGHTS_FORMAT:
        raise CheckpointError(f"{ckpt_path}: a lit-hpcm weights file, not a training checkpoint; to start a run "
                              f"from these weights use --model.init_weights {ckpt_path}")
    if not (isinstance(checkpoint, dict) and "pytorch-lightning_version" in checkpoint):
        raise CheckpointError(f"{ckpt_path}: not a lit-hpcm training checkpoint (an official HPCM file? "
                              "start from it with --model.init_weights, or convert it with import-official)")
    return checkpoint


class _DropAdvert(logging.Filter):
    """Lightning 2.6 advertises a cloud logging service on every run; a run's output is for the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip: For seamless cloud logging")


# Modules of lit-hpcm 0.1.0 whose classes configs name, and where those classes are since 0.2.0.
MOVED_CLASS_MODULES = {"lit_hpcm.run_logger": "lit_hpcm.loggers", "lit_hpcm.wandb_logger": "lit_hpcm.loggers",
                       "lit_hpcm.module": "lit_hpcm", "lit_hpcm.codec_writer": "lit_hpcm.callbacks",
                       "lit_hpcm.atomic_checkpoint_io": "lit_hpcm.training", "lit_hpcm.checkpoint_io": "lit_hpcm.training"}
_MOVED_CLASS = re.compile(r"\b(" + "|".join(re.escape(m) for m in MOVED_CLASS_MODULES) + r")\.(\w+)")


def _config_files(argv: list[str]) -> list[Path]:
    """The files given with -c/--config (in order)."""
    files = []
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            files.append(Path(argv[i + 1]))
        elif arg.startswith("--config="):
            files.append(Path(arg.split("=", 1)[1]))
    return files


def refuse_moved_class_paths(argv: list[str]) -> None:
    """A `ConfigError` naming the new path when a config file or an argument names a class where lit-hpcm 0.1.0 kept
    it (a run's saved config.yaml of that release), instead of jsonargparse's import error."""
    sources = [(str(path), path.read_text(errors="replace")) for path in _config_files(argv) if path.is_file()]
    for where, text in [*sources, *(("the command line", arg) for arg in argv)]:
        found = _MOVED_CLASS.search(text)
        if found:
            old, name = found.group(0), found.group(2)
            raise ConfigError(f"{where}: class path {old} is {MOVED_CLASS_MODULES[found.group(1)]}.{name} since "
                              "lit-hpcm 0.2.0; replace it there")


def run_lightning(argv: list[str]) -> int:
    """`lit-hpcm fit|validate|test|predict ARGS`; exit status 2 with one line for a bad checkpoint or setting, a
    run that had to stop, or an argument the parser refuses (that one with a hint where the options are listed,
    not the ~90 lines of usage jsonargparse prints)."""
    from ..data import ImageDataModule
    from ..training.module import LitHPCM

    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropAdvert())
    raising = {"exit_on_error": False}  # parser errors as exceptions, for every subcommand's parser too
    try:
        refuse_moved_class_paths(argv)
        HPCMCLI(
            LitHPCM,
            ImageDataModule,
            # LightningCLI warns when given args that sys.argv also holds: pass them only when they differ
            args=None if argv == sys.argv[1:] else argv,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={**raising, **{command: raising for command in LIGHTNING_COMMANDS}},
        )
    except argparse.ArgumentError as err:
        _print_error(argv[0], f"{_one_line(err)}\n(lit-hpcm {argv[0]} --help lists every option)")
        return 2
    except TrainingStopped as err:  # raised mid-epoch: end the progress bar's line (stdout) first
        print(flush=True)
        _print_error(argv[0], _one_line(err))
        return 2
    except (CheckpointError, ConfigError) as err:  # one line, not a traceback
        _print_error(argv[0], _one_line(err))
        return 2
    return 0


def _one_line(err: Exception) -> str:
    """An error's message on one line (jsonargparse indents a second line under the key)."""
    return " ".join(str(err).split())


def _print_error(command: str, message: str) -> None:
    """`lit-hpcm COMMAND: error: MESSAGE` on stderr, once (rank zero) when DDP runs the CLI in every process."""
    if rank_zero_only.rank == 0:
        print(f"lit-hpcm {command}: error: {message}", file=sys.stderr)

"""`lit-hpcm` command line: LightningCLI for fit/validate/test/predict, argparse for the tools.

    lit-hpcm fit|validate|test|predict -c configs/X.yaml [--print_config] [overrides]
    lit-hpcm compress | decompress | eval | import-official | rd-plot | sweep-grid | sweep-report | layers | plot-gamma
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from .checkpoint_io import CheckpointError, read_checkpoint, with_atomic_checkpoints
from .errors import ConfigError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
LIGHTNING_CKPT_KEYWORDS = ("last", "best", "hpc", "registry")  # --ckpt_path values Lightning resolves itself


class HPCMCLI(LightningCLI):
    """LightningCLI over `LitHPCM` and `ImageDataModule`; the config file is saved beside each run.
    Checkpoints are written atomically (`AtomicCheckpointIO`) unless the config names a CheckpointIO."""

    def instantiate_trainer(self, **kwargs):
        plugins = kwargs.pop("plugins", self._get(self.config_init, "trainer", default={}).get("plugins"))
        return super().instantiate_trainer(plugins=with_atomic_checkpoints(plugins), **kwargs)

    def _parse_ckpt_path(self) -> None:
        """LightningCLI would merge the hyper-parameters saved in `--ckpt_path` over the config, so the checkpoint
        silently won over what the user asked (another `test_results`, another `balancing`). Here the config and
        the command line win; the file is only checked: readable, and a Lightning checkpoint rather than a
        weights file (those start a run through `model.init_weights`). Whether it fits the configured model
        (preset, FAMO state) is checked when it loads (`LitHPCM.on_load_checkpoint`), in one clear line."""
        from .checkpoints import WEIGHTS_FORMAT

        if not self.config.get("subcommand"):
            return
        ckpt_path = self.config[self.config.subcommand].get("ckpt_path")
        if not ckpt_path or ckpt_path in LIGHTNING_CKPT_KEYWORDS:
            return
        if Path(ckpt_path).is_dir():
            raise CheckpointError(f"{ckpt_path}: a folder, not a checkpoint file")
        checkpoint = read_checkpoint(ckpt_path)
        if isinstance(checkpoint, dict) and checkpoint.get("format") == WEIGHTS_FORMAT:
            raise CheckpointError(f"{ckpt_path}: a lit-hpcm weights file, not a training checkpoint; to start a run "
                                  f"from these weights use --model.init_weights {ckpt_path}")
        if not (isinstance(checkpoint, dict) and "pytorch-lightning_version" in checkpoint):
            raise CheckpointError(f"{ckpt_path}: not a lit-hpcm training checkpoint (an official HPCM file? "
                                  "start from it with --model.init_weights, or convert it with import-official)")

    def before_predict(self) -> None:
        """`predict` is for files: unless the config has a prediction writer, add a `CodecWriter` that
        stores the .hpcm files and decoded PNGs in <trainer.default_root_dir>/predictions."""
        from lightning.pytorch.callbacks import BasePredictionWriter

        from .predict import CodecWriter

        if not any(isinstance(callback, BasePredictionWriter) for callback in self.trainer.callbacks):
            self.trainer.callbacks.append(CodecWriter(str(Path(self.trainer.default_root_dir) / "predictions")))


def _lightning(argv: list[str]) -> int:
    from .data import ImageDataModule
    from .module import LitHPCM

    try:
        HPCMCLI(
            LitHPCM,
            ImageDataModule,
            # LightningCLI warns when given args that sys.argv also holds: pass them only when they differ
            args=None if argv == sys.argv[1:] else argv,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
        )
    except (CheckpointError, ConfigError) as err:  # a bad --ckpt_path or setting: one line, not a traceback
        print(f"lit-hpcm {argv[0]}: error: {err}", file=sys.stderr)
        return 2
    return 0


def _tools_parser() -> argparse.ArgumentParser:
    from callbacks.commands import register_layers, register_plot_gamma

    from . import commands
    from .evaluation.commands import register_rd_plot, register_sweep_grid, register_sweep_report

    parser = argparse.ArgumentParser(
        prog="lit-hpcm",
        description="Train and evaluate HPCM. Training: lit-hpcm {fit,validate,test,predict} -c CONFIG.yaml",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in LIGHTNING_COMMANDS:  # dispatched to LightningCLI before parsing; listed here so usage names them
        subparsers.add_parser(name, help=f"LightningCLI {name}: lit-hpcm {name} -c CONFIG.yaml [--help]", add_help=False)
    commands.register(subparsers)
    register_rd_plot(subparsers)
    register_sweep_grid(subparsers)
    register_sweep_report(subparsers)
    register_layers(subparsers)
    register_plot_gamma(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        return _lightning(argv)
    args = _tools_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

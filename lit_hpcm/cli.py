"""`lit-hpcm` command line: LightningCLI for fit/validate/test/predict, argparse for the tools.

    lit-hpcm fit|validate|test|predict -c configs/X.yaml [--print_config] [overrides]
    lit-hpcm compress | decompress | eval | import-official | rd-plot | sweep-report | layers | plot-gamma
"""

from __future__ import annotations

import argparse
import sys

from lightning.pytorch.cli import LightningCLI

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


class HPCMCLI(LightningCLI):
    """LightningCLI over `LitHPCM` and `ImageDataModule`; the config file is saved beside each run."""


def _lightning(argv: list[str]) -> int:
    from .data import ImageDataModule
    from .module import LitHPCM

    HPCMCLI(
        LitHPCM,
        ImageDataModule,
        args=argv,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
    )
    return 0


def _tools_parser() -> argparse.ArgumentParser:
    from callbacks.commands import register_layers, register_plot_gamma

    from . import commands
    from .evaluation.commands import register_rd_plot, register_sweep_report

    parser = argparse.ArgumentParser(
        prog="lit-hpcm",
        description="Train and evaluate HPCM. Training: lit-hpcm {fit,validate,test,predict} -c CONFIG.yaml",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    commands.register(subparsers)
    register_rd_plot(subparsers)
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

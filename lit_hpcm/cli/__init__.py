"""`lit-hpcm` command line: LightningCLI for fit/validate/test/predict, argparse for the tools.

    lit-hpcm fit|validate|test|predict -c configs/X.yaml [--print_config] [overrides]
    lit-hpcm compress | decompress | eval | export | import-official | rd-plot | sweep-grid | sweep-report | layers
             | plot-gamma

Every subcommand is registered in `_tools_parser`, the one list of them; each tool module holds its own
argument definitions and runner. Imports are lazy so `lit-hpcm --help` does not load torch's training stack.
"""

from __future__ import annotations

import argparse
import sys

from .commands import LIGHTNING_COMMANDS


def _tools_parser() -> argparse.ArgumentParser:
    from . import callback_commands, codec_commands, evaluation_commands

    parser = argparse.ArgumentParser(
        prog="lit-hpcm",
        description="Train and evaluate HPCM. Training: lit-hpcm {fit,validate,test,predict} -c CONFIG.yaml",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in LIGHTNING_COMMANDS:  # dispatched to LightningCLI before parsing; listed here so usage names them
        subparsers.add_parser(name, help=f"LightningCLI {name}: lit-hpcm {name} -c CONFIG.yaml [--help]", add_help=False)
    for register in (codec_commands.register_compress, codec_commands.register_decompress,
                     codec_commands.register_eval, codec_commands.register_export,
                     codec_commands.register_import_official,
                     evaluation_commands.register_rd_plot, evaluation_commands.register_sweep_grid,
                     evaluation_commands.register_sweep_report, callback_commands.register_layers,
                     callback_commands.register_plot_gamma):
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..codec.compressai_core import load_coding_core
    from ..training.cpu_allocator import keep_freed_memory

    load_coding_core()  # before anything imports CompressAI
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:  # LitHPCM.setup keeps freed memory where it trains on the CPU
        from .lightning import run_lightning

        return run_lightning(argv)
    keep_freed_memory()
    args = _tools_parser().parse_args(argv)
    return args.func(args)

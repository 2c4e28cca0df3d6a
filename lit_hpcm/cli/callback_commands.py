"""``plot-gamma`` and ``layers`` subcommands, registered on the main CLI's argparse subparsers.

Each ``register_*`` adds one subparser whose ``func`` default takes the parsed ``Namespace`` and returns an
exit code: 0 on success, 2 with a one-line message on stderr when the arguments are unusable.
"""

from __future__ import annotations

import argparse

from ..callbacks.gamma_strategies import STRATEGIES
from .reporting import reporting_errors


@reporting_errors("plot-gamma")
def run_plot_gamma(args: argparse.Namespace) -> int:
    """Plot the γ schedule an AdaptiveGamma with these settings sets over a run of ``args.total``."""
    from ..callbacks.adaptive_gamma import AdaptiveGamma, plot_gamma

    options = dict(strategy=args.strategy, gamma0=args.gamma0, gamma_final=args.gamma_final,
                   milestones=args.milestones, factor=args.factor, phase_boundaries=args.phase_boundaries)
    if args.scale_gammas:
        options["scale_gammas"] = dict(zip(("s1", "s2", "s3"), args.scale_gammas))
    if args.total < 1:
        raise ValueError(f"--total must be >= 1, got {args.total}")
    path = plot_gamma(AdaptiveGamma(**options), args.total, args.output)
    print(f"wrote {path}")
    return 0


@reporting_errors("layers")
def run_layers(args: argparse.Namespace) -> int:
    """Print the parameter-group report of ``HPCM(args.preset)``."""
    from ..callbacks.unfreezing import layer_report
    from ..models import HPCM

    print(layer_report(HPCM(args.preset), args.lr, {}, ()))
    return 0


def register_plot_gamma(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``plot-gamma``: a PNG of an AdaptiveGamma schedule over a run."""
    parser = subparsers.add_parser(
        "plot-gamma",
        help="plot an AdaptiveGamma schedule",
        description="Plot FAMO's γ per task over a run as the AdaptiveGamma callback with these settings sets it "
        "(every strategy but plateau, which follows a logged metric).",
    )
    # plateau follows a logged metric: there is no schedule to draw ahead of a run, so it is not offered
    parser.add_argument("--strategy", choices=[s for s in STRATEGIES if s != "plateau"], default="hpcm",
                        help="schedule (default: hpcm)")
    parser.add_argument("--total", type=int, default=300, help="run length in epochs (default: 300)")
    parser.add_argument("-o", "--output", default="gamma.png", help="PNG to write (default: gamma.png)")
    parser.add_argument("--gamma0", type=float, default=0.001, help="starting γ (default: 0.001)")
    parser.add_argument("--gamma-final", type=float, default=0.0001, help="final γ of linear/cosine")
    parser.add_argument("--milestones", type=int, nargs="*", default=[], help="epochs where 'step' decays")
    parser.add_argument("--factor", type=float, default=0.5, help="decay factor of 'step' (default: 0.5)")
    parser.add_argument("--phase-boundaries", type=float, nargs="+", help="phase boundaries as run fractions")
    parser.add_argument("--scale-gammas", type=float, nargs=3, metavar=("S1", "S2", "S3"),
                        help="hierarchical's per-scale γ (default: 0.008 0.006 0.004)")
    parser.set_defaults(func=run_plot_gamma)
    return parser


def register_layers(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``layers``: the parameter groups of a preset (tensors, parameters, LR)."""
    parser = subparsers.add_parser(
        "layers",
        help="list the parameter groups of an HPCM preset",
        description="Build HPCM(preset) on the CPU and print its parameter groups (the units of layer-wise "
        "learning rates and freezing): tensors, parameters and learning rate.",
    )
    parser.add_argument("--preset", default="base", help="HPCM preset (default: base)")
    parser.add_argument("--lr", type=float, default=1e-4, help="base learning rate (default: 1e-4)")
    parser.set_defaults(func=run_layers)
    return parser

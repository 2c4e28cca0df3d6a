"""``rd-plot``, ``sweep-grid`` and ``sweep-report`` subcommands, registered on the main CLI's argparse subparsers.

Each ``register_*`` adds one subparser whose ``func`` default takes the parsed ``Namespace`` and returns
an exit code: 0 on success, 2 with a one-line message on stderr (no traceback) when the inputs are
unusable — a missing file, a curve BD metrics cannot use, a run folder without the hyperparameter.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from ..evaluation.bd import METHODS
from ..evaluation.reference import METRICS, get_reference, list_references
from .reporting import reporting_errors


@reporting_errors("rd-plot")
def run_rd_plot(args: argparse.Namespace) -> int:
    """Plot result files and reference curves, and tabulate BD metrics against the anchor."""
    from ..evaluation.plots import bd_table, curves_outside, plot_limits, rd_plot, write_table
    from ..evaluation.results import read_curve

    sources = [*args.results, *args.ref]
    if not sources:
        raise ValueError("give at least one results file or --ref curve")
    curves = [read_curve(source, args.metric) for source in sources]
    anchor = args.anchor or (args.ref[0] if args.ref else curves[0].name)
    rows = bd_table(curves, anchor, method=args.method)
    focus = [curve.name for curve in curves[: len(args.results)]] or None  # the axes follow the user's curves
    xlim, ylim = (tuple(args.xlim) if args.xlim else None), (tuple(args.ylim) if args.ylim else None)
    png = rd_plot(curves, args.metric, args.output, title=args.title, focus=focus, xlim=xlim, ylim=ylim)
    md_path = png.with_name(f"{png.stem}_bd.md")
    csv_path = png.with_name(f"{png.stem}_bd.csv")
    write_table(rows, md_path, csv_path, title=f"BD metrics vs {anchor} ({args.metric}, {args.method})")
    print(f"wrote {png}, {md_path}, {csv_path}")
    outside = curves_outside(curves, *plot_limits(curves, focus, xlim, ylim))
    if outside:
        print(f"not drawn, outside the axes (marked so in the legend; widen with --xlim or --ylim): "
              f"{', '.join(outside)}")
    return 0


def _reference_help() -> str:
    """The --ref help: the built-in curve names by metric."""
    names = {metric: [n for n in list_references() if get_reference(n).metric == metric] for metric in METRICS}
    return "built-in reference curve(s); " + "; ".join(f"{metric}: {', '.join(names[metric])}" for metric in METRICS)


class _WholeNames(argparse.HelpFormatter):
    """Help text wrapped at spaces only, so curve names such as hpcm-base-kodak stay whole (copyable)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


@reporting_errors("sweep-grid")
def run_sweep_grid(args: argparse.Namespace) -> int:
    """Print the command of every grid point, one shell-quoted line each (what configs/sweeps/grid.sh runs)."""
    from ..sweeps.grid import plan_lines

    print("\n".join(plan_lines(args.sweep)))
    return 0


def _where(conditions: list[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` from ``--where`` as a mapping (``ValueError`` for a condition without ``=``)."""
    pairs = {}
    for condition in conditions:
        key, sep, value = condition.partition("=")
        if not sep or not key:
            raise ValueError(f"--where needs KEY=VALUE, got {condition!r}")
        pairs[key] = value
    return pairs


@reporting_errors("sweep-report")
def run_sweep_report(args: argparse.Namespace) -> int:
    """Write the sweep report for the runs under ``args.runs_dir``."""
    from ..sweeps.report import sweep_report

    report = sweep_report(
        args.runs_dir, args.output, x=args.x, y=args.y, metric=args.metric, top_k=args.top_k, mode=args.mode,
        columns=args.columns, where=_where(args.where), kind=args.kind,
    )
    best = report.rows[0]
    print(f"best run: {best['run']} ({args.metric} = {best[args.metric]:.6g}); report in {args.output}")
    return 0


def register_rd_plot(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``rd-plot``: R-D plot PNG plus ``<stem>_bd.md`` / ``<stem>_bd.csv`` BD tables next to it."""
    parser = subparsers.add_parser(
        "rd-plot",
        help="plot R-D curves and tabulate BD-rate against an anchor",
        description="Plot R-D curves from results JSON files and built-in reference curves, and write "
        "BD-rate / BD-quality of every curve against the anchor next to the plot.",
        formatter_class=_WholeNames,
    )
    parser.add_argument("results", nargs="*", metavar="RESULTS.json", help="results files (CompressAI layout)")
    parser.add_argument(
        "--ref", action="extend", nargs="+", default=[], metavar="NAME", help=_reference_help()
    )
    parser.add_argument("--metric", choices=METRICS, default="psnr", help="quality axis (default: psnr)")
    parser.add_argument(
        "--anchor", metavar="NAME", help="curve name to compare against (default: the first --ref, else the first file)"
    )
    parser.add_argument("--method", choices=METHODS, default="pchip", help="BD interpolation (default: pchip)")
    parser.add_argument("--title", help="plot title (default: names the metric)")
    parser.add_argument("--xlim", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="bpp range (default: the results files' curves, references clipped to it; with "
                        "--xlim alone the quality axis spans every curve within it)")
    parser.add_argument("--ylim", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="quality range (with --ylim alone the bpp axis spans every curve within it)")
    parser.add_argument("-o", "--output", type=Path, default=Path("rd.png"), help="output PNG (default: rd.png)")
    parser.set_defaults(func=run_rd_plot)
    return parser


def register_sweep_grid(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``sweep-grid``: expand a W&B grid sweep file into one ``lit-hpcm`` command line per point."""
    parser = subparsers.add_parser(
        "sweep-grid",
        help="print the commands of a grid sweep file (W&B sweep YAML), one line per run",
        description="Expand a W&B sweep file (method: grid) into the command W&B's agent would run for each grid "
        "point, shell-quoted, one per line: the plan configs/sweeps/grid.sh loops over without a W&B server.",
    )
    parser.add_argument("sweep", type=Path, metavar="SWEEP.yaml")
    parser.set_defaults(func=run_sweep_grid)
    return parser


def register_sweep_report(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``sweep-report``: ranked run table, x × y heatmap and top-k list for a folder of runs."""
    parser = subparsers.add_parser(
        "sweep-report",
        help="rank runs of a hyperparameter sweep and draw a metric heatmap",
        description="Collect Lightning CSV and W&B runs under RUNS_DIR and write table.csv, table.md, "
        "heatmap.png and top_k.md. Hyperparameter keys match dotted keys exactly or by suffix.",
    )
    parser.add_argument("runs_dir", type=Path, metavar="RUNS_DIR")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="report folder")
    parser.add_argument("--x", default="famo_gamma", metavar="KEY", help="hyperparameter on the x axis")
    parser.add_argument("--y", default="famo_w_lr", metavar="KEY", help="hyperparameter on the y axis")
    parser.add_argument("--columns", nargs="+", default=[], metavar="KEY", help="more hyperparameters in the table")
    parser.add_argument(
        "--where", action="append", default=[], metavar="KEY=VALUE",
        help="only runs with this hyperparameter value (repeatable), e.g. --where optimizer=cautious_adam",
    )
    parser.add_argument(
        "--kind", choices=("all", "csv", "wandb"), default="all",
        help="which loggers' runs to read (a run logged by both is found once per kind; default: all)",
    )
    parser.add_argument("--metric", default="val/loss", metavar="NAME", help="metric to rank by (default: val/loss)")
    parser.add_argument("--top-k", type=int, default=5, metavar="K", help="runs listed in top_k.md")
    parser.add_argument("--mode", choices=("min", "max"), default="min", help="whether lower or higher is better")
    parser.set_defaults(func=run_sweep_report)
    return parser

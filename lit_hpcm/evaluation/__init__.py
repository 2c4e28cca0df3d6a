"""Evaluation tools: BD metrics, published reference curves, results files, R-D plots, sweep reports.

The CLI mounts :mod:`lit_hpcm.cli.evaluation_commands` as ``lit-hpcm rd-plot`` and ``lit-hpcm sweep-report``.
"""

from .bd import bd_psnr, bd_rate, overlap
from .plots import bd_table, rd_plot
from .reference import RDCurve, get_reference, list_references
from .results import read_curve, read_results, write_results
from .sweep import sweep_report

__all__ = [
    "RDCurve",
    "bd_psnr",
    "bd_rate",
    "bd_table",
    "get_reference",
    "list_references",
    "overlap",
    "rd_plot",
    "read_curve",
    "read_results",
    "sweep_report",
    "write_results",
]

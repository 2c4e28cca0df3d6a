"""Evaluation tools: BD metrics, published reference curves, results files, R-D plots (sweeps: `lit_hpcm.sweeps`).

The CLI mounts :mod:`lit_hpcm.cli.evaluation_commands` as ``lit-hpcm rd-plot`` and ``lit-hpcm sweep-report``.
The names below load their module on first use, so a training process (which imports
``lit_hpcm.evaluation.measure`` for its test step) does not load bjontegaard or the plotting code.
"""

from __future__ import annotations

from .. import lazy_exports

_WHERE = {
    "bd_psnr": "bd", "bd_rate": "bd", "overlap": "bd",
    "bd_table": "plots", "rd_plot": "plots",
    "RDCurve": "reference", "get_reference": "reference", "list_references": "reference",
    "read_curve": "results", "read_results": "results", "write_results": "results",
}
__all__ = sorted(_WHERE)

__getattr__ = lazy_exports(__name__, _WHERE)

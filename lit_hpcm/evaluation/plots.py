"""Figures and tables for evaluation reports: R-D plots, BD tables, hyperparameter heatmaps.

Figures are drawn on a plain ``matplotlib.figure.Figure`` with the Agg canvas, so nothing here touches
pyplot's global state or needs a display. Tables are lists of row dicts written as both markdown (to
read) and CSV (to load elsewhere) by :func:`write_table`.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .bd import bd_psnr, bd_rate, overlap
from .reference import METRIC_LABELS, RDCurve

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def _save(fig: Figure, out_png: str | Path) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out_png, dpi=150)
    return out_png


def _padded(values: np.ndarray, margin: float) -> tuple[float, float]:
    """(low, high) spanning ``values`` with a relative ``margin`` on each side (1.0 when they are all 0)."""
    low, high = float(values.min()), float(values.max())
    pad = (high - low) * margin or abs(high) * margin or 1.0
    return low - pad, high + pad


def axis_limits(
    curves: Sequence[RDCurve], margin: float = 0.08
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(x, y) limits spanning ``curves`` with a relative ``margin`` on each side."""
    xs = np.concatenate([np.asarray(c.bpp, dtype=float) for c in curves])
    ys = np.concatenate([np.asarray(c.values, dtype=float) for c in curves])
    return _padded(xs, margin), _padded(ys, margin)


Limits = tuple[float, float]
_UNBOUNDED: Limits = (-math.inf, math.inf)


def _clip(p: np.ndarray, q: np.ndarray, xlim: Limits, ylim: Limits) -> list[np.ndarray]:
    """The part of segment p-q ([2] points) inside the box ``xlim`` × ``ylim``: its two ends, or [] (Liang-Barsky)."""
    start, end = 0.0, 1.0
    d = q - p
    for delta, distance in ((-d[0], p[0] - xlim[0]), (d[0], xlim[1] - p[0]),
                            (-d[1], p[1] - ylim[0]), (d[1], ylim[1] - p[1])):
        if delta == 0:
            if distance < 0:
                return []
        elif delta < 0:
            start = max(start, distance / delta)
        else:
            end = min(end, distance / delta)
    return [p + start * d, p + end * d] if start <= end else []


def points_within(curve: RDCurve, xlim: Limits = _UNBOUNDED, ylim: Limits = _UNBOUNDED) -> np.ndarray:
    """[N, 2] (bpp, value) points of ``curve``'s drawn line (points joined in bpp order) inside the box: its points
    there and where its segments cross the box's edges. Empty ([0, 2]) when nothing of it shows in the box."""
    order = np.argsort(curve.bpp)
    line = np.stack([np.asarray(curve.bpp)[order], np.asarray(curve.values)[order]], axis=1)
    segments = zip(line, line[1:]) if len(line) > 1 else [(line[0], line[0])]
    inside = [point for p, q in segments for point in _clip(p, q, xlim, ylim)]
    return np.stack(inside) if inside else np.empty((0, 2))


def plot_limits(
    curves: Sequence[RDCurve],
    focus: Sequence[str] | None = None,
    xlim: Limits | None = None,
    ylim: Limits | None = None,
    margin: float = 0.08,
) -> tuple[Limits, Limits]:
    """The (x, y) limits `rd_plot` draws: ``xlim`` / ``ylim`` where given; an axis left free spans what every curve
    shows within the given one (so ``--xlim`` alone brings the references in that bpp range into view); without
    either, both span the curves named in ``focus`` (all curves when None)."""
    if xlim is None and ylim is None:
        return axis_limits([c for c in curves if not focus or c.name in focus], margin)
    if xlim is not None and ylim is not None:
        return xlim, ylim
    inside = np.concatenate([points_within(c, xlim or _UNBOUNDED, ylim or _UNBOUNDED) for c in curves])
    if not len(inside):
        raise ValueError(f"no curve has points within {'--xlim' if xlim else '--ylim'} {list(xlim or ylim)}")
    return xlim or _padded(inside[:, 0], margin), ylim or _padded(inside[:, 1], margin)


def curves_outside(curves: Sequence[RDCurve], xlim: Limits, ylim: Limits) -> list[str]:
    """Names of the ``curves`` of which nothing is drawn within the axes ``xlim`` × ``ylim``."""
    return [c.name for c in curves if not len(points_within(c, xlim, ylim))]


def rd_plot(
    curves: Sequence[RDCurve],
    metric: str,
    out_png: str | Path,
    title: str | None = None,
    focus: Sequence[str] | None = None,
    xlim: Limits | None = None,
    ylim: Limits | None = None,
) -> Path:
    """Plot bpp against ``metric`` for every curve (markers joined by lines, one legend entry each).

    The axes are `plot_limits`: the curves named in ``focus`` (the user's own; references outside are clipped), or
    all curves; ``xlim`` / ``ylim`` override, an axis left free then spans every curve within the other. A curve
    with nothing within the axes says so in its legend entry. Without ``title`` the plot is titled by its metric.
    """
    if not curves:
        raise ValueError("rd_plot needs at least one curve")
    wrong = [c.name for c in curves if c.metric != metric]
    if wrong:
        raise ValueError(f"curves {', '.join(wrong)} are not {metric} curves")
    unknown = sorted(set(focus or ()) - {c.name for c in curves})
    if unknown:
        raise ValueError(f"focus names curves that are not plotted: {', '.join(unknown)}")
    xlim, ylim = plot_limits(curves, focus, xlim, ylim)
    outside = set(curves_outside(curves, xlim, ylim))
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for curve, marker in zip(curves, itertools.cycle(_MARKERS)):
        order = np.argsort(curve.bpp)
        label = f"{curve.name} (outside these axes)" if curve.name in outside else curve.name
        ax.plot(np.asarray(curve.bpp)[order], np.asarray(curve.values)[order], marker=marker, label=label)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("Bit rate (bpp)")
    ax.set_ylabel(METRIC_LABELS[metric])
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title or f"Rate-distortion: {METRIC_LABELS[metric]} against bit rate")
    return _save(fig, out_png)


def heatmap_plot(
    grid: np.ndarray,
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    x_name: str,
    y_name: str,
    value_name: str,
    out_png: str | Path,
) -> Path:
    """Draw ``grid[row=y, col=x]`` as an annotated heatmap; NaN cells stay blank."""
    fig = Figure(figsize=(1.2 * len(x_labels) + 2.5, 0.8 * len(y_labels) + 2.0), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis")
    for (row, col), value in np.ndenumerate(grid):
        if math.isfinite(value):
            red, green, blue, _ = image.cmap(image.norm(value))
            ink = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
            ax.text(col, row, f"{value:.5g}", ha="center", va="center", color=ink, fontsize=8)
    slanted = max(map(len, x_labels), default=0) > 6  # long labels (lists, mappings) would overlap upright
    ax.set_xticks(range(len(x_labels)), labels=list(x_labels), rotation=30 if slanted else 0,
                  ha="right" if slanted else "center")
    ax.set_yticks(range(len(y_labels)), labels=list(y_labels))
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    fig.colorbar(image, ax=ax, label=value_name)
    return _save(fig, out_png)


def _compare(
    fn: Callable[..., float], axis: Callable[[RDCurve], np.ndarray], anchor: RDCurve, test: RDCurve, method: str
) -> tuple[float | None, float | None, str | None]:
    """(value, overlap fraction on ``axis``, None) or (None, None, reason) when ``fn`` refuses."""
    try:
        value = fn(anchor.bpp, anchor.values, test.bpp, test.values, method)
    except ValueError as err:
        return None, None, str(err)
    return value, overlap(axis(anchor), axis(test)).fraction, None


def bd_table(curves: Sequence[RDCurve], anchor_name: str, method: str = "pchip") -> list[dict]:
    """BD-rate and BD-quality of every curve against the one named ``anchor_name``.

    One row per non-anchor curve with keys ``curve``, ``bd_rate_percent``, ``bd_quality_db`` (BD-PSNR,
    or BD-MS-SSIM in dB for MS-SSIM curves), ``quality_overlap`` and ``rate_overlap`` (shared fraction
    of the integration axis) and ``note``. A value that cannot be computed is ``None`` and ``note``
    says why, so one bad curve does not hide the others.
    """
    names = [c.name for c in curves]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"curve names must be unique for a BD table, repeated: {', '.join(duplicates)}")
    if anchor_name not in names:
        raise ValueError(f"anchor {anchor_name!r} is not among the curves: {', '.join(names)}")
    if len({c.metric for c in curves}) > 1:
        raise ValueError("all curves of a BD table must use the same metric")
    anchor = curves[names.index(anchor_name)]
    rows = []
    for test in curves:
        if test is anchor:
            continue
        rate, quality_overlap, rate_error = _compare(bd_rate, lambda c: np.asarray(c.values), anchor, test, method)
        quality, rate_overlap, quality_error = _compare(bd_psnr, lambda c: np.log10(c.bpp), anchor, test, method)
        notes = list(dict.fromkeys(e for e in (rate_error, quality_error) if e))
        rows.append(
            {
                "curve": test.name,
                "bd_rate_percent": rate,
                "bd_quality_db": quality,
                "quality_overlap": quality_overlap,
                "rate_overlap": rate_overlap,
                "note": "; ".join(notes),
            }
        )
    return rows


def plain(value):
    """Lists and mappings (sweep hyperparameters such as scale weights) as compact JSON; others unchanged."""
    if isinstance(value, (list, tuple, Mapping)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return value


def _markdown_cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(plain(value)).replace("|", "\\|")


def write_table(
    rows: Sequence[dict], md_path: str | Path, csv_path: str | Path | None = None, title: str | None = None
) -> None:
    """Write ``rows`` (dicts sharing the first row's keys) as a markdown table, and as CSV if ``csv_path`` is set."""
    columns = list(rows[0]) if rows else []
    lines = [f"# {title}", ""] if title else []
    if columns:
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        lines.extend("| " + " | ".join(_markdown_cell(row.get(c)) for c in columns) + " |" for row in rows)
    else:
        lines.append("(no rows)")
    Path(md_path).parent.mkdir(parents=True, exist_ok=True)
    Path(md_path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    if csv_path is not None:
        Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
        with open(csv_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows({key: plain(value) for key, value in row.items()} for row in rows)

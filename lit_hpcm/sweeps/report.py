"""The sweep report: rank the runs found under a folder by a metric, and map it over two hyperparameters
(tables and a heat map)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from ..evaluation.plots import heatmap_plot, plain, write_table
from .runs import Run, as_float, find_runs, lookup


@dataclass(frozen=True)
class SweepReport:
    """Ranked table rows (best first; runs without the metric last) and the files written."""

    rows: list[dict]
    files: dict[str, Path]



def _hparam_columns(runs: list[Run], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    columns = []
    for run in runs:
        try:
            columns.append({key: lookup(run.hparams, key) for key in keys})
        except KeyError as err:
            raise ValueError(
                f"run {run.path} has no hyperparameter {err.args[0]!r} (matched exactly or as a dotted "
                f"suffix); its keys: {', '.join(sorted(run.hparams)) or 'none'}"
            ) from None
    return columns


def _label(value: Any) -> str:
    """How a hyperparameter value reads on an axis: numbers in %g, lists and mappings as compact JSON."""
    number = as_float(value)
    return f"{number:g}" if number is not None else str(plain(value))


def _wanted_label(text: str) -> str:
    """The axis label of a ``--where`` value typed on the command line (read as YAML: ``0.002``, ``[entropy]``)."""
    try:
        return _label(yaml.safe_load(text))
    except yaml.YAMLError:
        return text


def _select(runs: list[Run], kind: str, where: Mapping[str, str]) -> list[Run]:
    """The runs of ``kind`` ("all", "csv" or "wandb") whose hyperparameters have every ``where`` value."""
    if kind not in ("all", "csv", "wandb"):
        raise ValueError(f"kind must be 'all', 'csv' or 'wandb', got {kind!r}")
    selected = [run for run in runs if kind in ("all", run.kind)]
    if not selected:
        raise ValueError(f"no {kind} runs found (found: {', '.join(sorted({run.kind for run in runs}))})")
    for key, text in where.items():
        values = [_label(column[key]) for column in _hparam_columns(selected, (key,))]
        kept = [run for run, value in zip(selected, values) if value == _wanted_label(text)]
        if not kept:
            raise ValueError(f"no run has {key} = {text}; its values are {', '.join(sorted(set(values)))}")
        selected = kept
    return selected


def _axis(values: list[Any]) -> list[str]:
    """Distinct labels of ``values``, numbers in numeric order before anything else."""
    distinct = {_label(v): v for v in values}
    return sorted(distinct, key=lambda lab: (as_float(distinct[lab]) is None, as_float(distinct[lab]) or 0.0, lab))


def _has_value(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _grid(rows: list[dict], x: str, y: str, metric: str) -> tuple[np.ndarray, list[str], list[str]]:
    """Mean metric per (y, x) cell over duplicate runs; NaN where no run has a value.

    The axes span every run's values, so combinations that were started but never logged the metric
    show up as blank cells.
    """
    x_axis = _axis([row[x] for row in rows])
    y_axis = _axis([row[y] for row in rows])
    cells: dict[tuple[int, int], list[float]] = {}
    for row in rows:
        if _has_value(row[metric]):
            cell = (y_axis.index(_label(row[y])), x_axis.index(_label(row[x])))
            cells.setdefault(cell, []).append(row[metric])
    grid = np.full((len(y_axis), len(x_axis)), np.nan)
    for cell, values in cells.items():
        grid[cell] = float(np.mean(values))
    return grid, x_axis, y_axis


def sweep_report(
    runs_dir: str | Path,
    out_dir: str | Path,
    x: str = "famo_gamma",
    y: str = "famo_w_lr",
    metric: str = "val/loss",
    top_k: int = 5,
    mode: str = "min",
    columns: Sequence[str] = (),
    where: Mapping[str, str] | None = None,
    kind: str = "all",
) -> SweepReport:
    """Rank the runs under ``runs_dir`` by ``metric`` and write the report to ``out_dir``.

    ``x``, ``y``, ``columns`` and the keys of ``where`` are hyperparameter keys, matched exactly or as the
    suffix of a dotted key (``famo_gamma`` finds ``model.famo_gamma``); ``metric`` is matched exactly.
    ``mode`` says whether lower (``"min"``) or higher (``"max"``) is better. Only runs of ``kind``
    ("all", "csv", "wandb": a run logged by both loggers is found once per kind) whose hyperparameters
    equal every ``where`` value (``{"optimizer": "cautious_adam"}``; values as typed on a command line)
    are reported. Writes ``table.csv`` / ``table.md`` (the runs best first, with ``x``, ``y`` and
    ``columns``), ``heatmap.png`` (``metric`` over the x × y grid, mean over duplicate runs, blank where
    no run finished) and ``top_k.md``.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    runs = _select(find_runs(runs_dir), kind, where or {})
    if not any(metric in run.metrics for run in runs):
        logged = sorted({key for run in runs for key in run.metrics})
        raise ValueError(f"no run logged metric {metric!r}; logged metrics: {', '.join(logged) or 'none'}")
    keys = tuple(dict.fromkeys((x, y, *columns)))
    rows = [
        {"run": run.path, "kind": run.kind, **params, metric: run.metrics.get(metric)}
        for run, params in zip(runs, _hparam_columns(runs, keys))
    ]
    sign = 1.0 if mode == "min" else -1.0
    rows.sort(key=lambda row: (0, sign * row[metric]) if _has_value(row[metric]) else (1, 0.0))
    rows = [{"rank": rank, **row} for rank, row in enumerate(rows, start=1)]

    out = Path(out_dir)
    files = {
        "table.md": out / "table.md",
        "table.csv": out / "table.csv",
        "heatmap.png": out / "heatmap.png",
        "top_k.md": out / "top_k.md",
    }
    better = "lower" if mode == "min" else "higher"
    write_table(rows, files["table.md"], files["table.csv"], title=f"Runs by {metric} ({better} is better)")
    finished = [row for row in rows if _has_value(row[metric])]
    write_table(finished[:top_k], files["top_k.md"], title=f"Top {top_k} runs by {metric} ({better} is better)")
    grid, x_axis, y_axis = _grid(rows, x, y, metric)
    heatmap_plot(grid, x_axis, y_axis, x, y, f"{metric} (mean over runs)", files["heatmap.png"])
    return SweepReport(rows=rows, files=files)

"""Hyperparameter sweep report: collect finished runs, rank them, and map a metric over two hyperparameters.

Two kinds of run folders are recognised anywhere under the runs directory:

* Lightning ``CSVLogger`` versions: a folder with ``metrics.csv``, plus ``hparams.yaml`` and/or the
  ``config.yaml`` that LightningCLI saves next to it.
* W&B runs (``offline-run-*`` / ``run-*``): ``files/config.yaml`` + ``files/wandb-summary.json`` where
  W&B wrote them (online and synced runs), otherwise the run's ``run-*.wandb`` transaction log, which
  is all an offline run of the current W&B client leaves on disk.

A run's hyperparameters are its (nested) config flattened to dotted keys, e.g. ``model.famo_gamma``; a
nested mapping is also kept whole under its own key (``trainer.callbacks.ProgressiveUnfreezing.schedule``
holds the schedule, even an empty one), and LightningCLI's lists of ``class_path`` / ``init_args`` entries
(callbacks, loggers) are keyed by class name. Its final metrics are the last non-empty value of each
``metrics.csv`` column, or the W&B summary.
"""

from __future__ import annotations

import csv
import json
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import yaml

from .plots import heatmap_plot, plain, write_table


@dataclass(frozen=True)
class Run:
    """One run found on disk: its folder relative to the runs directory, flattened config and final metrics."""

    path: str
    kind: str
    hparams: dict[str, Any]
    metrics: dict[str, float]


@dataclass(frozen=True)
class SweepReport:
    """Ranked table rows (best first; runs without the metric last) and the files written."""

    rows: list[dict]
    files: dict[str, Path]


def _is_class_entry(value: Any) -> bool:
    """Whether ``value`` is how LightningCLI writes a class in a config: ``{class_path, init_args}``."""
    return isinstance(value, Mapping) and isinstance(value.get("class_path"), str)


def _by_class_name(entries: list) -> dict[str, Any]:
    """A LightningCLI list of ``{class_path, init_args}`` entries as {class name: init_args}.

    That way ``trainer.callbacks.ProgressiveUnfreezing.frozen_at_start`` names a callback's argument
    wherever the callback sits in the list.
    """
    return {entry["class_path"].rsplit(".", 1)[-1]: entry.get("init_args") or {} for entry in entries}


def _flatten(mapping: Mapping, prefix: str = "") -> dict[str, Any]:
    """Dotted keys for every leaf and every nested mapping (see the module docstring)."""
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, list) and value and all(map(_is_class_entry, value)):
            value = _by_class_name(value)
        flat[name] = value
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
    return flat


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML loader that reads Python-specific tags (``!!python/tuple`` etc.) as plain data.

    Lightning writes ``hparams.yaml`` with ``yaml.dump``, which tags tuples and other Python values;
    for a report the plain list / mapping / string underneath is all that is needed.
    """


def _construct_plain(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return loader.construct_scalar(node)


_YamlLoader.add_multi_constructor("tag:yaml.org,2002:python/", _construct_plain)


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlLoader)
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: invalid YAML ({err})") from None
    return data if isinstance(data, dict) else {}


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err})") from None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _numeric(values: Mapping[str, Any]) -> dict[str, float]:
    """Numeric entries of a flattened summary, without W&B's internal ``_`` keys."""
    return {
        key: number
        for key, value in values.items()
        if not key.startswith("_") and (number := _as_float(value)) is not None
    }


def _lightning_run(root: Path, folder: Path) -> Run:
    hparams: dict[str, Any] = {}
    for name in ("config.yaml", "hparams.yaml"):  # hparams.yaml wins where both define a key
        if (folder / name).is_file():
            hparams.update(_flatten(_load_yaml(folder / name)))
    metrics: dict[str, float] = {}
    with open(folder / "metrics.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            for key, cell in row.items():
                if cell not in (None, "") and (number := _as_float(cell)) is not None:
                    metrics[key] = number
    return Run(str(folder.relative_to(root)), "csv", hparams, metrics)


_LOG_MAGIC = b":W&B"
_LOG_HEADER = 7  # ":W&B", 2-byte magic number, 1-byte format version
_BLOCK = 32768  # records never straddle a block boundary; a record split across blocks is chunked
_CHUNK_HEADER = struct.Struct("<IHB")  # crc32 of (type byte + payload), payload length, chunk type
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _log_payloads(data: bytes) -> Iterator[bytes]:
    """Payloads of a W&B transaction log (LevelDB-style log: 32 KiB blocks of checksummed chunks).

    Stops at the first truncated or corrupt chunk, which is where a crashed run's log ends.
    """
    pos, pending = _LOG_HEADER, b""
    while pos + _CHUNK_HEADER.size <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _CHUNK_HEADER.size:  # block trailer padding
            pos += room
            continue
        checksum, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        payload = data[pos + _CHUNK_HEADER.size : pos + _CHUNK_HEADER.size + length]
        if len(payload) < length or zlib.crc32(bytes([kind]) + payload) != checksum:
            return
        pos += _CHUNK_HEADER.size + length
        if kind == _FULL:
            yield payload
        elif kind == _FIRST:
            pending = payload
        elif kind == _MIDDLE:
            pending += payload
        elif kind == _LAST:
            yield pending + payload
            pending = b""


def _apply(state: dict, record: Any) -> None:
    """Apply a W&B config or summary record's updates and removals to ``state``."""
    for item in record.update:
        state[item.key or ".".join(item.nested_key)] = json.loads(item.value_json)
    for item in record.remove:
        state.pop(item.key or ".".join(item.nested_key), None)


def _read_transaction_log(path: Path) -> tuple[dict, dict]:
    """Config and summary replayed from a ``run-*.wandb`` file."""
    # Imported here: wandb is slow to import and only offline W&B runs need its record definitions.
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if not data.startswith(_LOG_MAGIC):
        raise ValueError(f"{path}: not a W&B transaction log")
    config: dict = {}
    summary: dict = {}
    for payload in _log_payloads(data):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            _apply(config, record.run.config)
        elif kind == "config":
            _apply(config, record.config)
        elif kind == "summary":
            _apply(summary, record.summary)
    return config, summary


def _wandb_run(root: Path, folder: Path) -> Run:
    files = folder / "files"
    if (files / "wandb-summary.json").is_file():
        raw = _load_yaml(files / "config.yaml") if (files / "config.yaml").is_file() else {}
        # W&B's config.yaml wraps every entry as {"value": ..., "desc": ...}.
        config = {k: v.get("value") if isinstance(v, dict) else v for k, v in raw.items()}
        summary = _load_json(files / "wandb-summary.json")
    else:
        config, summary = _read_transaction_log(next(folder.glob("*.wandb")))
    config = {k: v for k, v in config.items() if not k.startswith("_") and k != "wandb_version"}
    return Run(str(folder.relative_to(root)), "wandb", _flatten(config), _numeric(_flatten(summary)))


def _is_wandb_run(folder: Path) -> bool:
    if not folder.name.startswith(("offline-run-", "run-")):
        return False
    return (folder / "files" / "wandb-summary.json").is_file() or any(folder.glob("*.wandb"))


def find_runs(runs_dir: str | Path) -> list[Run]:
    """All Lightning CSV and W&B runs under ``runs_dir`` (see the module docstring), sorted by path.

    A training logged by both loggers appears twice, once per kind.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"runs directory not found: {root}")
    runs = []
    for dirpath, _dirnames, filenames in os.walk(root):
        folder = Path(dirpath)
        if "metrics.csv" in filenames:
            runs.append(_lightning_run(root, folder))
        elif _is_wandb_run(folder):
            runs.append(_wandb_run(root, folder))
    if not runs:
        raise ValueError(
            f"no runs found under {root}: expected Lightning CSVLogger folders (metrics.csv) or "
            "W&B run folders (wandb/offline-run-*)"
        )
    return sorted(runs, key=lambda run: run.path)


def lookup(hparams: Mapping[str, Any], key: str) -> Any:
    """The value of hyperparameter ``key``: an exact dotted key, else the one key ending in ``.key``.

    Several keys ending in ``.key`` are accepted only when they agree; otherwise ``ValueError`` asks for
    the full key. A missing key raises ``KeyError``.
    """
    if key in hparams:
        return hparams[key]
    matches = {k: v for k, v in hparams.items() if k.endswith("." + key)}
    if not matches:
        raise KeyError(key)
    values = list(matches.values())
    if any(v != values[0] for v in values[1:]):
        raise ValueError(f"hyperparameter {key!r} is ambiguous ({', '.join(sorted(matches))}); give the full key")
    return values[0]


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
    number = _as_float(value)
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
    return sorted(distinct, key=lambda lab: (_as_float(distinct[lab]) is None, _as_float(distinct[lab]) or 0.0, lab))


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

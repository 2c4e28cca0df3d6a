"""Finished runs of a sweep found on disk, with their flattened hyperparameters and final metrics.

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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from .wandb_log import read_transaction_log


@dataclass(frozen=True)
class Run:
    """One run found on disk: its folder relative to the runs directory, flattened config and final metrics."""

    path: str
    kind: str
    hparams: dict[str, Any]
    metrics: dict[str, float]




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


def as_float(value: Any) -> float | None:
    """A config or metric value as a float, or None (booleans and text are not numbers here)."""
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
        if not key.startswith("_") and (number := as_float(value)) is not None
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
                if cell not in (None, "") and (number := as_float(cell)) is not None:
                    metrics[key] = number
    return Run(str(folder.relative_to(root)), "csv", hparams, metrics)


def _wandb_run(root: Path, folder: Path) -> Run:
    files = folder / "files"
    if (files / "wandb-summary.json").is_file():
        raw = _load_yaml(files / "config.yaml") if (files / "config.yaml").is_file() else {}
        # W&B's config.yaml wraps every entry as {"value": ..., "desc": ...}.
        config = {k: v.get("value") if isinstance(v, dict) else v for k, v in raw.items()}
        summary = _load_json(files / "wandb-summary.json")
    else:
        config, summary = read_transaction_log(next(folder.glob("*.wandb")))
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

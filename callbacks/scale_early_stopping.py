"""ScaleEarlyStopping: early stopping on several metrics (the per-scale rates and the loss), each on its own.

The three scales of HPCM's context coding converge at different speeds; stopping on ``val/loss`` alone hides
that. Each monitor keeps its own best value, best checkpoint and (adaptive) patience; training stops when
every monitor has run out of patience.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Optional, Union

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from lit_hpcm.callbacks.messages import say
from lit_hpcm.files import write_atomically

DEFAULT_MONITORS = ("val/bpp_s1", "val/bpp_s2", "val/bpp_s3", "val/loss")


@dataclass
class MonitorSpec:
    """How one metric is watched (a monitor's entry in ``monitors`` may override any of these)."""

    patience: int
    min_delta: float
    mode: Literal["min", "max"]
    min_patience: int
    max_patience: int

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if not 1 <= self.min_patience <= self.patience <= self.max_patience:
            raise ValueError(
                f"need 1 <= min_patience <= patience <= max_patience, got "
                f"{self.min_patience}, {self.patience}, {self.max_patience}"
            )
        if self.min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta}")

    def gain(self, previous: float, current: float) -> float:
        """How much ``current`` is better than ``previous`` (positive: better)."""
        return previous - current if self.mode == "min" else current - previous


@dataclass
class MonitorState:
    """What one monitor has seen: its current patience, the best value, the history."""

    patience: int
    wait: int = 0
    best: Optional[float] = None
    best_epoch: Optional[int] = None
    stopped_epoch: Optional[int] = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _checkpoint_name(monitor: str) -> str:
    return f"best-{monitor.replace('/', '_')}.ckpt"


class ScaleEarlyStopping(Callback):
    """Per-monitor early stopping with adaptive patience, best checkpoints, a JSON history and a plot.

    After every validation (not the sanity check), for each monitor still watched, with value ``v``:

    1. adaptive patience: with ``r`` the relative gain over the previous validation (``(prev − v) / |prev|``
       in mode min), patience grows by one while ``r > fast_threshold`` (up to ``max_patience``) and shrinks
       by one while ``r < slow_threshold`` (down to ``min_patience``);
    2. ``v`` better than the best by more than ``min_delta``: new best, ``wait = 0``, the checkpoint
       ``<dirpath>/best-<monitor with / as _>.ckpt`` is replaced; otherwise ``wait += 1``;
    3. ``wait >= patience``: the monitor stops being watched.

    When no monitor is watched any more, ``trainer.should_stop`` is set. At the end of training
    ``<dirpath>/early_stopping.json`` (per monitor: settings, best, stop epoch, history) and
    ``<dirpath>/early_stopping.png`` (one panel per monitor, best epoch marked) are written.

    Args:
        dirpath: folder for the best checkpoints, the JSON history and the plot (None:
            ``<trainer.default_root_dir>/early_stopping``).
        monitors: metric names (all with the defaults below), or a mapping metric -> overrides of
            ``patience, min_delta, mode, min_patience, max_patience``; default the three scale rates
            and ``val/loss``.
        patience, min_delta, mode, min_patience, max_patience: defaults for every monitor.
        fast_threshold, slow_threshold: relative gain per validation above which patience grows and below
            which it shrinks.
        save_best: write the best checkpoint of each monitor.
    """

    def __init__(
        self,
        dirpath: Optional[str] = None,
        monitors: Optional[Union[Sequence[str], dict[str, dict[str, Union[int, float, str]]]]] = None,
        patience: int = 10,
        min_delta: float = 0.0,
        mode: Literal["min", "max"] = "min",
        min_patience: int = 5,
        max_patience: int = 30,
        fast_threshold: float = 0.01,
        slow_threshold: float = 0.001,
        save_best: bool = True,
    ) -> None:
        if slow_threshold > fast_threshold:
            raise ValueError(f"slow_threshold ({slow_threshold}) must be <= fast_threshold ({fast_threshold})")
        monitors = DEFAULT_MONITORS if monitors is None else monitors
        overrides = monitors if isinstance(monitors, Mapping) else {name: {} for name in monitors}
        if not overrides:
            raise ValueError("ScaleEarlyStopping needs at least one monitor")
        defaults = dict(patience=patience, min_delta=min_delta, mode=mode, min_patience=min_patience,
                        max_patience=max_patience)
        known = {f.name for f in fields(MonitorSpec)}
        self.specs: dict[str, MonitorSpec] = {}
        for name, extra in overrides.items():
            unknown = sorted(set(extra or {}) - known)
            if unknown:
                raise ValueError(f"monitor {name!r}: unknown settings {unknown}; valid: {sorted(known)}")
            self.specs[name] = MonitorSpec(**{**defaults, **(extra or {})})
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.fast_threshold, self.slow_threshold = float(fast_threshold), float(slow_threshold)
        self.save_best = save_best
        self.states = {name: MonitorState(patience=spec.patience) for name, spec in self.specs.items()}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = Path(trainer.default_root_dir) / "early_stopping"

    @property
    def watching(self) -> list[str]:
        """Monitors that have not yet run out of patience."""
        return [name for name, state in self.states.items() if state.stopped_epoch is None]

    def update(self, name: str, value: float, epoch: int) -> bool:
        """Feed one validation value to monitor ``name``; True when it is a new best."""
        spec, state = self.specs[name], self.states[name]
        previous = state.history[-1]["value"] if state.history else None
        if previous is not None and previous != 0 and math.isfinite(previous):
            rate = spec.gain(previous, value) / abs(previous)
            if rate > self.fast_threshold:
                state.patience = min(state.patience + 1, spec.max_patience)
            elif rate < self.slow_threshold:
                state.patience = max(state.patience - 1, spec.min_patience)
        improved = math.isfinite(value) and (state.best is None or spec.gain(state.best, value) > spec.min_delta)
        if improved:
            state.best, state.best_epoch, state.wait = value, epoch, 0
        else:
            state.wait += 1
        if state.wait >= state.patience:
            state.stopped_epoch = epoch
        state.history.append({"epoch": epoch, "value": value, "patience": state.patience, "wait": state.wait})
        return improved

    # -- Lightning hooks -----------------------------------------------------------------------------
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        missing = [name for name in self.watching if name not in trainer.callback_metrics]
        if missing:
            raise ValueError(f"ScaleEarlyStopping: {missing} not logged; logged: {sorted(trainer.callback_metrics)}")
        for name in self.watching:
            if self.update(name, float(trainer.callback_metrics[name]), trainer.current_epoch) and self.save_best:
                self._save_best(trainer, name)
            state = self.states[name]
            if state.stopped_epoch is not None:
                say(trainer, f"ScaleEarlyStopping: stopped watching {name} at epoch {state.stopped_epoch} "
                             f"(best {state.best} at epoch {state.best_epoch})")
        if trainer.strategy.reduce_boolean_decision(not self.watching, all=True):
            trainer.should_stop = True

    def _save_best(self, trainer: pl.Trainer, name: str) -> None:
        """Replace the monitor's best checkpoint (atomically with the CLI's `AtomicCheckpointIO`)."""
        trainer.save_checkpoint(self.dirpath / _checkpoint_name(name), weights_only=False)  # full state, said outright

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write_outputs()

    @rank_zero_only
    def write_outputs(self) -> None:
        """Write ``early_stopping.json`` and ``early_stopping.png`` to ``dirpath``."""
        self.dirpath.mkdir(parents=True, exist_ok=True)
        report = {
            name: {**asdict(self.specs[name]), **asdict(self.states[name]),
                   "checkpoint": str(self.dirpath / _checkpoint_name(name)) if self.save_best else None}
            for name in self.specs
        }
        text = json.dumps(report, indent=2) + "\n"
        write_atomically(self.dirpath / "early_stopping.json", lambda handle: handle.write(text.encode()))
        convergence_plot(report, self.dirpath / "early_stopping.png")

    @property
    def state_key(self) -> str:
        """Checkpoint key of this callback's state, distinct per set of monitors, so two instances (say one per
        scale group) each get their own state back on resume."""
        return self._generate_state_key(monitors=sorted(self.specs))

    def state_dict(self) -> dict[str, Any]:
        return {name: asdict(state) for name, state in self.states.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for name, state in state_dict.items():
            if name in self.states:
                self.states[name] = MonitorState(**state)


def convergence_plot(report: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """One panel per monitor: value per epoch, best epoch marked, stop epoch as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(report), 1, figsize=(7, 2.4 * len(report)), squeeze=False)
    for ax, (name, entry) in zip(axes[:, 0], report.items()):
        epochs = [h["epoch"] for h in entry["history"]]
        ax.plot(epochs, [h["value"] for h in entry["history"]], marker=".", label=name)
        if entry["best_epoch"] is not None:
            ax.plot([entry["best_epoch"]], [entry["best"]], "r*", markersize=12, label=f"best (epoch {entry['best_epoch']})")
        if entry["stopped_epoch"] is not None:
            ax.axvline(entry["stopped_epoch"], color="grey", linestyle="--", label=f"stopped (epoch {entry['stopped_epoch']})")
        ax.set(ylabel=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        # plain or scientific tick labels, never an offset above the axis ("1e-6" + "1.305") that reads wrong
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useOffset=False)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    axes[-1, 0].set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

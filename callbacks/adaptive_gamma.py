"""AdaptiveGamma: schedules FAMO's γ (the L2 pull of the task logits toward equal weights) over a run.

γ needs tuning per model (the Balanced R-D authors use 0.001–0.003, see docs/TRAINING.md; γ = 0 does not
converge). A schedule lets a run start with one balance and end with another instead of fixing one value. The
callback only calls the module's balancer's ``set_gamma``, with values from :meth:`AdaptiveGamma.gamma_at`;
:func:`gamma_schedule` and :func:`plot_gamma` tabulate and draw the same values, so the plotted schedule is the
one a run gets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import Callback

from lit_hpcm.training.tasks import TASK_SETS

from .gamma_strategies import PROGRESS_STRATEGIES, STRATEGIES, Strategy

DEFAULT_BOUNDARIES = {"hpcm": (0.1, 0.667), "hierarchical": (0.1, 0.4, 0.667)}
DEFAULT_SCALE_GAMMAS = {"s1": 0.008, "s2": 0.006, "s3": 0.004}
SCALE_TASKS = ("rate_s1", "rate_s2", "rate_s3")
# hierarchical: multipliers of (s1, s2, s3)'s γ in each of the four phases.
HIERARCHICAL_MULTIPLIERS = (
    (1.5, 0.5, 0.5),  # warm-up: s1
    (1.25, 1.25, 0.5),  # s1 + s2
    (1.0, 1.0, 1.0),  # all scales
    (0.5, 0.5, 1.5),  # refinement: s3
)


def _phase(progress: float, boundaries: Sequence[float]) -> tuple[int, float]:
    """(phase index, progress within that phase in [0, 1]) for run progress in [0, 1]."""
    edges = (0.0, *boundaries, 1.0)
    phase = sum(progress >= b for b in boundaries)
    start, end = edges[phase], edges[phase + 1]
    return phase, (progress - start) / (end - start)


def _checked_boundaries(strategy: str, boundaries: Optional[Sequence[float]]) -> tuple[float, ...]:
    """The phase boundaries of ``strategy`` (its default when None), checked: increasing, inside (0, 1)."""
    if strategy not in DEFAULT_BOUNDARIES:
        return ()
    values = tuple(float(b) for b in (boundaries or DEFAULT_BOUNDARIES[strategy]))
    expected = len(DEFAULT_BOUNDARIES[strategy])
    inside = all(0 < b < 1 for b in values) and all(a < b for a, b in zip(values, values[1:]))
    if len(values) != expected or not inside:
        raise ValueError(f"{strategy} needs {expected} increasing phase_boundaries in (0, 1), got {values}")
    return values


class AdaptiveGamma(Callback):
    r"""Set the module's FAMO γ vector at every epoch start (or every N training steps).

    Time ``t`` is the epoch (or the global step with ``every_n_steps``); progress ``p = min(t / total, 1)``.
    Scalar strategies compute a level ``γ(t)`` and set ``γ_i(t) = γ(t) · γ_i(0) / max_j γ_j(0)``, where
    ``γ(0)`` is the module's vector captured at fit start: the level is that of the largest entry and the
    initial per-task ratios are kept (all equal for the usual scalar ``famo_gamma``; an all-zero start counts
    as all equal).

    ============  ===================================================================================
    fixed         ``γ0``
    linear        ``γ0 + (γ_final − γ0) · p``
    cosine        ``γ_final + (γ0 − γ_final) · (1 + cos πp) / 2``
    step          ``γ0 · factor^(number of milestones ≤ t)``
    plateau       starts at ``γ0``; after each validation, when the last ``window`` values of ``monitor``
                  have a relative spread ``(max − min) / |mean|`` below ``threshold``: ``γ ← max(γ · factor,
                  floor)``, then no change for ``cooldown`` validations
    hpcm          three phases (``phase_boundaries``, default 10 % and 66.7 %), ``q`` = progress in the
                  phase: ``γ0 (1 + 0.2q)``, then ``1.2 γ0 (1 − 0.5q)``, then ``0.7 γ0 (1 − 0.3q)``
    hierarchical  per scale (task set "scales" only): ``rate_sk`` gets ``scale_gammas[sk] ×`` the
                  multiplier below; ``distortion`` and ``rate_z`` keep their initial γ. Four phases,
                  ``phase_boundaries`` default 10 %, 40 %, 66.7 %
    ============  ===================================================================================

    ``hierarchical`` multipliers (a larger γ pulls that scale's task weight harder toward the common level,
    so a favoured scale keeps its share of the objective while the others are left to FAMO)::

        phase                   s1     s2     s3
        1  warm-up: s1          1.5    0.5    0.5
        2  s1 + s2              1.25   1.25   0.5
        3  all scales           1.0    1.0    1.0
        4  refinement: s3       0.5    0.5    1.5

    Args:
        strategy: one of the rows above.
        gamma0: starting level (all strategies but hierarchical).
        gamma_final: end level of linear and cosine.
        milestones: epochs (steps with ``every_n_steps``) where ``step`` multiplies by ``factor``.
        factor: multiplier of ``step`` and ``plateau``.
        monitor, window, threshold, cooldown, floor: the ``plateau`` rule above.
        phase_boundaries: fractions of the run where phases change (hpcm: two, hierarchical: three).
        scale_gammas: hierarchical's base γ per scale, keys ``s1, s2, s3`` (default 0.008, 0.006, 0.004).
        every_n_steps: set γ every N optimizer steps instead of at every epoch start.
        total: run length in epochs (or steps); default ``trainer.max_epochs`` (or ``max_steps``, else the
            trainer's estimated number of steps).

    The module's γ (in FAMO's buffers) is in its checkpoint; this callback's state — the captured initial
    vector and the plateau's level, history and cooldown — is in its own, so a resumed run continues the
    same schedule. The module logs ``gamma/<task>`` every training step, so the values set here show up
    there.
    """

    def __init__(
        self,
        strategy: Strategy = "fixed",
        gamma0: float = 0.001,
        gamma_final: float = 0.0001,
        milestones: Sequence[int] = (),
        factor: float = 0.5,
        monitor: str = "val/loss",
        window: int = 5,
        threshold: float = 0.01,
        cooldown: int = 3,
        floor: float = 0.0001,
        phase_boundaries: Optional[Sequence[float]] = None,
        scale_gammas: Optional[dict[str, float]] = None,
        every_n_steps: Optional[int] = None,
        total: Optional[int] = None,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; valid: {STRATEGIES}")
        if strategy == "step" and not milestones:
            raise ValueError("strategy 'step' needs milestones")
        if min(gamma0, gamma_final, floor) < 0 or factor <= 0:
            raise ValueError("gamma0, gamma_final and floor must be >= 0 and factor > 0")
        if window < 2 or cooldown < 0:
            raise ValueError(f"window must be >= 2 and cooldown >= 0, got {window} and {cooldown}")
        if (every_n_steps is not None and every_n_steps < 1) or (total is not None and total < 1):
            raise ValueError("every_n_steps and total must be >= 1 when given")
        boundaries = _checked_boundaries(strategy, phase_boundaries)
        scales = dict(DEFAULT_SCALE_GAMMAS if scale_gammas is None else scale_gammas)
        if set(scales) != set(DEFAULT_SCALE_GAMMAS):
            raise ValueError(f"scale_gammas needs exactly the keys s1, s2, s3, got {sorted(scales)}")
        self.strategy = strategy
        self.gamma0, self.gamma_final = float(gamma0), float(gamma_final)
        self.milestones = sorted(int(m) for m in milestones)
        self.factor = float(factor)
        self.monitor, self.window, self.threshold = monitor, int(window), float(threshold)
        self.cooldown, self.floor = int(cooldown), float(floor)
        self.phase_boundaries = boundaries
        self.scale_gammas = scales
        self.every_n_steps = every_n_steps
        self.total = total
        # state (see state_dict)
        self.initial: Optional[list[float]] = None
        self.level = self.gamma0  # plateau's current level
        self.history: list[float] = []  # plateau: the last `window` monitored values
        self.cooldown_left = 0

    # -- the schedule (pure) ---------------------------------------------------------------------------
    def gamma_at(self, t: int, total: Optional[int], initial: Sequence[float], tasks: Sequence[str]) -> list[float]:
        """γ vector (``tasks`` order) at time ``t`` of a run of ``total``, given the initial vector."""
        if self.strategy in PROGRESS_STRATEGIES and not total:
            raise ValueError(f"strategy {self.strategy!r} needs the run length (total)")
        progress = min(t / total, 1.0) if total else 0.0
        if self.strategy == "hierarchical":
            if tuple(tasks) != TASK_SETS["scales"]:
                raise ValueError(f"strategy 'hierarchical' needs task_set 'scales', got tasks {tuple(tasks)}")
            phase, _ = _phase(progress, self.phase_boundaries)
            per_scale = {
                task: self.scale_gammas[task.removeprefix("rate_")] * multiplier
                for task, multiplier in zip(SCALE_TASKS, HIERARCHICAL_MULTIPLIERS[phase])
            }
            return [per_scale.get(task, value) for task, value in zip(tasks, initial)]
        peak = max(initial)
        shape = [v / peak for v in initial] if peak > 0 else [1.0] * len(initial)
        level = self._level(t, progress)
        return [level * s for s in shape]

    def _level(self, t: int, progress: float) -> float:
        """The scalar level γ(t) of the scalar strategies."""
        g0, g1 = self.gamma0, self.gamma_final
        if self.strategy == "linear":
            return g0 + (g1 - g0) * progress
        if self.strategy == "cosine":
            return g1 + (g0 - g1) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.strategy == "step":
            return g0 * self.factor ** sum(t >= m for m in self.milestones)
        if self.strategy == "plateau":
            return self.level
        if self.strategy == "hpcm":
            phase, q = _phase(progress, self.phase_boundaries)
            return g0 * (1 + 0.2 * q, 1.2 * (1 - 0.5 * q), 0.7 * (1 - 0.3 * q))[phase]
        return g0  # fixed

    def plateau_update(self, value: float) -> None:
        """Feed one monitored value to the plateau rule (see the class docstring)."""
        self.history = [*self.history, float(value)][-self.window :]
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            return
        if len(self.history) < self.window:
            return
        mean = sum(self.history) / len(self.history)
        spread = (max(self.history) - min(self.history)) / abs(mean) if mean else math.inf
        if spread < self.threshold:
            self.level = max(self.level * self.factor, self.floor)
            self.cooldown_left = self.cooldown

    # -- Lightning hooks -------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if getattr(pl_module, "balancing", None) != "famo":
            raise ValueError("AdaptiveGamma needs a module with balancing: famo (γ is FAMO's)")
        if self.initial is None:  # not restored from a checkpoint
            self.initial = [float(v) for v in pl_module.balancer.gamma]
        self.gamma_at(0, self._run_length(trainer), self.initial, pl_module.task_names)  # fail early

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_steps is None:
            self._apply(trainer, pl_module, trainer.current_epoch)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.every_n_steps is not None:
            self._apply(trainer, pl_module, trainer.global_step // self.every_n_steps * self.every_n_steps)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.strategy != "plateau" or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if self.monitor not in trainer.callback_metrics:
            raise ValueError(f"AdaptiveGamma(plateau) monitors {self.monitor!r}, which was not logged")
        self.plateau_update(float(trainer.callback_metrics[self.monitor]))

    def _apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule, t: int) -> None:
        pl_module.balancer.set_gamma(self.gamma_at(t, self._run_length(trainer), self.initial, pl_module.task_names))

    def _run_length(self, trainer: pl.Trainer) -> Optional[int]:
        """``total``, or the trainer's run length in this callback's time unit (None when unknown)."""
        if self.total is not None:
            return self.total
        if self.every_n_steps is None:
            return trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        if trainer.max_steps > 0:
            return trainer.max_steps
        estimate = trainer.estimated_stepping_batches
        return int(estimate) if math.isfinite(estimate) else None

    def state_dict(self) -> dict[str, Any]:
        return {"initial": self.initial, "level": self.level, "history": self.history, "cooldown_left": self.cooldown_left}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.initial = state_dict["initial"]
        self.level = state_dict["level"]
        self.history = list(state_dict["history"])
        self.cooldown_left = state_dict["cooldown_left"]


def gamma_schedule(
    schedule: AdaptiveGamma, total: int, initial: Optional[Sequence[float]] = None, tasks: Optional[Sequence[str]] = None
) -> np.ndarray:
    """The γ vectors [total, n_tasks] that ``schedule`` sets at t = 0 … total − 1.

    ``tasks`` defaults to the "scales" task set for hierarchical and "rd" otherwise, ``initial`` to ``gamma0``
    for every task. The plateau strategy follows a logged metric, so it has no schedule ahead of a run.
    """
    if schedule.strategy == "plateau":
        raise ValueError("strategy 'plateau' follows a logged metric; it has no schedule to compute ahead of a run")
    tasks = tuple(tasks or TASK_SETS["scales" if schedule.strategy == "hierarchical" else "rd"])
    initial = list(initial) if initial is not None else [schedule.gamma0] * len(tasks)
    return np.array([schedule.gamma_at(t, total, initial, tasks) for t in range(total)])


def plot_gamma(
    schedule: AdaptiveGamma,
    total: int,
    path: str | Path,
    initial: Optional[Sequence[float]] = None,
    tasks: Optional[Sequence[str]] = None,
) -> Path:
    """Write a PNG of ``gamma_schedule(schedule, total, initial, tasks)``: one line per distinct task curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = tuple(tasks or TASK_SETS["scales" if schedule.strategy == "hierarchical" else "rd"])
    values = gamma_schedule(schedule, total, initial, tasks)
    unit = "step" if schedule.every_n_steps else "epoch"
    fig, ax = plt.subplots(figsize=(7, 4))
    if np.all(values == values[:, :1]):
        ax.plot(values[:, 0], label="γ (every task)")
    else:
        # tasks can share a curve (distortion and rate_z in hierarchical): a style each keeps both visible
        styles = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)))
        for index, (name, column) in enumerate(zip(tasks, values.T)):
            ax.plot(column, label=f"γ {name}", linestyle=styles[index % len(styles)], linewidth=2.2 - 0.3 * index)
    ax.set(xlabel=unit, ylabel="γ", title=f"AdaptiveGamma: {schedule.strategy} over {total} {unit}s")
    ax.grid(alpha=0.3)
    ax.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


"""ProgressiveUnfreezing: per-group learning-rate multipliers and an epoch schedule of frozen groups.

Fine-tuning HPCM usually keeps the parts that already work (entropy models, context) fixed at first and
releases them later. The groups are the model's parameter groups (``g_a, g_s, h_a, h_s, context, entropy``,
an exact partition); the module builds one optimizer param group per model group, so freezing and
learning rates are expressed per group without ever changing the optimizer's param groups.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from torch import nn

from lit_hpcm.callbacks.messages import say
from lit_hpcm.models import PARAMETER_GROUPS

GROUPS: tuple[str, ...] = tuple(dict.fromkeys(PARAMETER_GROUPS.values()))
DEFAULT_LR_MULTIPLIERS = {"g_a": 1.0, "g_s": 1.0, "h_a": 0.5, "h_s": 0.5, "context": 0.1}
DEFAULT_SCHEDULE = {100: ["h_a", "h_s"], 200: ["context"]}


def _check_groups(names: Iterable[str], what: str) -> None:
    unknown = sorted(set(names) - set(GROUPS))
    if unknown:
        raise ValueError(f"{what}: unknown parameter groups {unknown}; groups are {list(GROUPS)}")


def layer_report(
    module_or_model: nn.Module, lr: float, multipliers: Mapping[str, float], frozen: Iterable[str]
) -> str:
    """A text table of the parameter groups: tensors, parameters, learning rate and whether frozen.

    ``module_or_model`` is an HPCM or a module holding it as ``.model``; a group's LR is
    ``lr × multipliers.get(group, 1)``.
    """
    model = getattr(module_or_model, "model", module_or_model)
    frozen = set(frozen)
    rows = [("group", "tensors", "parameters", "LR", "frozen")]
    total_tensors = total_params = 0
    for group, members in model.parameter_groups().items():
        count = sum(p.numel() for _, p in members)
        total_tensors, total_params = total_tensors + len(members), total_params + count
        lr_text = f"{lr * multipliers.get(group, 1.0):.3g}"
        rows.append((group, str(len(members)), f"{count:,}", lr_text, "yes" if group in frozen else "no"))
    rows.append(("total", str(total_tensors), f"{total_params:,}", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:]))]) for row in rows]
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([lines[0], rule, *lines[1:-1], rule, lines[-1]])


class ProgressiveUnfreezing(Callback):
    """Layer-wise LR multipliers, and groups frozen until the epoch the schedule releases them.

    The frozen set at epoch ``e`` is ``(frozen_at_start ∪ scheduled groups) − groups scheduled at epochs ≤ e``:
    a group named in ``schedule`` is frozen from the start until its epoch; a group only in
    ``frozen_at_start`` stays frozen for the whole run.

    How, and why so:

    - The callback changes the module only through ``set_lr_multipliers`` and ``set_frozen``.
    - ``setup`` (before ``configure_optimizers``) merges ``lr_multipliers`` into the module's, so
      each group's param group starts at ``lr × multiplier`` and LR schedulers (MultiStepLR,
      ReduceLROnPlateau) scale every group from its own base.
    - Every parameter stays in the optimizer; freezing is the module's ``frozen_groups``, whose gradients it
      drops before the step, so frozen parameters and their optimizer state do not move. That is DDP-safe
      (DDP only syncs parameters that required grad when it wrapped the model). On a single process the
      frozen groups also get ``requires_grad=False``, which only saves compute.
    - The frozen set is a function of the epoch, re-applied at every epoch start, so a resumed run is in
      the same state without any callback state; the learning rates come back with the optimizer's state.
      (Lightning's ``BaseFinetuning`` is built for the other design, adding param groups as layers thaw and
      replaying them on resume; nothing of it is needed here.)

    Args:
        lr_multipliers: factor on the module's ``lr`` per group (missing groups: 1); default
            g_a 1, g_s 1, h_a 0.5, h_s 0.5, context 0.1.
        frozen_at_start: groups frozen from the start (default ``["entropy"]``).
        schedule: epoch -> groups unfrozen at the start of that epoch (default
            ``{100: [h_a, h_s], 200: [context]}``).
        report: print the layer report (rank zero) when training starts.
    """

    def __init__(
        self,
        lr_multipliers: Optional[dict[str, float]] = None,
        frozen_at_start: Sequence[str] = ("entropy",),
        schedule: Optional[dict[int, list[str]]] = None,
        report: bool = True,
    ) -> None:
        super().__init__()
        self.lr_multipliers = dict(DEFAULT_LR_MULTIPLIERS if lr_multipliers is None else lr_multipliers)
        self.frozen_at_start = set(frozen_at_start)
        self.schedule = {int(e): list(g) for e, g in (DEFAULT_SCHEDULE if schedule is None else schedule).items()}
        self.report = report
        _check_groups(self.lr_multipliers, "lr_multipliers")
        _check_groups(self.frozen_at_start, "frozen_at_start")
        _check_groups((g for groups in self.schedule.values() for g in groups), "schedule")
        if any(e < 0 for e in self.schedule):
            raise ValueError(f"schedule epochs must be >= 0, got {sorted(self.schedule)}")
        if any(m < 0 for m in self.lr_multipliers.values()):
            raise ValueError(f"lr_multipliers must be >= 0, got {self.lr_multipliers}")
        self.managed = self.frozen_at_start.union(*self.schedule.values())

    def frozen_at(self, epoch: int) -> set[str]:
        """Groups frozen during ``epoch``."""
        released = {g for e, groups in self.schedule.items() if e <= epoch for g in groups}
        return self.managed - released

    # -- Lightning hooks -----------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.set_lr_multipliers(self.lr_multipliers)
        pl_module.set_frozen(self.frozen_at(0), self.managed)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Apply the epoch's frozen set (the optimizer is untouched: every parameter is already in it)."""
        epoch = trainer.current_epoch
        frozen = self.frozen_at(epoch)
        released = pl_module.frozen_groups - frozen
        pl_module.set_frozen(frozen, self.managed)
        if released:
            say(trainer, f"ProgressiveUnfreezing: epoch {epoch}: unfroze {sorted(released)}")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.report:
            frozen = self.frozen_at(trainer.current_epoch)
            say(trainer, layer_report(pl_module, pl_module.base_lr, pl_module.lr_multipliers, frozen))

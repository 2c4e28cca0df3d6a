"""Epoch-based learning-rate schedules of the training recipes."""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence

import torch


def milestone_factor(milestones: Sequence[int], factors: Sequence[float], epoch: int) -> float:
    """lr factor of ``epoch``: 1 before ``milestones[0]``, ``factors[i]`` from ``milestones[i]`` on."""
    factor = 1.0
    for milestone, value in zip(milestones, factors):
        if epoch >= milestone:
            factor = float(value)
    return factor


def milestone_scheduler(optimizer: torch.optim.Optimizer, milestones: Sequence[int],
                        decay: float | Sequence[float]) -> torch.optim.lr_scheduler.LRScheduler:
    """Step schedule over epochs: ``decay`` a float multiplies lr by it at every milestone (MultiStepLR);
    a list gives the factor on the initial lr from each milestone on, e.g. the official HPCM recipe
    1e-4 → 3e-5 → 1e-5 → 1e-6 is milestones [2750, 2850, 2950] with factors [0.3, 0.1, 0.01]."""
    milestones = [int(m) for m in milestones]
    if milestones != sorted(milestones) or any(m < 0 for m in milestones):
        raise ValueError(f"lr_milestones must be increasing epochs >= 0, got {milestones}")
    if isinstance(decay, numbers.Real):
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=float(decay))
    if len(decay) != len(milestones):
        raise ValueError(f"lr_decay as a list needs one factor per milestone ({len(milestones)}), got {list(decay)}")
    # A partial, not an object with attributes: LambdaLR would save those and a resume would restore the old
    # milestones over the configured ones; only its epoch counter is state.
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(milestone_factor, milestones, list(decay)))

"""Freezing HPCM's parameter groups (`HPCM.parameter_groups`: g_a, g_s, h_a, h_s, context, entropy) in a training
step.

Every parameter stays in the optimizer; a frozen group's gradients are dropped after the backward
(`drop_frozen_grads`), which is safe under DDP (every rank still all-reduces the same buckets) and with CUDA graphs
(the graph keeps computing them). Where neither is in use, the groups a callback manages also get requires_grad
switched (`switch_requires_grad`), which only saves compute.
"""

from __future__ import annotations

from typing import Iterable

from torch import nn

from ..models import HPCM


def switch_requires_grad(model: HPCM, frozen: set[str], managed: Iterable[str]) -> None:
    """requires_grad off for the parameters of the `managed` groups in `frozen`, on for the other managed groups."""
    managed = set(managed)
    for group, members in model.parameter_groups().items():
        if group in managed:
            for _, param in members:
                param.requires_grad_(group not in frozen)


def trained_parameters(model: HPCM, frozen: set[str]) -> list[nn.Parameter]:
    """The parameters a step trains: requires_grad and not in a `frozen` group."""
    return [p for name, members in model.parameter_groups().items() if name not in frozen
            for _, p in members if p.requires_grad]


def drop_frozen_grads(model: HPCM, frozen: set[str]) -> None:
    """Set the gradients of the `frozen` groups' parameters to None (before clipping and the optimizer step)."""
    if not frozen:
        return
    groups = model.parameter_groups()
    for group in frozen:
        for _, param in groups[group]:
            param.grad = None

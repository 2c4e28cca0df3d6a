"""Rate-distortion task sets: which task losses FAMO balances.

``"rd"`` balances distortion against the total rate; ``"scales"`` splits the rate into the real per-scale rates
of HPCM (hyperprior ``z`` and the three context-coding scales of ``y``), which partition the total exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from ..models.schedule import SCALES

RATE_PARTS: tuple[str, ...] = ("z", *SCALES)  # what the model's bits are split into: z, then y by coding scale

# The registry of task sets: a config's `task_set` is one of these names.
TASK_SETS: dict[str, tuple[str, ...]] = {
    "rd": ("distortion", "rate"),
    "scales": ("distortion", *(f"rate_{part}" for part in RATE_PARTS)),
}


def task_names(task_set: str) -> tuple[str, ...]:
    """Names of the tasks of ``task_set``, in the order of :func:`task_losses`."""
    if task_set not in TASK_SETS:
        raise ConfigError(f"unknown task_set {task_set!r}; valid: {', '.join(sorted(TASK_SETS))}")
    return TASK_SETS[task_set]


def task_losses(task_set: str, distortion: Tensor, bits: dict[str, Tensor], num_pixels: int) -> Tensor:
    """Task losses [n] of ``task_set``: the distortion followed by rates in bits per pixel.

    Args:
        task_set: a key of :data:`TASK_SETS`.
        distortion: scalar distortion loss (already weighted, e.g. lambda * 255^2 * MSE).
        bits: bits per image [B] for each of the keys ``"z", "s1", "s2", "s3"``.
        num_pixels: pixels of the whole batch, B * H * W.

    ``rate = sum of all bits / num_pixels``; ``rate_X = sum(bits[X]) / num_pixels``, so the ``"scales"`` rates
    sum to the ``"rd"`` rate.
    """
    names = task_names(task_set)
    if set(bits) != set(RATE_PARTS):
        raise ValueError(f"bits needs exactly the keys {RATE_PARTS}, got {tuple(bits)}")
    scale_bits = torch.stack([bits[part].sum() for part in RATE_PARTS])
    rates = scale_bits / num_pixels if task_set == "scales" else scale_bits.sum(0, keepdim=True) / num_pixels
    losses = torch.cat([distortion.reshape(1), rates])
    assert losses.numel() == len(names)
    return losses

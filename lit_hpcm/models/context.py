"""Hierarchical progressive context model: the scheduled coding of y.

    params (h_s output) ─┬─ s1 hyper ──▶ step 0 ─▶ step 1 ──▶ up ─┐
                         ├─ s2 hyper ──────────────────────────── + ─ fuse ─▶ steps 2-4 ─▶ up ─┐
                         └─ s3 hyper ───────────────────────────────────────────────────────── + ─ fuse ─▶ steps 5-10 ─▶ y_hat

A context state of [B, 2M, h, w] travels with the steps: each step's prediction is folded into it by
the scale's window cross-attention cell; between scales it is placed on the finer grid, the new
scale's hyperprior parameters are added, and a 1×1 fusion net mixes it. What each step does with its
prediction (quantize, encode, decode) is the job of a `StepCoder`; this loop is shared by forward,
compress and decompress.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import nn

from .layers import SpatialPrior, WindowCrossAttention, conv1x1
from .masks import LatentLayout
from .presets import HPCMConfig
from .schedule import NUM_CONTEXT_STEPS, PRIOR_OF_SCALE, SCALES, STEPS, Step


class StepCoder(Protocol):
    """What happens to the cells of one step once their entropy parameters are known."""

    def code(self, step: Step, scales: torch.Tensor, means: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Return y_hat on the step's cells, zeros elsewhere ([B, M, h, w] on the step's grid).

        scales, means: [B, M, h, w] predicted for the whole grid; mask: [1, M, h, w] the step's cells.
        """

    def next_scale(self, upsample: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Move any per-grid accumulators to the next finer grid."""


class ProgressiveContext(nn.Module):
    """Entropy parameters of y, step by step, following `schedule.STEPS`.

    Learned parts: one 1×1 adaptor and one channel multiplier per context step (stored in step
    order), the spatial priors (s1 and s2 share one), a window cross-attention cell per scale, and
    a 1×1 fusion net at each scale change.
    """

    def __init__(self, config: HPCMConfig):
        super().__init__()
        m = config.latent_channels
        self.adaptors = nn.ModuleList(conv1x1(3 * m, 3 * m) for _ in range(NUM_CONTEXT_STEPS))
        self.multipliers = nn.ParameterList(nn.Parameter(torch.ones(1, 3 * m, 1, 1)) for _ in range(NUM_CONTEXT_STEPS))
        self.priors = nn.ModuleDict(
            {
                "s1_s2": SpatialPrior(m, *config.prior_s1_s2_depths),
                "s3": SpatialPrior(m, *config.prior_s3_depths),
            }
        )
        self.attention = nn.ModuleDict(
            {
                scale: WindowCrossAttention(2 * m, window, config.attention_heads)
                for scale, window in zip(SCALES, config.windows)
            }
        )
        self.scale_fusion = nn.ModuleList(conv1x1(2 * m, 2 * m) for _ in SCALES[1:])

    def forward(self, params: torch.Tensor, layout: LatentLayout, coder: StepCoder) -> torch.Tensor:
        """params [B, 2M, H, W] ([scales, means] from h_s) -> y_hat [B, M, H, W]."""
        hyper_s1 = layout.hyper_params("s1", params)
        state = hyper_s1
        y_hat = None
        previous = None
        for step in STEPS:
            if previous is not None and step.scale != previous:
                place = _placer(layout, previous)
                y_hat = place(y_hat)
                coder.next_scale(place)
                state = place(state) + layout.hyper_params(step.scale, params)
                state = self.scale_fusion[SCALES.index(step.scale) - 1](state)
            if step.context is None:
                prediction = hyper_s1
            else:
                features = self.adaptors[step.context](torch.cat((state, y_hat), dim=1))
                prediction = self.priors[PRIOR_OF_SCALE[step.scale]](features, self.multipliers[step.context])
                if step is not STEPS[-1]:  # nothing reads the state after the last step
                    state = self.attention[step.scale](prediction, state)
            scales, means = prediction.chunk(2, dim=1)
            step_hat = coder.code(step, scales, means, layout.parts[step.scale][step.part])
            y_hat = step_hat if y_hat is None else y_hat + step_hat
            previous = step.scale
        return y_hat


def _placer(layout: LatentLayout, scale: str) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda t: layout.upsample(scale, t)

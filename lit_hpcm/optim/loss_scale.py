"""Loss-scale priors for FAMO: an R-D-anchored start (lit-hpcm's option, not the Balanced R-D authors' script).

FAMO's model gradient is ``sum_i (z'_i / D_i) grad L_i / c`` with the gaps ``D_i = L_i - m_i``. With the
authors' offsets ``m = -1`` and equal logits, the distortion is weighted by ``1 / (D + 1)``: while
λ·255²·MSE >> 1 (the start of training from scratch) that shrinks the distortion's pull, and a small model can
shed y's bits before its decoder has learnt anything. With each task's prior ``p_i`` a running estimate of its
gap ``D_i``::

    z'_i        = p_i / sum_j p_j                   (equal logits)
    z'_i / D_i  = 1 / sum_j p_j                      (when p is this batch's exact gap)
    gradient    = sum_i grad L_i / (c sum_j p_j)    = the standard R-D gradient, grad (D + R), times a scalar

for every task set whose tasks sum to the R-D loss (``rd``; ``scales``, whose rates partition R). The logits
then tilt the weights away from standard R-D only as far as the tasks' log-improvements differ, and γ pulls them
back: lit-hpcm's reading of the paper's "coarse-to-fine gradient descent approach along standard R-D
optimization trajectories".

The estimate is an exponential moving average of the batches' detached gaps (the first batch sets it). The
caller passes gaps of losses already averaged over DDP ranks, so every rank holds the same estimate; a batch
with a non-finite or non-positive gap leaves it unchanged (decided on the device, no host read). It is a
buffer, so checkpoints carry it and a resume continues it exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LossScalePrior(nn.Module):
    """Running estimate of the task-loss gaps ``L - m`` [n_tasks], used as FAMO's priors.

    Args:
        n_tasks: number of tasks.
        decay: EMA decay per step; 0 uses each batch's own gaps.
    """

    def __init__(self, n_tasks: int, decay: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"loss-scale decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.register_buffer("scale", torch.ones(n_tasks))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def update(self, gaps: Tensor) -> Tensor:
        """Fold the batch's gaps [n_tasks] (identical on every rank) into the estimate and return it (a copy)."""
        gaps = gaps.detach().to(self.scale.dtype)
        usable = torch.all(torch.isfinite(gaps) & (gaps > 0))
        blended = torch.where(self.started, self.decay * self.scale + (1 - self.decay) * gaps, gaps)
        self.scale.copy_(torch.where(usable, blended, self.scale))
        self.started.logical_or_(usable)
        return self.scale.clone()

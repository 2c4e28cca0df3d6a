"""Bit-share priors for FAMO over the scale task set: each rate task weighted by its share of the bits.

Over ``[distortion, rate_z, rate_s1, rate_s2, rate_s3]`` with equal logits, plain FAMO gives the four rates 4/5
of the weight and treats a scale carrying 2 % of the bits like one carrying 60 %. With the share
``pi_k = R_k / R`` of each scale as its prior (distortion prior 1) and the offsets ``m_D`` (distortion) and
``m_k = -pi_k`` (rates)::

    z'       = [1, pi_z, pi_s1, pi_s2, pi_s3] / 2                  (equal logits)
    D_k      = R_k + pi_k = pi_k (R + 1)                            (when pi is the batch's exact share)
    z'_k/D_k = 1 / (2 (R + 1))      for every scale k, the coefficient the "rd" set gives the total rate

so the model gradient ``sum_i (z'_i / D_i) grad L_i / c`` points exactly where the 2-task ``rd`` gradient points.
Its length differs by FAMO's normaliser ``c = sum_i z'_i / D_i``: the scale set counts ``1 / (2 (R + 1))`` four
times, so the gradient is the ``rd`` one times ``c_rd / c_scales`` (a positive scalar, below 1). Adam's step is
invariant to that factor up to its epsilon; gradient clipping sees the shorter vector. FAMO then moves weight
between scales only when their log-rates improve unequally.

The share is an exponential moving average of the batches' detached shares (the first batch sets it), so a
noisy batch does not jerk the priors. Callers pass rates already averaged over DDP ranks, so every rank holds
the same average; it is a buffer, so checkpoints carry it and a resume continues it exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BitSharePrior(nn.Module):
    """Running share of the bits per rate task [n_rates] (sums to 1), from the batches' rates.

    Args:
        n_rates: number of rate tasks (4 for ``scales``: z, s1, s2, s3).
        decay: EMA decay per step; 0 uses each batch's own share.
        floor: smallest share kept, so priors and offsets stay positive when a scale carries no bits.
    """

    def __init__(self, n_rates: int, decay: float = 0.99, floor: float = 1e-4) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"bit-share decay must be in [0, 1), got {decay}")
        if not 0.0 < floor * n_rates < 1.0:
            raise ValueError(f"bit-share floor must be in (0, 1/{n_rates}), got {floor}")
        self.decay = decay
        self.floor = floor
        self.register_buffer("share", torch.full((n_rates,), 1.0 / n_rates))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def update(self, rates: Tensor) -> Tensor:
        """Fold the batch's rates [n_rates] (bpp, identical on every rank) into the share and return it.

        A batch whose rates are not finite or sum to 0 leaves the share unchanged; the choice is made on the
        device, so this never waits for it.
        """
        rates = rates.detach().to(self.share.dtype).clamp_min(0)
        total = rates.sum()
        batch_share = (rates / total.clamp_min(torch.finfo(rates.dtype).tiny)).clamp_min(self.floor)
        batch_share = batch_share / batch_share.sum()
        blended = torch.where(self.started, self.decay * self.share + (1 - self.decay) * batch_share, batch_share)
        usable = torch.isfinite(total) & (total > 0)
        self.share.copy_(torch.where(usable, blended, self.share))
        self.started.logical_or_(usable)
        return self.share.clone()

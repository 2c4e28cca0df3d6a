"""Cautious Adam: Adam whose update keeps only the coordinates where momentum and gradient agree.

Used by Balanced R-D training (CVPR 2025) in place of plain Adam for the codec parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


class CautiousAdam(torch.optim.Optimizer):
    r"""Adam with a per-tensor cautious mask and mask-fraction rescaling.

    For every parameter tensor ``p`` with gradient ``g`` (same shape as ``p``), at its step ``t`` (1-based,
    counted per tensor, so a tensor whose grad was ``None`` on some steps keeps its own bias correction)::

        g_t   = grad + weight_decay * p                      (plain L2, as torch.optim.Adam)
        m_t   = beta1 * m_{t-1} + (1 - beta1) * g_t
        v_t   = beta2 * v_{t-1} + (1 - beta2) * g_t**2
        m_hat = m_t / (1 - beta1**t)
        v_hat = v_t / (1 - beta2**t)
        mask  = 1[m_t * g_t > 0]                              (elementwise, shape of p)
        s     = min(1 / max(mean(mask), min_mask_fraction), max_scale)   (scalar, mean over this tensor)
        p    <- p - lr * m_hat * mask * s / (sqrt(v_hat) + eps)

    The mask drops coordinates whose momentum points against the current gradient; ``s`` restores the update
    magnitude lost to the mask, bounded by ``max_scale`` so a nearly empty mask cannot blow up the step.

    All state needed to continue (``step`` as a 0-dim int64 CPU tensor, ``exp_avg`` = m, ``exp_avg_sq`` = v) lives
    in ``self.state``, so ``state_dict()``/``load_state_dict()`` resume bit-identically. Each param group may have
    its own ``lr`` (layer-wise learning rates) and the optimizer works with any ``torch.optim.lr_scheduler``.
    The step uses ``torch._foreach_*`` ops over all tensors of all groups that share ``betas``, ``eps``,
    ``weight_decay``, ``max_scale`` and ``min_mask_fraction`` (only ``lr`` differs per tensor): a few launches per
    step instead of a few per tensor or per group.
    """

    # Hyper-parameters that must match for groups to share one foreach pass (lr may differ).
    _SHARED = ("betas", "eps", "weight_decay", "max_scale", "min_mask_fraction")

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        max_scale: float = 10.0,
        min_mask_fraction: float = 1e-3,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if not eps >= 0.0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if not max_scale >= 1.0:
            raise ValueError(f"max_scale must be >= 1, got {max_scale}")
        if not 0.0 < min_mask_fraction <= 1.0:
            raise ValueError(f"min_mask_fraction must lie in (0, 1], got {min_mask_fraction}")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            max_scale=max_scale,
            min_mask_fraction=min_mask_fraction,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one update to every parameter that has a gradient; returns the closure's loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        batches: dict[tuple, tuple[list[Tensor], list[float]]] = {}
        for group in self.param_groups:
            key = (tuple(group["betas"]), *(group[name] for name in self._SHARED[1:]))
            params, lrs = batches.setdefault(key, ([], []))
            for p in group["params"]:
                if p.grad is not None:
                    params.append(p)
                    lrs.append(group["lr"])
        for key, (params, lrs) in batches.items():
            if params:
                self._update(dict(zip(self._SHARED, key)), params, lrs)
        return loss

    def _state_of(self, p: Tensor) -> dict[str, Tensor]:
        """The state of ``p``, created (zero moments, step 0) on first use."""
        state = self.state[p]
        if not state:
            if p.grad.is_sparse:
                raise RuntimeError("CautiousAdam does not support sparse gradients")
            state["step"] = torch.zeros((), dtype=torch.int64)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _update(self, group: dict[str, Any], params: list[Tensor], lrs: list[float]) -> None:
        """One cautious Adam step for ``params`` (tensors with a gradient), learning rates ``lrs`` (one each)."""
        beta1, beta2 = group["betas"]
        states = [self._state_of(p) for p in params]
        steps = [s["step"] for s in states]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        grads = [p.grad for p in params]
        if group["weight_decay"] != 0.0:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])

        torch._foreach_add_(steps, 1)
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)

        # mask = 1[m_t * g_t > 0] as 0/1 floats: sign gives -1/0/+1, clamping at 0 keeps the +1s.
        masks = torch._foreach_mul(exp_avgs, grads)
        torch._foreach_sign_(masks)
        torch._foreach_clamp_min_(masks, 0.0)
        # The L1 norm of a 0/1 tensor is its count of ones, in the tensor's dtype: exact for float32 below
        # 2**24 elements (float16/bfloat16 parameters get a rounded mask fraction).
        scales = torch._foreach_norm(masks, 1)
        torch._foreach_div_(scales, [float(p.numel()) for p in params])
        torch._foreach_clamp_min_(scales, group["min_mask_fraction"])
        torch._foreach_reciprocal_(scales)
        torch._foreach_clamp_max_(scales, group["max_scale"])

        # p -= lr / (1 - beta1^t) * m_t * mask * s / (sqrt(v_t) / sqrt(1 - beta2^t) + eps)
        ts = [int(step) for step in steps]  # CPU tensors: no device sync
        torch._foreach_mul_(masks, scales)
        torch._foreach_mul_(masks, exp_avgs)
        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denoms, [(1.0 - beta2**t) ** 0.5 for t in ts])
        torch._foreach_add_(denoms, group["eps"])
        torch._foreach_addcdiv_(params, masks, denoms, [-lr / (1.0 - beta1**t) for lr, t in zip(lrs, ts)])

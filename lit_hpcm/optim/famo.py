"""FAMO task weighting (Liu et al. 2023, "FAMO: Fast Adaptive Multitask Optimization").

Balanced R-D training (CVPR 2025) treats distortion and rate(s) as tasks and lets FAMO balance them. Only the
math is here; when to call it (same batch vs. next batch, DDP all-reduce of the losses) is the caller's policy.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import MutableMapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
"""The inner Adam's betas and eps: torch.optim.Adam's defaults, which the Balanced R-D authors' FAMO uses."""


class FAMO(nn.Module):
    r"""Task logits ``w`` [n] and the loss and logit update of FAMO, with optional task priors.

    With ``z = softmax(w)`` and priors ``p`` (positive, default ones), the task weights are
    ``z' = z * p / sum(z * p) = softmax(w + log p)`` (``p = 1`` gives ``z' = z``). For task losses ``L`` [n]::

        D_i  = L_i - min_i + eps                  (min_i = ``min_losses``, -1 by default: the authors')
        c    = sum_i z'_i / D_i                   (detached)
        loss = sum_i z'_i * log(D_i) / c          (scalar)

    so ``d loss / d L_i = (z'_i / D_i) / sum_j (z'_j / D_j)``: the model gradient is a convex mix of the task
    gradients. After the model step, with the losses ``L'`` of the same batch::

        delta  = log D(L) - log D(L')                              [n]
        grad_w = (d z' / d w)^T delta + gamma * w = z' * (delta - <z', delta>) + gamma * w
        w     <- Adam(w, grad_w, lr=w_lr)         (torch.optim.Adam's arithmetic, betas 0.9/0.999, eps 1e-8)

    The Jacobian is the one of the weights the loss used, ``z'``, not of ``softmax(w)``: since
    ``z' = softmax(w + log p)``, it is ``diag(z') - z' z'^T``; with ``p = 1`` this is plain FAMO.

    ``min_losses = -1`` is what the Balanced R-D authors set (``set_min_losses(tensor([-1, -1]))`` in their
    ``train_balanced.py``): the loss is ``sum z'_i log(L_i + 1)``, a task's per-unit weight ``1 / (L_i + 1)``
    stays <= 1 and ``log`` has a floor, so a rate near 0 cannot take over. ``min_losses = 0`` (FAMO's paper)
    makes the rate's weight ``1 / R``, unbounded as ``R -> 0``.

    ``w`` is an ``nn.Parameter`` with ``requires_grad=False``: it never takes part in the model's autograd graph,
    so DDP ignores it (no unused-parameter errors), and its gradient is set explicitly by :meth:`update`. It must
    not be given to the model's optimizer. The inner Adam's state is three buffers (``adam_exp_avg``,
    ``adam_exp_avg_sq`` [n] and the int64 step count ``adam_step``), so a checkpoint of the owning module
    resumes bit-identically, every ``state_dict()`` entry is a tensor (safetensors can store it, ``torch.equal``
    compares it), and the moments follow ``w`` on ``.to()``/``.cuda()``/``.double()``. Checkpoints that hold
    it in the older layout, as torch.optim.Adam's state dict (``_extra_state``), load too.

    The ``prev_losses``/``has_prev`` buffers let a caller that pairs a step's losses with a later step's
    (e.g. "next batch" mode) keep them in the checkpoint: :meth:`remember` stores, :meth:`take_prev` retrieves
    and clears. Whether something is stored is mirrored on the host, so :meth:`take_prev` never waits for the GPU.

    Loss checks: with ``check_losses=True`` every method that takes losses raises ValueError on non-finite
    losses or losses not above ``min_losses`` (one device-to-host read per call). A training loop that checks
    its losses and gradients itself, once per step, passes ``check_losses=False`` and must undo (via
    ``state_dict``/``load_state_dict``) any update made with invalid losses: they turn ``w`` into NaN.

    Args:
        n_tasks: number of tasks n.
        w_lr: learning rate of the inner Adam on ``w``.
        gamma: L2 coefficient on ``w`` (float or one per task), applied in :meth:`update` (not as Adam decay).
        priors: per-task positive priors ``p`` [n]; ``None`` means ones (plain FAMO). :meth:`set_priors`
            changes them (e.g. every step).
        min_losses: the offsets ``m`` (a float for every task or one per task); losses must stay above them.
        eps: added to the loss gaps ``D`` so ``log`` and ``1/D`` stay finite at the minimum.
        check_losses: validate losses on every call (see above); the shape is always checked.
    """

    def __init__(
        self,
        n_tasks: int,
        w_lr: float = 0.025,
        gamma: float | Sequence[float] = 0.001,
        priors: Sequence[float] | Tensor | None = None,
        min_losses: float | Sequence[float] = -1.0,
        eps: float = 1e-8,
        check_losses: bool = True,
    ) -> None:
        super().__init__()
        if n_tasks < 1:
            raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
        if not w_lr > 0.0:
            raise ValueError(f"w_lr must be > 0, got {w_lr}")
        if not eps > 0.0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.n_tasks = n_tasks
        self.eps = eps
        self.check_losses = check_losses
        self.w = nn.Parameter(torch.zeros(n_tasks), requires_grad=False)
        self.register_buffer("gamma", torch.zeros(n_tasks))
        self.register_buffer("priors", torch.ones(n_tasks))
        self.register_buffer("min_losses", torch.zeros(n_tasks))
        if priors is not None:
            self.set_priors(priors)
        self.set_min_losses(min_losses)
        self.register_buffer("prev_losses", torch.zeros(n_tasks))
        self.register_buffer("has_prev", torch.zeros((), dtype=torch.bool))
        # Host mirrors of has_prev and gamma: reading them, or re-setting an unchanged gamma, costs no device sync.
        self._has_prev_host = False
        self._gamma_host: list[float] = []
        self.set_gamma(gamma)
        self.w_lr = w_lr
        self.register_buffer("adam_exp_avg", torch.zeros(n_tasks))
        self.register_buffer("adam_exp_avg_sq", torch.zeros(n_tasks))
        self.register_buffer("adam_step", torch.zeros((), dtype=torch.int64))  # an integer: never cast
        self._adam_step_host = 0  # host mirror of adam_step: the bias corrections need no device read

    def set_gamma(self, values: float | Sequence[float]) -> None:
        """Set the per-task L2 coefficient on ``w`` in place (device and dtype of the buffer kept).

        ``values`` is one float for all tasks or a sequence of ``n_tasks`` floats; each must be finite and >= 0.
        """
        if isinstance(values, numbers.Real):
            values = [float(values)] * self.n_tasks
        values = [float(v) for v in values]
        if len(values) != self.n_tasks:
            raise ValueError(f"gamma needs one float or {self.n_tasks} values, got {len(values)}: {values}")
        if not all(math.isfinite(v) and v >= 0.0 for v in values):
            raise ValueError(f"gamma values must be finite and >= 0, got {values}")
        stored = torch.tensor(values, dtype=self.gamma.dtype)  # rounded as the buffer holds them
        if stored.tolist() != self._gamma_host:  # a schedule re-sets γ every step; copy only a change
            self.gamma.copy_(stored)
            self._gamma_host = stored.tolist()

    def set_priors(self, priors: Sequence[float] | Tensor) -> None:
        """Set the priors ``p`` [n] in place. A tensor is copied without a device read (the caller keeps it
        finite and positive); a list of floats is checked."""
        if not isinstance(priors, Tensor):
            values = [float(v) for v in priors]
            if len(values) != self.n_tasks or not all(math.isfinite(v) and v > 0 for v in values):
                raise ValueError(f"priors must be {self.n_tasks} finite positive values, got {values}")
            priors = torch.tensor(values, dtype=self.priors.dtype)
        if priors.shape != (self.n_tasks,):
            raise ValueError(f"priors must have shape ({self.n_tasks},), got {tuple(priors.shape)}")
        self.priors.copy_(priors.detach())

    def set_min_losses(self, values: float | Sequence[float] | Tensor) -> None:
        """Set the offsets ``m`` [n] in place: one float for every task, a sequence of n floats, or a tensor
        [n] (copied without a device read)."""
        if isinstance(values, numbers.Real):
            values = [float(values)] * self.n_tasks
        if not isinstance(values, Tensor):
            values = [float(v) for v in values]
            if len(values) != self.n_tasks or not all(math.isfinite(v) for v in values):
                raise ValueError(f"min_losses needs one float or {self.n_tasks} finite values, got {values}")
            values = torch.tensor(values, dtype=self.min_losses.dtype)
        if values.shape != (self.n_tasks,):
            raise ValueError(f"min_losses must have shape ({self.n_tasks},), got {tuple(values.shape)}")
        self.min_losses.copy_(values.detach())

    def weights(self) -> Tensor:
        """Task weights ``z' = softmax(w + log p)`` [n] (detached; sum to 1)."""
        return torch.softmax(self.w.detach() + self.priors.log(), dim=0)

    def balanced_loss(self, losses: Tensor) -> Tensor:
        """FAMO loss ``sum z'_i log(D_i) / c`` (scalar), differentiable w.r.t. ``losses`` [n] only.

        Raises ValueError if ``losses`` is not [n], not finite, or not above ``min_losses`` (skip the step).
        """
        gaps = self._gaps(losses)
        z = self.weights()
        c = (z / gaps.detach()).sum()
        return (z * gaps.log()).sum() / c

    @torch.no_grad()
    def update(self, losses_before: Tensor, losses_after: Tensor) -> None:
        """One inner-Adam step on ``w`` from the log-loss decrease of a model step.

        ``losses_before``/``losses_after`` [n] are the task losses of the same batch before and after the model
        step; they must be identical on all DDP ranks. Raises ValueError on invalid losses, leaving ``w`` as is.
        """
        self._adam_step(self.logit_gradient(losses_before, losses_after))

    def _adam_step(self, grad: Tensor) -> None:
        """One Adam step on ``w`` with gradient ``grad`` [n], in torch.optim.Adam's single-tensor arithmetic (so
        on the CPU exactly torch.optim.Adam's numbers), on the state buffers."""
        beta1, beta2 = ADAM_BETAS
        self._adam_step_host += 1
        self.adam_step.add_(1)
        self.adam_exp_avg.lerp_(grad, 1 - beta1)
        self.adam_exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1**self._adam_step_host
        bias_correction2_sqrt = (1 - beta2**self._adam_step_host) ** 0.5
        denom = (self.adam_exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(ADAM_EPS)
        self.w.addcdiv_(self.adam_exp_avg, denom, value=-self.w_lr / bias_correction1)

    @torch.no_grad()
    def logit_gradient(self, losses_before: Tensor, losses_after: Tensor) -> Tensor:
        """``(d z' / d w)^T delta + gamma * w`` [n], the gradient :meth:`update` gives the inner Adam."""
        delta = self._gaps(losses_before).log() - self._gaps(losses_after).log()
        delta = delta.to(self.w.dtype)
        z = self.weights()  # the Jacobian of z' = softmax(w + log p) w.r.t. w is diag(z') - z' z'^T
        return z * (delta - (z * delta).sum()) + self.gamma * self.w

    def remember(self, losses: Tensor) -> None:
        """Store ``losses`` [n] (detached copy) for a later :meth:`take_prev`; raises ValueError if invalid."""
        self._gaps(losses)  # validation only
        self.prev_losses.copy_(losses.detach())
        self.has_prev.fill_(True)
        self._has_prev_host = True

    def take_prev(self) -> Tensor | None:
        """The losses stored by :meth:`remember` (a copy, [n]) and clear them; ``None`` if nothing is stored."""
        if not self._has_prev_host:
            return None
        self.has_prev.fill_(False)
        self._has_prev_host = False
        return self.prev_losses.clone()

    def _gaps(self, losses: Tensor) -> Tensor:
        """``D = losses - min_losses + eps`` [n], after checking the shape (and finiteness and ``D > 0``)."""
        if losses.shape != (self.n_tasks,):
            raise ValueError(f"FAMO expects {self.n_tasks} task losses, got shape {tuple(losses.shape)}")
        gaps = losses - self.min_losses + self.eps
        if self.check_losses and not bool(torch.all(torch.isfinite(gaps.detach()) & (gaps.detach() > 0))):
            raise ValueError(
                f"FAMO needs finite losses above min_losses {self.min_losses.tolist()}, got {losses.tolist()}"
            )
        return gaps

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Load as ``nn.Module`` does (an older checkpoint's Adam ``_extra_state`` mapped to the buffers first),
        then refresh the host mirrors (one read, at load time)."""
        adopt_adam_extra_state(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._refresh_host_mirrors()

    def _refresh_host_mirrors(self) -> None:
        """Read ``has_prev`` and ``gamma`` back after they changed on the device side (load, move, cast)."""
        if self.gamma.is_meta:  # no values yet (module built on the meta device)
            return
        self._has_prev_host = bool(self.has_prev)
        self._gamma_host = self.gamma.tolist()
        self._adam_step_host = int(self.adam_step)

    def _apply(self, fn: Any, recurse: bool = True) -> FAMO:
        """Move/cast as ``nn.Module`` does, then refresh the host mirrors."""
        super()._apply(fn, recurse)
        self._refresh_host_mirrors()
        return self


def adopt_adam_extra_state(state_dict: MutableMapping[str, Any], prefix: str = "") -> None:
    """Map, in place, a FAMO state dict that keeps the inner Adam as ``<prefix>_extra_state`` (torch.optim.Adam's
    state dict: the layout of older checkpoints) to the buffer entries ``<prefix>adam_*``.

    FAMO's own loading calls this; so does `lit_hpcm.training.checkpoint_io.adopt_older_keys`, before comparing a
    checkpoint's keys with the model's. Does nothing when there is no such entry.
    """
    old = state_dict.pop(prefix + "_extra_state", None)
    if old is None:
        return
    w = state_dict[prefix + "w"]
    moments = old["state"].get(0, {})  # empty before FAMO's first update
    state_dict[prefix + "adam_exp_avg"] = moments.get("exp_avg", torch.zeros_like(w))
    state_dict[prefix + "adam_exp_avg_sq"] = moments.get("exp_avg_sq", torch.zeros_like(w))
    state_dict[prefix + "adam_step"] = torch.as_tensor(moments.get("step", 0)).to(torch.int64)

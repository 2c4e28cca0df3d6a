"""The balancing policy of a training step: how the task losses become the step's gradients, and what is
updated after the optimizer step.

`LitHPCM.training_step` calls, in order: `begin` (returns a snapshot), `backward` (gradients into .grad, returns
the objective), then either `rollback(snapshot)` when the step is skipped (non-finite loss or gradient) or `commit`
once the optimizer has stepped. Three implementations, chosen by `balancing` in `build_balancer`, the one place
that checks the balancing options:

    none  plain sum of the task losses (Adam's R-D loss for the `rd` task set)
    famo  FAMO (Balanced R-D from scratch): logits updated on the same batch re-run after the step, or with the
          next batch's losses (`famo_update`); with bit-share priors for the `scales` task set
    qp    the equality-constrained QP (Balanced R-D for fine-tuning): min-norm affine combination of the
          per-task log-loss gradients, no state across steps

Every rank gets identical inputs (`synced`: task losses averaged over DDP ranks), so every rank keeps the same
state. A balancer is an ``nn.Module`` that owns its state (FAMO's logits and their Adam, the running priors) as
sub-modules; registered once on LitHPCM as ``balancer``, that state is in checkpoints under ``balancer.*``.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..optim.bit_share import BitSharePrior
from ..optim.famo import FAMO
from ..optim.loss_scale import LossScalePrior
from ..optim.qp import gram_matrix, qp_weights

Backward = Callable[[Tensor], None]  # the LightningModule's manual_backward
Parameters = Callable[[], Sequence[Tensor]]  # the parameters this step trains (asked for only by the QP)
Reduce = Callable[[Tensor], Tensor]  # mean over DDP ranks


class Balancer(nn.Module):
    """No balancing: the objective is the sum of the task losses [n_tasks]."""

    def __init__(self) -> None:
        super().__init__()
        self.famo: Optional[FAMO] = None
        self.bit_share: Optional[BitSharePrior] = None
        self.loss_scale: Optional[LossScalePrior] = None

    @property
    def gamma(self) -> Tensor:
        """FAMO's per-task γ [n_tasks] (a copy); what `AdaptiveGamma` reads."""
        raise ValueError("γ exists only with balancing: famo")

    def set_gamma(self, values) -> None:
        """Set FAMO's γ (a float for every task, or one value per task); what `AdaptiveGamma` calls."""
        raise ValueError("γ can only be set with balancing: famo")

    def begin(self, synced: Tensor) -> Optional[dict]:
        """Work due before this step's backward; returns what `restore` needs if the step is skipped."""
        return None

    def backward(self, losses: Tensor, synced: Tensor, backward: Backward, params: Parameters,
                 reduce: Reduce) -> Tensor:
        """Write this step's gradients into the parameters' .grad; return the objective (for logging)."""
        objective = losses.sum()
        backward(objective)
        return objective

    def commit(self, synced: Tensor, losses_again: Callable[[], Tensor]) -> None:
        """Work due after the optimizer step; `losses_again()` re-runs the batch (synced task losses)."""

    def rollback(self, snapshot: Optional[dict]) -> None:
        """Undo `begin` for a skipped step."""

    def weights(self) -> Optional[Tensor]:
        """The task weights [n_tasks] of the last step, to log (None: no weights)."""
        return None


class FamoBalancer(Balancer):
    """FAMO over the task losses, with fixed priors, or running priors set at every step: bit-share priors
    (`bit_share`: the rates' priors and offsets from their shares of the bits) and/or loss-scale priors
    (`loss_scale`: every task's prior its running gap, the R-D-anchored start; offsets from `bit_share` if any)."""

    def __init__(self, famo: FAMO, update: str, bit_share: Optional[BitSharePrior] = None,
                 loss_scale: Optional[LossScalePrior] = None) -> None:
        super().__init__()
        self.famo, self.update, self.bit_share, self.loss_scale = famo, update, bit_share, loss_scale

    @property
    def gamma(self) -> Tensor:
        return self.famo.gamma.detach().clone()

    def set_gamma(self, values) -> None:
        self.famo.set_gamma(values)

    def _running(self) -> dict:
        """The running-prior modules in use, by name."""
        return {name: module for name, module in (("bit_share", self.bit_share), ("loss_scale", self.loss_scale))
                if module is not None}

    def _state(self) -> dict:
        return {"famo": self.famo.state_dict()} | {name: m.state_dict() for name, m in self._running().items()}

    def begin(self, synced: Tensor) -> Optional[dict]:
        if self.update != "next_batch":
            return None
        snapshot = copy.deepcopy(self._state())
        previous = self.famo.take_prev()
        if previous is not None:  # the previous batch's losses before its step, and this batch's after it
            self.famo.update(previous, synced)
        return snapshot

    def objective(self, losses: Tensor, synced: Tensor) -> Tensor:
        """FAMO's loss of the task losses [n_tasks]. With running priors, first fold this batch's losses
        (`synced`, identical on all ranks) into them: bit shares π set the offsets [m_D, −π] and priors [1, π];
        loss-scale priors then replace the priors by the running gaps of `synced` above those offsets."""
        if self.bit_share is not None:
            share = self.bit_share.update(synced[1:])
            self.famo.set_priors(torch.cat([share.new_ones(1), share]))
            self.famo.set_min_losses(torch.cat([self.famo.min_losses[:1], -share]))
        if self.loss_scale is not None:
            self.famo.set_priors(self.loss_scale.update(synced - self.famo.min_losses + self.famo.eps))
        return self.famo.balanced_loss(losses)

    def backward(self, losses, synced, backward, params, reduce) -> Tensor:
        objective = self.objective(losses, synced)
        backward(objective)
        return objective

    def commit(self, synced: Tensor, losses_again: Callable[[], Tensor]) -> None:
        if self.update == "same_batch":
            self.famo.update(synced, losses_again())
        else:
            self.famo.remember(synced)

    def rollback(self, snapshot: Optional[dict]) -> None:
        if snapshot is None:
            return
        self.famo.load_state_dict(snapshot["famo"])
        for name, module in self._running().items():
            module.load_state_dict(snapshot[name])

    def weights(self) -> Tensor:
        return self.famo.weights()


class QPBalancer(Balancer):
    """The second strategy's step: per-task gradients g_i of log(L_i − m_i) over the trained parameters (one
    backward per task over the one forward), averaged over DDP ranks, QP weights w from their Gram matrix, and
    Σ w_i g_i written to .grad.

    Cost: n backward passes instead of 1, and under DDP an all-reduce of n gradient vectors [n, P] instead of
    DDP's one; every rank then holds the same averaged gradients, hence the same w and the same step."""

    def __init__(self, min_losses: Union[float, Sequence[float]]) -> None:
        super().__init__()
        self.min_losses = min_losses
        self.last_weights: Optional[Tensor] = None

    def backward(self, losses, synced, backward, params, reduce) -> Tensor:
        params = params()
        offsets = torch.as_tensor(self.min_losses, dtype=losses.dtype, device=losses.device)
        logs = (losses - offsets).log()
        rows = []
        for i in range(len(logs)):
            grads = torch.autograd.grad(logs[i], params, retain_graph=i < len(logs) - 1, allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                   for g, p in zip(grads, params)]))
        task_grads = reduce(torch.stack(rows))  # [n, P]
        gram = gram_matrix(task_grads)  # float64
        # Non-finite losses give non-finite gradients (the step is then skipped); keep the solve itself defined.
        gram = torch.where(torch.isfinite(gram).all(), gram, torch.eye(len(logs), dtype=gram.dtype, device=gram.device))
        weights = qp_weights(gram).to(task_grads.dtype)
        self.last_weights = weights.detach()
        combined = weights @ task_grads
        start = 0
        for p in params:
            p.grad = combined[start : start + p.numel()].view_as(p).clone()
            start += p.numel()
        return (weights.detach() * logs).sum()

    def weights(self) -> Optional[Tensor]:
        return self.last_weights


def build_balancer(balancing: str, task_set: str, n_tasks: int, *, famo_w_lr: float,
                   famo_gamma: Union[float, Sequence[float]], famo_update: str,
                   famo_min_losses: Union[float, Sequence[float]], task_priors, scale_weights,
                   bit_share_decay: float, loss_scale_decay: float = 0.9) -> Balancer:
    """The balancer a config asks for, after checking every balancing option (one `ConfigError` naming each bad
    one). For FAMO: `scale_weights` (fixed priors [1, 1, s1, s2, s3] of the `scales` set) or `task_priors` (one
    per task, "bit_share", or "loss_scale": the R-D-anchored start, over the `scales` set combined with bit-share
    offsets); the `scales` set defaults to bit-share priors."""
    check_balancing_options(n_tasks, famo_w_lr=famo_w_lr, famo_gamma=famo_gamma, famo_min_losses=famo_min_losses,
                            bit_share_decay=bit_share_decay, loss_scale_decay=loss_scale_decay)
    if balancing == "none":
        return Balancer()
    if balancing == "qp":
        return QPBalancer(famo_min_losses)
    priors = task_priors
    if scale_weights is not None:
        if task_set != "scales" or len(scale_weights) != 3:
            raise ConfigError("scale_weights needs task_set 'scales' and three values [s1, s2, s3]")
        if priors is not None:
            raise ConfigError("give task_priors or scale_weights, not both")
        priors = [1.0, 1.0, *scale_weights]
    if priors is None and task_set == "scales":
        priors = "bit_share"
    bit_share = loss_scale = None
    if priors == "loss_scale":
        loss_scale = LossScalePrior(n_tasks, decay=loss_scale_decay)
        priors = "bit_share" if task_set == "scales" else None  # the scales' offsets still come from their shares
    if priors == "bit_share":
        if task_set != "scales":
            raise ConfigError("task_priors 'bit_share' needs task_set 'scales' (it splits the rate by scale)")
        if not isinstance(famo_min_losses, (int, float)):
            raise ConfigError(f"with task_priors {task_priors!r}, famo_min_losses is one float (the distortion's "
                              "offset); the rates' offsets are minus their bit shares")
        bit_share = BitSharePrior(n_tasks - 1, decay=bit_share_decay)
        priors = None
    # The step checks losses and gradients once (`_non_finite`); FAMO's own per-call checks would add reads.
    famo = FAMO(n_tasks, w_lr=famo_w_lr, gamma=famo_gamma, priors=priors, min_losses=famo_min_losses,
                check_losses=False)
    return FamoBalancer(famo, famo_update, bit_share, loss_scale)


def check_balancing_options(n_tasks: int, *, famo_w_lr: float, famo_gamma, famo_min_losses, bit_share_decay: float,
                            loss_scale_decay: float) -> None:
    """Refuse the balancing values that cannot train, all problems in one `ConfigError` naming the options."""
    problems = []
    gammas = [famo_gamma] if isinstance(famo_gamma, (int, float)) else list(famo_gamma)
    if not all(math.isfinite(gamma) and gamma >= 0 for gamma in gammas):
        problems.append(f"famo_gamma must be finite and >= 0, got {famo_gamma}")
    if not isinstance(famo_min_losses, (int, float)) and len(famo_min_losses) != n_tasks:
        problems.append(f"famo_min_losses needs one float or {n_tasks} values, got {list(famo_min_losses)}")
    if not famo_w_lr > 0:
        problems.append(f"famo_w_lr must be > 0, got {famo_w_lr}")
    for name, value in (("bit_share_decay", bit_share_decay), ("loss_scale_decay", loss_scale_decay)):
        if not 0 <= value < 1:
            problems.append(f"{name} must be in [0, 1), got {value}")
    if problems:
        raise ConfigError("; ".join(problems))

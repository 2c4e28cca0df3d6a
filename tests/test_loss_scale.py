"""The R-D-anchored start (`task_priors: loss_scale`): equal logits give the standard R-D gradient on both task
sets, and the running estimate is a guarded EMA (identical on every DDP rank and resumed exactly: tests/test_module.py)."""

from __future__ import annotations

import pytest
import torch

from lit_hpcm.optim import LossScalePrior
from lit_hpcm.training.module import LitHPCM


def _flat_grad(module: LitHPCM, loss: torch.Tensor) -> torch.Tensor:
    params = [p for p in module.model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


@pytest.mark.parametrize("task_set", ["rd", "scales"])
def test_equal_logits_follow_the_standard_rd_gradient(task_set):
    """FAMO's objective with loss-scale priors and w = 0 has the direction of ∇(λ·255²·MSE + bpp); the authors'
    FAMO (no priors) does not, at the start of training where λ·255²·MSE >> 1."""
    torch.manual_seed(0)
    anchored = LitHPCM(preset="tiny", balancing="famo", task_set=task_set, task_priors="loss_scale", lmbda=0.013)
    authors = LitHPCM(preset="tiny", balancing="famo", task_set="rd", lmbda=0.013)
    authors.model.load_state_dict(anchored.model.state_dict())
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    cosines = []
    for module in (anchored, authors):
        torch.manual_seed(5)  # the same quantization noise for both gradients of a module
        losses, _ = module._losses(x)
        standard = _flat_grad(module, losses.sum())
        torch.manual_seed(5)
        losses, _ = module._losses(x)
        balanced = _flat_grad(module, module.balancer.objective(losses, losses.detach()))
        cosines.append(float(torch.nn.functional.cosine_similarity(standard, balanced, dim=0)))
    assert losses[0] > 10 * losses[1:].sum()  # the start: the distortion dominates
    assert cosines[0] > 1 - 1e-6
    assert cosines[1] < 0.999  # the authors' weights 1/(L + 1) tilt it


def test_loss_scale_is_an_ema_kept_through_bad_batches():
    prior = LossScalePrior(2, decay=0.5)
    first = prior.update(torch.tensor([100.0, 2.0]))
    assert torch.equal(first, torch.tensor([100.0, 2.0]))  # the first batch sets it
    second = prior.update(torch.tensor([50.0, 4.0]))
    assert torch.allclose(second, torch.tensor([75.0, 3.0]))
    for bad in (torch.tensor([float("nan"), 1.0]), torch.tensor([1.0, 0.0]), torch.tensor([float("inf"), 1.0]),
                torch.tensor([-3.0, 1.0])):
        assert torch.equal(prior.update(bad), second)
    fresh = LossScalePrior(2, decay=0.5)
    fresh.load_state_dict(prior.state_dict())
    assert torch.equal(fresh.scale, second) and bool(fresh.started)
    with pytest.raises(ValueError, match="decay"):
        LossScalePrior(2, decay=1.0)


def test_loss_scale_options_are_checked_and_kept_in_the_state_dict():
    module = LitHPCM(preset="tiny", balancing="famo", task_priors="loss_scale")
    assert {"balancer.loss_scale.scale", "balancer.loss_scale.started"} <= set(module.state_dict())
    assert module.balancer.bit_share is None and module.balancer.famo.min_losses.tolist() == [-1.0, -1.0]  # the authors' offsets
    scales = LitHPCM(preset="tiny", balancing="famo", task_set="scales", task_priors="loss_scale")
    assert scales.balancer.bit_share is not None and scales.balancer.loss_scale is not None  # offsets from the bit shares
    with pytest.raises(ValueError, match="loss_scale_decay must be in"):
        LitHPCM(preset="tiny", balancing="famo", task_priors="loss_scale", loss_scale_decay=1.5)
    with pytest.raises(ValueError, match="not both"):
        LitHPCM(preset="tiny", balancing="famo", task_set="scales", task_priors="loss_scale",
                scale_weights=[1.0, 1.0, 1.0])

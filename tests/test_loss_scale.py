"""The R-D-anchored start (`task_priors: loss_scale`): equal logits give the standard R-D gradient on both task
sets, the running estimate is a guarded EMA, identical on every DDP rank, and a resume continues it exactly."""

from __future__ import annotations

import os

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lit_hpcm.module import LitHPCM
from lit_hpcm.optim import LossScalePrior


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
    assert {"loss_scale.scale", "loss_scale.started"} <= set(module.state_dict())
    assert module.bit_share is None and module.famo.min_losses.tolist() == [-1.0, -1.0]  # the authors' offsets
    scales = LitHPCM(preset="tiny", balancing="famo", task_set="scales", task_priors="loss_scale")
    assert scales.bit_share is not None and scales.loss_scale is not None  # offsets from the bit shares
    with pytest.raises(ValueError, match="loss_scale_decay must be in"):
        LitHPCM(preset="tiny", balancing="famo", task_priors="loss_scale", loss_scale_decay=1.5)
    with pytest.raises(ValueError, match="not both"):
        LitHPCM(preset="tiny", balancing="famo", task_set="scales", task_priors="loss_scale",
                scale_weights=[1.0, 1.0, 1.0])


def _batches(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(2, 3, 64, 64, generator=g) for _ in range(n)]


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    options = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    return L.Trainer(**(options | kwargs))


def test_resume_continues_the_loss_scale_bit_identically(tmp_path):
    kwargs = dict(preset="tiny", optimizer="cautious_adam", balancing="famo", task_priors="loss_scale", lr=1e-3)
    data = _batches(3)

    def fit(max_epochs, ckpt=None, save=None):
        torch.manual_seed(0)
        module = LitHPCM(**kwargs)
        trainer = _trainer(tmp_path, max_epochs=max_epochs)
        trainer.fit(module, DataLoader(data, batch_size=None), ckpt_path=ckpt)
        if save:
            trainer.save_checkpoint(save)
        return module

    straight = fit(2)
    fit(1, save=tmp_path / "mid.ckpt")
    resumed = fit(2, ckpt=tmp_path / "mid.ckpt")
    for key, value in straight.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, resumed.state_dict()[key]), key
    assert bool(straight.loss_scale.started) and not torch.equal(straight.loss_scale.scale, torch.ones(2))


class _RecordRankState(L.Callback):
    def __init__(self, folder: str):
        self.folder = folder

    def on_train_end(self, trainer, pl_module):
        torch.save({"scale": pl_module.loss_scale.scale.clone(), "w": pl_module.famo.w.detach().clone()},
                   os.path.join(self.folder, f"rank{trainer.global_rank}.pt"))


def test_two_gloo_ranks_hold_the_same_loss_scale(tmp_path):
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", optimizer="cautious_adam", balancing="famo", task_priors="loss_scale", lr=1e-3)
    loader = DataLoader(_batches(4), batch_size=None)  # other images on each rank: only the all-reduce agrees
    trainer = _trainer(tmp_path, max_steps=2, devices=2, strategy="ddp_spawn", use_distributed_sampler=True,
                       callbacks=[_RecordRankState(str(tmp_path))])
    trainer.fit(module, loader)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert torch.equal(ranks[0]["scale"], ranks[1]["scale"]) and torch.equal(ranks[0]["w"], ranks[1]["w"])
    assert not torch.equal(ranks[0]["scale"], torch.ones(2))

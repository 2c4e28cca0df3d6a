"""Balanced R-D as the authors run it: offsets, bit-share priors over the scale task set, recipe settings."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lit_hpcm.optim import BitSharePrior
from lit_hpcm.optim.schedules import milestone_scheduler
from lit_hpcm.training.module import LitHPCM


def _objective_gradient(module: LitHPCM, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(flat model gradient of the balanced objective, task losses, FAMO's normaliser c) for batch x."""
    torch.manual_seed(5)  # the same quantization noise for every module
    losses, _ = module._losses(x)
    objective = module.balancer.objective(losses, losses.detach())
    params = [p for p in module.model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(objective, params, allow_unused=True)
    flat = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])
    famo = module.balancer.famo
    c = (famo.weights() / (losses.detach() - famo.min_losses + famo.eps)).sum()
    return flat, losses.detach(), c


def test_scales_with_bit_share_priors_follow_the_rd_gradient_exactly():
    """Equal logits, priors = the batch's exact bit shares, offsets [-1, -shares]: the scale set's model
    gradient is the 2-task gradient times c_rd / c_scales (FAMO's normalisers), i.e. the same direction."""
    torch.manual_seed(0)
    rd = LitHPCM(preset="tiny", balancing="famo", task_set="rd", lmbda=0.013)
    scales = LitHPCM(preset="tiny", balancing="famo", task_set="scales", lmbda=0.013, bit_share_decay=0.0)
    scales.model.load_state_dict(rd.model.state_dict())
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    g_rd, losses_rd, c_rd = _objective_gradient(rd, x)
    g_sc, losses_sc, c_sc = _objective_gradient(scales, x)

    assert torch.allclose(losses_sc[1:].sum(), losses_rd[1], rtol=1e-5)  # the same forward
    share = scales.balancer.bit_share.share
    assert torch.allclose(share, losses_sc[1:] / losses_sc[1:].sum(), rtol=1e-5)  # no floor involved
    assert torch.allclose(scales.balancer.famo.min_losses, torch.cat([torch.tensor([-1.0]), -share]))
    assert torch.allclose(scales.balancer.famo.weights(), torch.cat([torch.tensor([0.5]), share / 2]), rtol=1e-5)
    cosine = torch.nn.functional.cosine_similarity(g_rd, g_sc, dim=0)
    assert cosine > 1 - 1e-5
    assert torch.allclose(g_sc * c_sc, g_rd * c_rd, rtol=1e-3, atol=1e-6 * g_rd.abs().max())


def test_bit_share_is_a_running_share_kept_through_bad_batches():
    prior = BitSharePrior(4, decay=0.5)
    first = prior.update(torch.tensor([1.0, 1.0, 2.0, 4.0]))
    assert torch.allclose(first, torch.tensor([0.125, 0.125, 0.25, 0.5]))  # the first batch sets it
    second = prior.update(torch.tensor([2.0, 2.0, 2.0, 2.0]))
    assert torch.allclose(second, (first + 0.25) / 2)
    for bad in (torch.tensor([1.0, float("nan"), 1.0, 1.0]), torch.zeros(4), torch.tensor([float("inf")] * 4)):
        assert torch.equal(prior.update(bad), second)
    tiny = BitSharePrior(4, decay=0.0).update(torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert tiny.min() > 0 and torch.allclose(tiny.sum(), torch.tensor(1.0))  # floored: priors stay positive
    fresh = BitSharePrior(4, decay=0.5)
    fresh.load_state_dict(prior.state_dict())
    assert torch.equal(fresh.share, second) and bool(fresh.started)


def test_priors_and_offsets_per_task_set():
    scales = LitHPCM(preset="tiny", balancing="famo", task_set="scales")
    assert scales.balancer.bit_share is not None and "balancer.bit_share.share" in scales.state_dict()
    rd = LitHPCM(preset="tiny", balancing="famo", task_set="rd")
    assert rd.balancer.bit_share is None and rd.balancer.famo.min_losses.tolist() == [-1.0, -1.0]
    legacy = LitHPCM(preset="tiny", balancing="famo", task_set="rd", famo_min_losses=0.0)
    assert legacy.balancer.famo.min_losses.tolist() == [0.0, 0.0]
    fixed = LitHPCM(preset="tiny", balancing="famo", task_set="scales", scale_weights=[2.0, 1.0, 1.0])
    assert fixed.balancer.bit_share is None and fixed.balancer.famo.priors.tolist() == [1.0, 1.0, 2.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="bit_share' needs task_set 'scales'"):
        LitHPCM(preset="tiny", balancing="famo", task_set="rd", task_priors="bit_share")
    with pytest.raises(ValueError, match="famo_min_losses is one float"):
        LitHPCM(preset="tiny", balancing="famo", task_set="scales", famo_min_losses=[-1.0] * 5)


def test_lr_scales_with_the_number_of_processes(monkeypatch):
    module = LitHPCM(preset="tiny", lr=2e-4, lr_scale_with_world_size=True)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    module.trainer = trainer
    assert module.base_lr == pytest.approx(2e-4)
    monkeypatch.setattr(L.Trainer, "world_size", property(lambda self: 4))  # what a 4-process run reports
    optimizer = module.configure_optimizers()
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(8e-4)] * len(optimizer.param_groups)
    assert LitHPCM(preset="tiny", lr=2e-4).base_lr == pytest.approx(2e-4)  # off by default


def test_milestone_factors_give_the_official_hpcm_schedule():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=1e-4)
    scheduler = milestone_scheduler(optimizer, [2750, 2850, 2950], [0.3, 0.1, 0.01])
    seen = {}
    for epoch in range(3001):
        seen[epoch] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    assert seen[2749] == pytest.approx(1e-4) and seen[2750] == pytest.approx(3e-5)
    assert seen[2850] == pytest.approx(1e-5) and seen[2950] == pytest.approx(1e-6) and seen[3000] == pytest.approx(1e-6)
    with pytest.raises(ValueError, match="one factor per milestone"):
        milestone_scheduler(optimizer, [10, 20], [0.5])


def test_plateau_scheduler_waits_for_its_start_epoch(tmp_path):
    """The authors step ReduceLROnPlateau only after epoch 50; here after epoch 2, patience 0, on a
    monitored value that never improves: the lr drops at the first validation from the start epoch on."""
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", lr=1e-3, lr_scheduler="plateau", plateau_patience=0, lr_decay=0.5,
                     plateau_start_epoch=2, scheduler_monitor="val/constant")
    lrs = []

    class Constant(L.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            pl_module.log("val/constant", 1.0)

        def on_train_epoch_end(self, trainer, pl_module):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    images = [torch.rand(1, 3, 64, 64) for _ in range(1)]
    trainer = L.Trainer(accelerator="cpu", max_epochs=5, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, num_sanity_val_steps=0, callbacks=[Constant()])
    trainer.fit(module, DataLoader(images, batch_size=None), DataLoader(images, batch_size=None))
    # epochs 0, 1: no step; epoch 2 records "1.0" as best, epoch 3 has no improvement → ×0.5, epoch 4 → ×0.25
    assert lrs[:3] == [pytest.approx(1e-3)] * 3
    assert lrs[3:] in ([pytest.approx(1e-3), pytest.approx(5e-4)], [pytest.approx(5e-4), pytest.approx(2.5e-4)])

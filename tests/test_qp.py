"""Balanced R-D's second strategy (balancing: qp): the weights against a direct solve, training steps, DDP."""

from __future__ import annotations

import os
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch.utils.data import DataLoader

from lit_hpcm.optim.qp import qp_weights
from lit_hpcm.training.freezing import trained_parameters
from lit_hpcm.training.module import LitHPCM


def _kkt_solve(gram: np.ndarray) -> np.ndarray:
    """min w^T G w s.t. 1^T w = 1 from its KKT system [[2G, 1], [1^T, 0]] [w; mu] = [0; 1]."""
    n = gram.shape[0]
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, :n] = 2 * gram
    kkt[:n, n] = 1.0
    kkt[n, :n] = 1.0
    rhs = np.zeros(n + 1)
    rhs[n] = 1.0
    return np.linalg.solve(kkt, rhs)[:n]


@pytest.mark.parametrize("n,dim,seed", [(2, 50, 0), (2, 7, 1), (5, 40, 2), (5, 300, 3)])
def test_weights_match_a_direct_solve_of_the_qp(n, dim, seed):
    rng = np.random.default_rng(seed)
    grads = rng.normal(size=(n, dim)) * rng.uniform(0.01, 100, size=(n, 1))  # very different scales
    gram = grads @ grads.T
    got = qp_weights(torch.tensor(gram)).numpy()
    assert got.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(got, _kkt_solve(gram), rtol=1e-6, atol=1e-9)
    numeric = minimize(lambda w: w @ gram @ w, np.full(n, 1 / n), method="SLSQP", tol=1e-14,
                       constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}])
    assert got @ gram @ got <= numeric.fun * (1 + 1e-6) + 1e-12  # nothing on the plane has a smaller norm


def test_two_tasks_closed_form_and_parallel_gradients():
    g_r, g_d = np.array([1.0, 0.0, 2.0]), np.array([0.5, 1.5, -1.0])
    gram = np.stack([g_r, g_d]) @ np.stack([g_r, g_d]).T
    expected_r = (g_d @ g_d - g_r @ g_d) / ((g_r - g_d) @ (g_r - g_d))
    assert qp_weights(torch.tensor(gram)).tolist() == pytest.approx([expected_r, 1 - expected_r], rel=1e-9)
    parallel = np.outer([1.0, 2.0], [1.0, 2.0])  # rank 1: the ridge keeps it solvable and the sum is 1
    w = qp_weights(torch.tensor(parallel))
    assert torch.isfinite(w).all() and float(w.sum()) == pytest.approx(1.0)


def _batches(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(2, 3, 64, 64, generator=g) for _ in range(n)]


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    options = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    return L.Trainer(**(options | kwargs))


@pytest.mark.parametrize("optimizer", ["adam", "cautious_adam"])
@pytest.mark.parametrize("task_set", ["rd", "scales"])
def test_a_few_qp_steps_train_with_weights_summing_to_one(tmp_path, optimizer, task_set):
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", optimizer=optimizer, balancing="qp", task_set=task_set, lr=1e-3)
    before = module.model.g_a[0].weight.detach().clone()
    _trainer(tmp_path, max_steps=2).fit(module, DataLoader(_batches(2), batch_size=None))
    assert not torch.equal(before, module.model.g_a[0].weight)
    assert module.skipped_steps == 0
    assert torch.isfinite(module.balancer.weights()).all()
    assert float(module.balancer.weights().sum()) == pytest.approx(1.0, abs=1e-5)


def test_qp_gradient_is_the_weighted_sum_of_the_task_gradients(tmp_path):
    """What reaches the optimizer is Σ w_i ∇log(L_i + 1) with the logged weights (no clipping here)."""
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", balancing="qp", task_set="rd", clip_grad_norm=None)
    module.trainer = _trainer(tmp_path)
    x = _batches(1)[0]
    torch.manual_seed(3)
    losses, _ = module._losses(x)
    trained = partial(trained_parameters, module.model, module.frozen_groups)
    module.balancer.backward(losses, losses.detach(), None, trained, lambda t: t)
    got = torch.cat([p.grad.reshape(-1) for p in trained()])
    torch.manual_seed(3)
    losses, _ = module._losses(x)
    params = trained()
    per_task = []
    for i in range(2):
        grads = torch.autograd.grad((losses[i] + 1).log(), params, retain_graph=True, allow_unused=True)
        per_task.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]))
    w = module.balancer.weights()
    assert torch.allclose(got, w[0] * per_task[0] + w[1] * per_task[1], rtol=1e-4, atol=1e-9)
    gram = torch.stack(per_task) @ torch.stack(per_task).T
    assert torch.allclose(w.double(), torch.tensor(_kkt_solve(gram.double().numpy())), rtol=1e-4)


class _RecordRankState(L.Callback):
    def __init__(self, folder: str):
        self.folder = folder

    def on_train_end(self, trainer, pl_module):
        torch.save({"w": pl_module.balancer.weights().clone(), "g_a": pl_module.model.g_a[0].weight.detach().clone()},
                   os.path.join(self.folder, f"qp_rank{trainer.global_rank}.pt"))


def test_two_process_ddp_gives_identical_qp_weights_and_models(tmp_path):
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", optimizer="cautious_adam", balancing="qp", lr=1e-3)
    # different images per rank: only averaging the task gradients keeps the weights identical
    trainer = _trainer(tmp_path, max_steps=2, devices=2, strategy="ddp_spawn", use_distributed_sampler=True,
                       callbacks=[_RecordRankState(str(tmp_path))])
    trainer.fit(module, DataLoader(_batches(4), batch_size=None))
    ranks = [torch.load(tmp_path / f"qp_rank{r}.pt") for r in (0, 1)]
    assert torch.equal(ranks[0]["w"], ranks[1]["w"]) and torch.isfinite(ranks[0]["w"]).all()
    assert torch.equal(ranks[0]["g_a"], ranks[1]["g_a"])

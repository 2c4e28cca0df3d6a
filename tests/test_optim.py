"""CautiousAdam and FAMO against hand-computed numbers, plus checkpoint round trips."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from lit_hpcm.optim import FAMO, CautiousAdam

EPS = 1e-8


# --------------------------------------------------------------------------------------------- CautiousAdam


def reference_cautious_adam(p, grads, lr, betas=(0.9, 0.999), eps=EPS, weight_decay=0.0, max_scale=10.0):
    """Plain-float cautious Adam on one flat parameter (a list), one step per entry of ``grads``."""
    b1, b2 = betas
    p = list(p)
    m = [0.0] * len(p)
    v = [0.0] * len(p)
    for t, g in enumerate(grads, start=1):
        g = [gi + weight_decay * pi for gi, pi in zip(g, p)]
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
        mask = [1.0 if mi * gi > 0 else 0.0 for mi, gi in zip(m, g)]
        s = min(1 / max(sum(mask) / len(mask), 1e-3), max_scale)
        for i in range(len(p)):
            m_hat = m[i] / (1 - b1**t)
            v_hat = v[i] / (1 - b2**t)
            p[i] -= lr * m_hat * mask[i] * s / (math.sqrt(v_hat) + eps)
    return p


def run_cautious_adam(p0, grads, **kwargs):
    p = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    opt = CautiousAdam([p], **kwargs)
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return p.detach().tolist()


def test_first_step_is_signed_lr():
    # Step 1: m_hat = g, v_hat = g^2, all m*g > 0 so s = 1: p1 = p0 - lr * g / (|g| + eps).
    p0, g = [1.0, -2.0, 3.0, 0.5], [0.1, -0.2, 0.3, -0.4]
    expected = [pi - 0.1 * gi / (abs(gi) + EPS) for pi, gi in zip(p0, g)]
    assert run_cautious_adam(p0, [g], lr=0.1) == pytest.approx(expected, rel=1e-12)


def test_mask_drops_entries_and_scale_is_clipped():
    # One nonzero grad out of 20: mask has 1 entry (0 * 0 is not > 0), mean 0.05, 1/0.05 = 20 clipped to 10.
    p0 = [0.0] * 20
    g = [0.5] + [0.0] * 19
    p1 = run_cautious_adam(p0, [g], lr=0.01)
    assert p1[0] == pytest.approx(-0.01 * 10 * 0.5 / (0.5 + EPS), rel=1e-12)
    assert p1[1:] == [0.0] * 19


def test_mask_on_sign_flip_rescales_by_inverse_fraction():
    # Step 2: m2 = 0.09 + 0.1 * g2 stays positive, so entries with g2 < 0 are dropped: mask [0, 1, 0, 1], s = 2.
    p0, g1, g2 = [0.0, 0.0, 0.0, 0.0], [1.0] * 4, [-0.01, 1.0, -0.05, 2.0]
    p1 = [-0.1 * 1 / (1 + EPS)] * 4
    bc1, bc2 = 1 - 0.9**2, 1 - 0.999**2
    expected = list(p1)
    for i in (1, 3):
        m2 = 0.9 * 0.1 + 0.1 * g2[i]
        v2 = 0.999 * 0.001 + 0.001 * g2[i] ** 2
        expected[i] -= 0.1 * 2 * (m2 / bc1) / (math.sqrt(v2 / bc2) + EPS)
    got = run_cautious_adam(p0, [g1, g2], lr=0.1)
    assert got == pytest.approx(expected, rel=1e-12)


def test_several_steps_match_reference_per_tensor():
    # Two tensors in one group: each gets its own mask fraction and scale; weight decay is plain L2.
    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (7,)]
    p0 = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    grads = [[torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes] for _ in range(6)]
    params = [p.clone().requires_grad_() for p in p0]
    opt = CautiousAdam(params, lr=0.05, betas=(0.8, 0.99), weight_decay=0.1)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()
    for k, p in enumerate(params):
        ref = reference_cautious_adam(
            p0[k].flatten().tolist(),
            [step[k].flatten().tolist() for step in grads],
            lr=0.05,
            betas=(0.8, 0.99),
            weight_decay=0.1,
        )
        assert p.detach().flatten().tolist() == pytest.approx(ref, rel=1e-10)


def test_param_groups_lr_and_none_grads():
    a = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    frozen = torch.tensor([5.0], dtype=torch.float64, requires_grad=True)
    opt = CautiousAdam([{"params": [a], "lr": 0.1}, {"params": [b, frozen], "lr": 0.01}])
    a.grad = torch.tensor([0.5, -0.5], dtype=torch.float64)
    b.grad = torch.tensor([2.0], dtype=torch.float64)
    opt.step()
    assert a.tolist() == pytest.approx([1.0 - 0.1, 2.0 + 0.1], rel=1e-7)
    assert b.tolist() == pytest.approx([3.0 - 0.01], rel=1e-7)
    assert frozen.tolist() == [5.0]
    assert frozen not in opt.state


def test_groups_sharing_hyperparameters_step_as_separate_optimizers():
    """Groups are batched into one foreach pass per set of shared hyper-parameters; lr stays per group."""
    gen = torch.Generator().manual_seed(3)
    p0 = [torch.randn(4, generator=gen, dtype=torch.float64) for _ in range(3)]
    grads = [[torch.randn(4, generator=gen, dtype=torch.float64) for _ in range(3)] for _ in range(4)]
    settings = [{"lr": 0.1}, {"lr": 0.02}, {"lr": 0.05, "betas": (0.5, 0.9), "weight_decay": 0.1}]
    together = [p.clone().requires_grad_() for p in p0]
    alone = [p.clone().requires_grad_() for p in p0]
    joint = CautiousAdam([{"params": [p], **kw} for p, kw in zip(together, settings)])
    separate = [CautiousAdam([p], **kw) for p, kw in zip(alone, settings)]
    for step_grads in grads:
        for a, b, g in zip(together, alone, step_grads):
            a.grad, b.grad = g.clone(), g.clone()
        joint.step()
        for opt in separate:
            opt.step()
    for a, b in zip(together, alone):
        assert torch.equal(a, b)


def test_lr_scheduler_drives_the_step():
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = CautiousAdam([p], lr=0.1)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1], gamma=0.1)
    p.grad = torch.ones(1, dtype=torch.float64)
    opt.step()
    sched.step()
    before = p.item()
    opt.step()  # constant grad keeps m_hat / sqrt(v_hat) = 1, so the move is exactly the new lr
    assert before - p.item() == pytest.approx(0.01, rel=1e-7)


def test_cautious_adam_state_dict_round_trip_continues_identically():
    gen = torch.Generator().manual_seed(1)
    grads = [[torch.randn(5, generator=gen), torch.randn(2, 3, generator=gen)] for _ in range(6)]

    def make(params):
        return CautiousAdam([{"params": [params[0]], "lr": 1e-2}, {"params": [params[1]], "lr": 1e-3}])

    def run(params, opt, step_grads):
        for gs in step_grads:
            for p, g in zip(params, gs):
                p.grad = g.clone()
            opt.step()

    params_a = [torch.randn(5, generator=gen).requires_grad_(), torch.randn(2, 3, generator=gen).requires_grad_()]
    opt_a = make(params_a)
    run(params_a, opt_a, grads[:3])
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in params_a], "opt": opt_a.state_dict()}, buffer)
    run(params_a, opt_a, grads[3:])

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    params_b = [p.clone().requires_grad_() for p in saved["params"]]
    opt_b = make(params_b)
    opt_b.load_state_dict(saved["opt"])
    run(params_b, opt_b, grads[3:])
    for pa, pb in zip(params_a, params_b):
        assert torch.equal(pa, pb)


# --------------------------------------------------------------------------------------------- FAMO


def softmax(w):
    e = [math.exp(x) for x in w]
    return [x / sum(e) for x in e]


def make_famo(w, **kwargs):
    """A float64 FAMO with logits w; priors, offsets and γ set again after the cast, so they are not the
    float32-rounded values the buffers were built with."""
    famo = FAMO(len(w), **kwargs).double()
    famo.w.copy_(torch.tensor(w, dtype=torch.float64))
    for name, setter in (("priors", famo.set_priors), ("min_losses", famo.set_min_losses), ("gamma", famo.set_gamma)):
        if name in kwargs:
            setter(kwargs[name])
    return famo


def loss_and_grad(famo, losses):
    L = torch.tensor(losses, dtype=torch.float64, requires_grad=True)
    loss = famo.balanced_loss(L)
    loss.backward()
    return loss.item(), L.grad.tolist()


def expected_loss_and_grad(z, losses, offset=-1.0):
    """FAMO's loss and d loss / d L with D = L - offset + eps (offset -1: the authors' and FAMO's default)."""
    D = [li - offset + EPS for li in losses]
    c = sum(zi / di for zi, di in zip(z, D))
    return sum(zi * math.log(di) for zi, di in zip(z, D)) / c, [zi / di / c for zi, di in zip(z, D)]


def test_balanced_loss_and_gradient():
    w, losses = [0.3, -0.2, 0.1], [2.0, 0.5, 1.2]
    famo = make_famo(w)
    loss, grad = loss_and_grad(famo, losses)
    exp_loss, exp_grad = expected_loss_and_grad(softmax(w), losses)
    assert loss == pytest.approx(exp_loss, rel=1e-12)
    assert grad == pytest.approx(exp_grad, rel=1e-12)
    assert sum(grad) == pytest.approx(1.0, rel=1e-12)  # a convex mix of the task gradients
    assert famo.w.grad is None


def test_unit_priors_are_plain_famo():
    w, losses = [0.7, -0.4], [0.9, 0.05]
    exp_loss, exp_grad = expected_loss_and_grad(softmax(w), losses)
    for famo in (make_famo(w), make_famo(w, priors=[1.0, 1.0])):
        loss, grad = loss_and_grad(famo, losses)
        assert loss == pytest.approx(exp_loss, rel=1e-12)
        assert grad == pytest.approx(exp_grad, rel=1e-12)


def test_priors_reweight_the_gradient_mix():
    # w = 0, priors [2, 1, 1]: z' = [0.5, 0.25, 0.25]; dloss/dL_i = (z'_i / D_i) / sum_j (z'_j / D_j).
    losses = [1.0, 2.0, 4.0]
    famo = make_famo([0.0, 0.0, 0.0], priors=[2.0, 1.0, 1.0])
    assert famo.weights().tolist() == pytest.approx([0.5, 0.25, 0.25], rel=1e-12)
    _, grad = loss_and_grad(famo, losses)
    _, exp_grad = expected_loss_and_grad([0.5, 0.25, 0.25], losses)
    assert grad == pytest.approx(exp_grad, rel=1e-12)
    _, plain_grad = loss_and_grad(make_famo([0.0, 0.0, 0.0]), losses)
    assert grad[0] / grad[1] == pytest.approx(2 * plain_grad[0] / plain_grad[1], rel=1e-12)


def test_update_is_softmax_jacobian_plus_gamma_then_adam():
    # gamma exactly representable in float32, the dtype FAMO's buffers are created in
    w0, gamma, lr = [0.2, -0.1, 0.4], [2**-10, 2**-9, 3 * 2**-10], 0.025
    steps = [([2.0, 0.5, 1.2], [1.8, 0.49, 1.0]), ([1.8, 0.49, 1.0], [1.7, 0.45, 0.99])]
    famo = make_famo(w0, gamma=gamma, w_lr=lr)

    w, m, v = list(w0), [0.0] * 3, [0.0] * 3
    for t, (before, after) in enumerate(steps, start=1):
        famo.update(torch.tensor(before, dtype=torch.float64), torch.tensor(after, dtype=torch.float64))
        z = softmax(w)
        delta = [math.log(b + 1 + EPS) - math.log(a + 1 + EPS) for b, a in zip(before, after)]
        jac = [[(z[i] if i == j else 0.0) - z[i] * z[j] for j in range(3)] for i in range(3)]  # d z_i / d w_j
        g = [sum(jac[i][j] * delta[i] for i in range(3)) + gamma[j] * w[j] for j in range(3)]
        m = [0.9 * mj + 0.1 * gj for mj, gj in zip(m, g)]
        v = [0.999 * vj + 0.001 * gj * gj for vj, gj in zip(v, g)]
        w = [
            wj - lr * (mj / (1 - 0.9**t)) / (math.sqrt(vj / (1 - 0.999**t)) + EPS)
            for wj, mj, vj in zip(w, m, v)
        ]
        assert famo.w.tolist() == pytest.approx(w, rel=1e-10)
    assert famo.w.grad is None and not famo.w.requires_grad


def test_famo_state_dict_round_trip_continues_identically():
    gen = torch.Generator().manual_seed(2)
    losses = [torch.rand(3, generator=gen) + 0.1 for _ in range(8)]

    class Owner(nn.Module):  # stands in for the LightningModule holding FAMO
        def __init__(self):
            super().__init__()
            self.famo = FAMO(3, gamma=[0.001, 0.0, 0.003], priors=[1.0, 2.0, 1.0])

    a = Owner()
    for before, after in zip(losses[:3], losses[1:4]):
        a.famo.update(before, after)
    a.famo.remember(losses[3])
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = Owner()
    b.load_state_dict(torch.load(buffer, weights_only=True))

    assert {"famo.adam_exp_avg", "famo.adam_exp_avg_sq", "famo.adam_step"} <= set(a.state_dict())
    assert torch.equal(b.famo.take_prev(), losses[3])
    for owner in (a, b):
        for before, after in zip(losses[4:7], losses[5:8]):
            owner.famo.update(before, after)
    assert torch.equal(a.famo.w, b.famo.w)
    assert torch.equal(a.famo.weights(), b.famo.weights())


def test_inner_adam_matches_torch_adam_bit_for_bit():
    """The buffered Adam step gives exactly the numbers torch.optim.Adam (what FAMO used before) gives."""
    gen = torch.Generator().manual_seed(5)
    famo = FAMO(3, w_lr=0.05)
    reference = torch.zeros(3, requires_grad=True)
    adam = torch.optim.Adam([reference], lr=0.05)
    for _ in range(6):
        before = torch.rand(3, generator=gen) + 0.5
        after = before * (0.8 + 0.3 * torch.rand(3, generator=gen))
        reference.grad = famo.logit_gradient(before, after)
        adam.step()
        famo.update(before, after)
        assert torch.equal(famo.w, reference.detach())
    state = adam.state[reference]
    assert torch.equal(famo.adam_exp_avg, state["exp_avg"]) and torch.equal(famo.adam_exp_avg_sq, state["exp_avg_sq"])
    assert int(famo.adam_step) == int(state["step"]) == 6


def test_every_state_dict_entry_is_a_tensor_and_safetensors_stores_it(tmp_path):
    """A dict in the state_dict (the inner Adam's, before) broke torch.equal loops and safetensors."""
    from safetensors.torch import load_file, save_file

    famo = FAMO(3, priors=[1.0, 2.0, 1.0])
    famo.update(torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.9, 1.5, 0.5]))
    famo.remember(torch.tensor([0.9, 1.5, 0.5]))
    state = famo.state_dict()
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    save_file(state, tmp_path / "famo.safetensors")
    copy = FAMO(3)
    copy.load_state_dict(load_file(tmp_path / "famo.safetensors"))
    assert all(torch.equal(value, copy.state_dict()[key]) for key, value in state.items())
    assert copy.take_prev().tolist() == pytest.approx([0.9, 1.5, 0.5])


def _legacy_state_dict(famo: FAMO, prefix: str = "") -> dict:
    """``famo``'s state dict as FAMO wrote it before its Adam state became buffers: torch.optim.Adam's state dict
    under ``_extra_state`` (empty state before the first update)."""
    state = {prefix + k: v.clone() for k, v in famo.state_dict().items() if not k.startswith("adam_")}
    moments = {"step": famo.adam_step.float(), "exp_avg": famo.adam_exp_avg.clone(),
               "exp_avg_sq": famo.adam_exp_avg_sq.clone()} if int(famo.adam_step) else {}
    group = {"lr": famo.w_lr, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False, "params": [0]}
    state[prefix + "_extra_state"] = {"state": {0: moments} if moments else {}, "param_groups": [group]}
    return state


@pytest.mark.parametrize("updates", [0, 3])
def test_a_checkpoint_with_the_old_extra_state_loads_and_continues_identically(updates):
    from lit_hpcm.training.checkpoint_io import check_lightning_checkpoint
    from lit_hpcm.training.module import LitHPCM

    gen = torch.Generator().manual_seed(3)
    losses = [torch.rand(2, generator=gen) + 0.1 for _ in range(updates + 3)]
    original = FAMO(2)
    for before, after in zip(losses[:updates], losses[1:updates + 1]):
        original.update(before, after)
    restored = FAMO(2)
    restored.load_state_dict(_legacy_state_dict(original))
    assert all(torch.equal(value, restored.state_dict()[key]) for key, value in original.state_dict().items())
    for famo in (original, restored):
        for before, after in zip(losses[updates:], losses[updates + 1:]):
            famo.update(before, after)
    assert torch.equal(original.w, restored.w) and int(restored.adam_step) == updates + 2

    # a Lightning checkpoint of LitHPCM from before: checked, mapped once, then loaded as Lightning loads it
    module = LitHPCM(preset="tiny", balancing="famo", famo_w_lr=original.w_lr)
    module.balancer.famo.load_state_dict(original.state_dict())
    state_dict = {k: v for k, v in module.state_dict().items() if not k.startswith("balancer.famo.")}
    checkpoint = {"state_dict": state_dict | _legacy_state_dict(module.balancer.famo, "famo."),
                  "hyper_parameters": {"preset": "tiny"}}
    fresh = LitHPCM(preset="tiny", balancing="famo")
    check_lightning_checkpoint(checkpoint, fresh.state_dict(), "tiny", "old.ckpt")
    assert not [k for k in checkpoint["state_dict"] if k.endswith("_extra_state")]
    fresh.load_state_dict(checkpoint["state_dict"])
    assert torch.equal(fresh.balancer.famo.adam_exp_avg_sq, original.adam_exp_avg_sq)
    assert fresh.balancer.famo._adam_step_host == int(original.adam_step)


def test_inner_adam_state_follows_dtype():
    famo = FAMO(2)
    famo.update(torch.tensor([1.0, 2.0]), torch.tensor([0.9, 1.5]))
    famo.double()
    assert famo.adam_exp_avg.dtype == famo.adam_exp_avg_sq.dtype == torch.float64
    assert famo.adam_step.dtype == torch.int64 and int(famo.adam_step) == 1
    famo.update(torch.tensor([1.0, 2.0]), torch.tensor([0.9, 1.5]))
    assert famo.w.dtype == torch.float64


def test_remember_and_take_prev():
    famo = FAMO(2)
    assert famo.take_prev() is None
    famo.remember(torch.tensor([1.0, 2.0], requires_grad=True))
    assert famo.take_prev().tolist() == [1.0, 2.0]
    assert famo.take_prev() is None


def test_set_gamma():
    famo = FAMO(3).double()
    famo.set_gamma(0.002)
    assert famo.gamma.tolist() == [0.002] * 3 and famo.gamma.dtype == torch.float64
    famo.set_gamma([0.0, 0.001, 0.003])
    assert famo.gamma.tolist() == [0.0, 0.001, 0.003]
    for bad in ([0.1, 0.2], [0.1], -0.1, [0.0, float("nan"), 0.0], float("inf")):
        with pytest.raises(ValueError, match="gamma"):
            famo.set_gamma(bad)
    assert famo.gamma.tolist() == [0.0, 0.001, 0.003]


def test_setting_an_unchanged_gamma_writes_nothing():
    """A γ schedule calls set_gamma every step; only a changed value reaches the (device) buffer."""
    famo = FAMO(2, gamma=0.001)
    version = famo.gamma._version
    famo.set_gamma([0.001, 0.001])
    assert famo.gamma._version == version
    famo.set_gamma([0.001, 0.002])
    assert famo.gamma._version == version + 1 and famo.gamma.tolist() == pytest.approx([0.001, 0.002])
    other = FAMO(2, gamma=[0.005, 0.0])
    other.load_state_dict(famo.state_dict())  # the loaded γ is known to the host: re-setting it writes nothing
    version = other.gamma._version
    other.set_gamma([0.001, 0.002])
    assert other.gamma._version == version
    other.double().set_gamma([0.001, 0.002])  # float64 now holds float32-rounded values: an exact write
    assert other.gamma.tolist() == [0.001, 0.002]


@pytest.mark.parametrize("bad", [[1.0, 2.0], [1.0, float("nan"), 1.0], [1.0, float("inf"), 1.0], [1.0, -1.5, 1.0]])
def test_invalid_losses_raise_and_leave_w_alone(bad):
    famo = FAMO(3)
    good = torch.tensor([1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="FAMO"):
        famo.balanced_loss(torch.tensor(bad))
    with pytest.raises(ValueError, match="FAMO"):
        famo.update(good, torch.tensor(bad))
    with pytest.raises(ValueError, match="FAMO"):
        famo.remember(torch.tensor(bad))
    assert famo.w.tolist() == [0.0, 0.0, 0.0] and famo.take_prev() is None


def test_unchecked_famo_reads_nothing_back_and_lets_the_caller_undo():
    """check_losses=False: no validation (no device reads); an update with NaN losses is undone by load_state_dict."""
    famo = FAMO(2, check_losses=False)
    famo.update(torch.tensor([1.0, 2.0]), torch.tensor([0.9, 1.5]))
    famo.remember(torch.tensor([1.0, 2.0]))
    saved = copy.deepcopy(famo.state_dict())
    assert famo.take_prev() is not None
    famo.update(torch.tensor([1.0, float("nan")]), torch.tensor([0.9, 1.5]))
    assert torch.isnan(famo.w).all()
    famo.load_state_dict(saved)
    assert torch.isfinite(famo.w).all() and famo.take_prev().tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="FAMO expects 2"):
        famo.balanced_loss(torch.ones(3))


def test_invalid_priors_raise():
    for bad in ([1.0, 0.0], [1.0], [1.0, float("nan")]):
        with pytest.raises(ValueError, match="priors"):
            FAMO(2, priors=bad)


# ------------------------------------------------------------------ FAMO: offsets, prior Jacobian, the authors' FAMO


def test_default_offsets_are_the_authors_and_zero_is_famos_paper():
    losses = [3.0, 0.2]
    _, grad = loss_and_grad(make_famo([0.0, 0.0]), losses)
    assert grad == pytest.approx(expected_loss_and_grad([0.5, 0.5], losses, offset=-1.0)[1], rel=1e-12)
    _, grad0 = loss_and_grad(make_famo([0.0, 0.0], min_losses=0.0), losses)
    assert grad0 == pytest.approx(expected_loss_and_grad([0.5, 0.5], losses, offset=0.0)[1], rel=1e-12)
    # per unit of loss, offset -1 weighs a task 1 / (L + 1) <= 1; offset 0 weighs the small rate 15x the distortion
    assert grad0[1] / grad0[0] == pytest.approx(15.0, rel=1e-6)
    assert grad[1] / grad[0] == pytest.approx(4.0 / 1.2, rel=1e-6)
    per_task = make_famo([0.0, 0.0], min_losses=[-2.0, 0.0])
    assert per_task.min_losses.tolist() == [-2.0, 0.0]
    for bad in ([0.0], [0.0, float("nan")]):
        with pytest.raises(ValueError, match="min_losses"):
            FAMO(2, min_losses=bad)


@pytest.mark.parametrize("seed", range(5))
def test_logit_gradient_is_the_jacobian_of_the_prior_weights(seed):
    """d z'/d w with z' = softmax(w) * p / sum(softmax(w) * p), by autograd, against FAMO's closed form."""
    g = torch.Generator().manual_seed(seed)
    n = 5
    w = torch.randn(n, generator=g, dtype=torch.float64)
    priors = torch.rand(n, generator=g, dtype=torch.float64) * 3 + 0.05
    gamma = torch.rand(n, generator=g, dtype=torch.float64).mul(0.01).tolist()
    before = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    after = before * (0.8 + 0.4 * torch.rand(n, generator=g, dtype=torch.float64))
    famo = make_famo(w.tolist(), priors=priors.tolist(), gamma=gamma)

    w_leaf = w.clone().requires_grad_()
    zp = torch.softmax(w_leaf, 0) * priors
    zp = zp / zp.sum()
    delta = (before + 1 + EPS).log() - (after + 1 + EPS).log()
    (expected,) = torch.autograd.grad(zp, w_leaf, grad_outputs=delta)
    expected = expected + torch.tensor(gamma, dtype=torch.float64) * w
    got = famo.logit_gradient(before, after)
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-15)
    # the softmax(w) Jacobian the update used before is a different vector when priors are not ones
    z = torch.softmax(w, 0)
    softmax_only = z * (delta - (z * delta).sum()) + torch.tensor(gamma, dtype=torch.float64) * w
    assert not torch.allclose(got, softmax_only, rtol=1e-3)


def test_unit_priors_give_exactly_the_plain_famo_update():
    w = [0.3, -0.7, 0.1]
    before, after = torch.tensor([2.0, 0.4, 0.3]), torch.tensor([1.7, 0.5, 0.25])
    famo = FAMO(3, priors=[1.0, 1.0, 1.0], gamma=0.002)
    famo.w.copy_(torch.tensor(w))
    z = torch.softmax(torch.tensor(w), 0)
    delta = (before + 1 + 1e-8).log() - (after + 1 + 1e-8).log()
    assert torch.equal(famo.logit_gradient(before, after), z * (delta - (z * delta).sum()) + famo.gamma * famo.w)


class AuthorsFAMO:
    """The Balanced R-D authors' FAMO (balanced-rd/train_balanced.py), restated in plain torch for the test:
    logits w with their own Adam; ``min_losses`` [-1, -1]; the weighted loss stores the batch's losses; after
    the model step, the same batch's new losses give delta and the softmax Jacobian (by autograd) plus
    ``gamma * w`` is w's gradient."""

    def __init__(self, n, gamma, w_lr, min_losses):
        self.w = torch.zeros(n, dtype=torch.float64, requires_grad=True)
        self.opt = torch.optim.Adam([self.w], lr=w_lr)
        self.gamma, self.min_losses, self.prev = gamma, torch.tensor(min_losses, dtype=torch.float64), None

    def weighted_loss(self, losses):
        self.prev = losses.detach().clone()
        z = torch.softmax(self.w, -1)
        gaps = losses - self.min_losses + 1e-8
        return (gaps.log() * z / (z / gaps).sum().detach()).sum()

    def update(self, new_losses):
        delta = (self.prev - self.min_losses + 1e-8).log() - (new_losses - self.min_losses + 1e-8).log()
        with torch.enable_grad():
            (d,) = torch.autograd.grad(torch.softmax(self.w, -1), self.w, grad_outputs=delta)
        self.opt.zero_grad()
        self.w.grad = d + self.gamma * self.w
        self.opt.step()


def test_authors_offsets_reproduce_their_famo_on_a_recorded_loss_sequence():
    import json
    from pathlib import Path

    record = json.loads((Path(__file__).parent / "data" / "famo_loss_sequence.json").read_text())
    authors = AuthorsFAMO(2, record["gamma"], record["w_lr"], record["min_losses"])
    ours = FAMO(2, w_lr=record["w_lr"]).double()  # default offsets: the authors' -1
    ours.set_gamma(record["gamma"])  # in float64, as the authors' Python float
    for before, after in record["pairs"]:
        before, after = torch.tensor(before, dtype=torch.float64), torch.tensor(after, dtype=torch.float64)
        a_losses, o_losses = before.clone().requires_grad_(), before.clone().requires_grad_()
        (a_grad,) = torch.autograd.grad(authors.weighted_loss(a_losses), a_losses)
        (o_grad,) = torch.autograd.grad(ours.balanced_loss(o_losses), o_losses)
        assert torch.allclose(o_grad, a_grad, rtol=1e-12, atol=0)
        authors.update(after)
        ours.update(before, after)
        assert torch.allclose(ours.w, authors.w.detach(), rtol=1e-10, atol=1e-14)
    assert ours.weights()[1] > 0.6  # the sequence moved the weights: the comparison is not of two zeros

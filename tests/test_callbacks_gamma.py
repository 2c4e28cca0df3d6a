"""AdaptiveGamma: every strategy's values at chosen times, the plateau rule, resume, and plot-gamma."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lit_hpcm.callbacks import AdaptiveGamma
from lit_hpcm.callbacks.adaptive_gamma import gamma_schedule, plot_gamma
from lit_hpcm.cli.callback_commands import register_plot_gamma
from lit_hpcm.training.tasks import TASK_SETS

G0 = 1e-3
RD, SCALES = TASK_SETS["rd"], TASK_SETS["scales"]


class GammaBalancer:
    """The part of LitHPCM's balancer AdaptiveGamma talks to."""

    def __init__(self, gamma):
        self._gamma = torch.tensor(gamma, dtype=torch.float64)

    @property
    def gamma(self):
        return self._gamma.clone()

    def set_gamma(self, values):
        self._gamma = torch.tensor(values, dtype=torch.float64)


class GammaModule:
    """The part of LitHPCM AdaptiveGamma talks to."""

    balancing = "famo"

    def __init__(self, gamma, task_set="rd"):
        self.task_names = TASK_SETS[task_set]
        self.balancer = GammaBalancer(gamma)


def trainer(epoch=0, step=0, max_epochs=10, metrics=None):
    return SimpleNamespace(current_epoch=epoch, global_step=step, max_epochs=max_epochs, max_steps=-1,
                           estimated_stepping_batches=float("inf"), sanity_checking=False,
                           state=SimpleNamespace(fn="fit"), callback_metrics=metrics or {})


def level(callback, t, total):
    """The γ of a uniform start (every task equal)."""
    return callback.gamma_at(t, total, [G0, G0], RD)[0]


@pytest.mark.parametrize(
    "options, total, expected",
    [
        (dict(strategy="fixed"), 10, {0: G0, 9: G0}),
        (dict(strategy="linear", gamma_final=1e-4), 10, {0: G0, 5: 5.5e-4, 10: 1e-4, 20: 1e-4}),
        (dict(strategy="cosine", gamma_final=1e-4), 10, {0: G0, 5: 5.5e-4, 10: 1e-4}),
        (dict(strategy="step", milestones=[3, 6], factor=0.5), 10, {2: G0, 3: G0 / 2, 5: G0 / 2, 6: G0 / 4}),
        (dict(strategy="hpcm", phase_boundaries=[0.1, 0.6]), 100,
         {0: G0, 5: 1.1 * G0, 10: 1.2 * G0, 35: 0.9 * G0, 60: 0.7 * G0, 80: 0.595 * G0}),
        (dict(strategy="hpcm"), 300, {0: G0, 15: 1.1 * G0, 30: 1.2 * G0}),
    ],
)
def test_scalar_strategies(options, total, expected):
    callback = AdaptiveGamma(gamma0=G0, **options)
    for t, value in expected.items():
        assert level(callback, t, total) == pytest.approx(value, rel=1e-9), t


def test_scalar_schedule_keeps_the_initial_ratios():
    callback = AdaptiveGamma(strategy="linear", gamma0=G0, gamma_final=1e-4)
    assert callback.gamma_at(5, 10, [0.002, 0.001], RD) == pytest.approx([5.5e-4, 2.75e-4])


def test_hierarchical_sets_the_scale_rates_per_phase():
    callback = AdaptiveGamma(strategy="hierarchical")
    initial = [0.002, 0.003, 1.0, 1.0, 1.0]
    expected = {  # t of 100 (boundaries 0.1, 0.4, 0.667) -> s1, s2, s3
        0: (0.012, 0.003, 0.002),
        20: (0.010, 0.0075, 0.002),
        50: (0.008, 0.006, 0.004),
        90: (0.004, 0.003, 0.006),
    }
    for t, scales in expected.items():
        assert callback.gamma_at(t, 100, initial, SCALES) == pytest.approx([0.002, 0.003, *scales]), t


def test_hierarchical_needs_the_scales_task_set():
    with pytest.raises(ValueError, match="task_set 'scales'"):
        AdaptiveGamma(strategy="hierarchical").on_fit_start(trainer(), GammaModule([G0, G0]))


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(strategy="nope"), "unknown strategy"),
        (dict(strategy="step"), "needs milestones"),
        (dict(strategy="hpcm", phase_boundaries=[0.5, 0.2]), "increasing phase_boundaries"),
        (dict(strategy="hierarchical", phase_boundaries=[0.1, 0.5]), "3 increasing"),
        (dict(scale_gammas={"s1": 0.1}), "s1, s2, s3"),
    ],
)
def test_bad_settings_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveGamma(**options)


def test_needs_famo():
    module = GammaModule([G0, G0])
    module.balancing = "none"
    with pytest.raises(ValueError, match="balancing: famo"):
        AdaptiveGamma().on_fit_start(trainer(), module)


def test_epoch_and_step_hooks_set_the_module_gamma():
    module = GammaModule([G0, G0])
    callback = AdaptiveGamma(strategy="step", milestones=[2], factor=0.1)
    callback.on_fit_start(trainer(), module)
    callback.on_train_epoch_start(trainer(epoch=2), module)
    assert module.balancer.gamma.tolist() == pytest.approx([1e-4, 1e-4])

    stepwise = AdaptiveGamma(strategy="linear", gamma_final=0.0, every_n_steps=5, total=10)
    stepwise.on_fit_start(trainer(), module)
    stepwise.on_train_epoch_start(trainer(epoch=3), module)  # no effect in step mode
    stepwise.on_train_batch_start(trainer(step=7), module, None, 0)  # held since step 5
    assert module.balancer.gamma.tolist() == pytest.approx([G0 / 2, G0 / 2])


def test_plateau_rule_with_cooldown_and_floor_survives_a_state_round_trip():
    options = dict(strategy="plateau", window=3, threshold=0.01, factor=0.5, cooldown=1, floor=2e-4)
    values = [10, 5, 4.99, 4.99, 4.99, 4.99, 4.99, 4.99]
    expected = [G0, G0, G0, G0 / 2, G0 / 2, G0 / 4, G0 / 4, 2e-4]
    callback = AdaptiveGamma(**options)
    module = GammaModule([G0, G0])
    callback.on_fit_start(trainer(), module)
    for epoch, (value, want) in enumerate(zip(values, expected)):
        if epoch == 4:  # resume: a fresh callback with the saved state
            state = callback.state_dict()
            callback = AdaptiveGamma(**options)
            callback.load_state_dict(state)
        callback.on_validation_end(trainer(epoch=epoch, metrics={"val/loss": torch.tensor(value)}), module)
        callback.on_train_epoch_start(trainer(epoch=epoch + 1), module)
        assert module.balancer.gamma.tolist() == pytest.approx([want, want]), epoch


def test_plateau_ignores_the_sanity_check_and_needs_its_metric():
    callback = AdaptiveGamma(strategy="plateau")
    sanity = trainer(metrics={"val/loss": torch.tensor(1.0)})
    sanity.sanity_checking = True
    callback.on_validation_end(sanity, None)
    assert callback.history == []
    with pytest.raises(ValueError, match="val/loss"):
        callback.on_validation_end(trainer(), None)


def test_resume_mid_schedule_continues_from_the_captured_initial_vector():
    def run(callback, module, epochs):
        for epoch in epochs:
            callback.on_train_epoch_start(trainer(epoch=epoch), module)
            yield module.balancer.gamma.tolist()

    options = dict(strategy="linear", gamma0=G0, gamma_final=1e-4)
    whole = AdaptiveGamma(**options)
    module = GammaModule([0.002, 0.001])
    whole.on_fit_start(trainer(), module)
    reference = list(run(whole, module, range(10)))

    first = AdaptiveGamma(**options)
    module = GammaModule([0.002, 0.001])
    first.on_fit_start(trainer(), module)
    head = list(run(first, module, range(5)))
    resumed = AdaptiveGamma(**options)
    resumed.load_state_dict(first.state_dict())
    module = GammaModule(module.balancer.gamma.tolist())  # γ as restored from the module's checkpoint
    resumed.on_fit_start(trainer(epoch=5), module)
    tail = list(run(resumed, module, range(5, 10)))
    assert head + tail == reference


def test_gamma_schedule_matches_the_callback_and_rejects_plateau():
    callback = AdaptiveGamma(strategy="hierarchical")
    table = gamma_schedule(callback, 30)
    assert table.shape == (30, 5)
    assert np.allclose(table[10], callback.gamma_at(10, 30, [G0] * 5, SCALES))
    with pytest.raises(ValueError, match="plateau"):
        gamma_schedule(AdaptiveGamma(strategy="plateau"), 30)


def test_plot_gamma_writes_a_png(tmp_path):
    path = plot_gamma(AdaptiveGamma(strategy="hpcm"), 50, tmp_path / "gamma.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def parse(argv):
    parser = argparse.ArgumentParser()
    register_plot_gamma(parser.add_subparsers())
    return parser.parse_args(argv)


def test_plot_gamma_command(tmp_path, capsys):
    out = tmp_path / "g.png"
    args = parse(["plot-gamma", "--strategy", "hierarchical", "--total", "300", "-o", str(out)])
    assert args.func(args) == 0
    assert out.stat().st_size > 0
    with pytest.raises(SystemExit):  # plateau follows a logged metric: not offered
        parse(["plot-gamma", "--strategy", "plateau", "-o", str(out)])
    assert "invalid choice: 'plateau'" in capsys.readouterr().err

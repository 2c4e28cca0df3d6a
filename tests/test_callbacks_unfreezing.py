"""ProgressiveUnfreezing without training: settings, the frozen set per epoch, setup, the layer report."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest

from lit_hpcm.callbacks import ProgressiveUnfreezing
from lit_hpcm.callbacks.unfreezing import layer_report
from lit_hpcm.cli.callback_commands import register_layers
from lit_hpcm.training.module import LitHPCM


def fake_trainer(world_size):
    return SimpleNamespace(world_size=world_size, strategy=SimpleNamespace())


def requires_grad_by_group(module):
    return {g: {p.requires_grad for _, p in members} for g, members in module.model.parameter_groups().items()}


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(lr_multipliers={"encoder": 1.0}), "lr_multipliers: unknown parameter groups \\['encoder'\\]"),
        (dict(frozen_at_start=["hyperprior"]), "frozen_at_start: unknown"),
        (dict(schedule={3: ["g_a", "gs"]}), "schedule: unknown parameter groups \\['gs'\\]"),
        (dict(schedule={-1: ["g_a"]}), "epochs must be >= 0"),
    ],
)
def test_bad_settings_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        ProgressiveUnfreezing(**options)


def test_default_schedule():
    callback = ProgressiveUnfreezing()
    assert callback.frozen_at(0) == callback.frozen_at(99) == {"entropy", "h_a", "h_s", "context"}
    assert callback.frozen_at(100) == callback.frozen_at(199) == {"entropy", "context"}
    assert callback.frozen_at(200) == callback.frozen_at(10_000) == {"entropy"}


@pytest.mark.parametrize("world_size", [1, 2])
def test_setup_sets_multipliers_and_frozen_groups(world_size):
    module = LitHPCM(preset="tiny", lr=1e-3, lr_multipliers={"entropy": 0.2, "h_a": 3.0})
    module.trainer = fake_trainer(world_size)  # attached, as Lightning does before the callbacks' setup
    ProgressiveUnfreezing(schedule={1: ["context"]}).setup(module.trainer, module, "fit")
    assert module.frozen_groups == {"entropy", "context"}
    lrs = {g["name"]: g["lr"] for g in module.configure_optimizers().param_groups}
    assert lrs == pytest.approx({"g_a": 1e-3, "g_s": 1e-3, "h_a": 5e-4, "h_s": 5e-4, "context": 1e-4, "entropy": 2e-4})
    if world_size == 1:  # compute savings only where DDP cannot be affected
        assert requires_grad_by_group(module) == {
            "g_a": {True}, "g_s": {True}, "h_a": {True}, "h_s": {True}, "context": {False}, "entropy": {False}}
    else:
        assert all(flags == {True} for flags in requires_grad_by_group(module).values())


def test_layer_report_lists_every_group():
    module = LitHPCM(preset="tiny")
    report = layer_report(module, 1e-4, {"context": 0.1}, {"entropy"})
    lines = {line.split()[0]: line.split() for line in report.splitlines() if not line.startswith("-")}
    assert list(lines) == ["group", "g_a", "g_s", "h_a", "h_s", "context", "entropy", "total"]
    assert lines["context"][3:] == ["1e-05", "no"] and lines["entropy"][3:] == ["0.0001", "yes"]
    assert lines["total"][2] == f"{sum(p.numel() for p in module.model.parameters()):,}"


def test_layers_command(capsys):
    parser = argparse.ArgumentParser()
    register_layers(parser.add_subparsers())
    args = parser.parse_args(["layers", "--preset", "tiny", "--lr", "2e-4"])
    assert args.func(args) == 0
    assert "context" in capsys.readouterr().out
    args = parser.parse_args(["layers", "--preset", "huge"])
    assert args.func(args) == 2
    assert "layers: error:" in capsys.readouterr().err

"""The ablation sweeps of configs/ablations/: every grid point's setting reaches the module, the trainer or the
callback it is meant for (at demo scale, the documented one override), and one ablation runs end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from lit_hpcm.callbacks import ProgressiveUnfreezing
from lit_hpcm.cli import main
from lit_hpcm.cli.lightning import HPCMCLI
from lit_hpcm.data import ImageDataModule
from lit_hpcm.optim import CautiousAdam
from lit_hpcm.sweeps.grid import grid_points, load_sweep, sweep_commands
from lit_hpcm.sweeps.report import sweep_report
from lit_hpcm.training.module import LitHPCM

ROOT = Path(__file__).resolve().parents[1]
ABLATIONS = ROOT / "configs" / "ablations"
DEMO_SCALE = ["-c", "configs/sweeps/demo_scale.yaml"]


@pytest.fixture(autouse=True)
def repo_root(monkeypatch):
    """Sweep files name their configs relative to the repository root, where the launcher runs."""
    monkeypatch.chdir(ROOT)


def _points(name: str) -> list[tuple[dict, list[str]]]:
    """(swept values, command) of every grid point of configs/ablations/<name>.yaml."""
    path = ABLATIONS / f"{name}.yaml"
    return list(zip(grid_points(load_sweep(path)["parameters"]), sweep_commands(path)))


def _at_demo_scale(command: list[str]) -> HPCMCLI:
    """Module, data and trainer of one grid point's `lit-hpcm fit` command plus the demo-scale override, not run."""
    return HPCMCLI(LitHPCM, ImageDataModule, args=[*command[2:], *DEMO_SCALE], run=False, seed_everything_default=0)


def _check_scale_weights(cli, point):
    assert cli.model.balancer.famo.priors.tolist() == pytest.approx([1.0, 1.0, *point["model.scale_weights"]])


def _check_per_scale_gamma(cli, point):
    assert cli.model.balancer.famo.gamma.tolist() == pytest.approx(point["model.famo_gamma"])


def _check_context_lr(cli, point):
    lrs = {group["name"]: group["lr"] for group in cli.model.configure_optimizers().param_groups}
    lr = cli.model.hparams.lr
    assert lrs.pop("context") == pytest.approx(lr * point["model.lr_multipliers.context"])
    assert list(lrs.values()) == pytest.approx([lr] * len(lrs))


def _check_freezing(cli, point):
    (unfreezing,) = [c for c in cli.trainer.callbacks if isinstance(c, ProgressiveUnfreezing)]
    always = set(point["trainer.callbacks.init_args.frozen_at_start"])
    schedule = point["trainer.callbacks.init_args.schedule"]
    scheduled = {group for groups in schedule.values() for group in groups}
    assert unfreezing.lr_multipliers == {}
    assert unfreezing.frozen_at(0) == always | scheduled
    assert unfreezing.frozen_at(cli.trainer.max_epochs - 1) == always  # the demo run reaches every release


def _check_optimizer(cli, point):
    module = cli.model
    expected = CautiousAdam if point["model.optimizer"] == "cautious_adam" else torch.optim.Adam
    assert type(module.configure_optimizers()["optimizer"]) is expected
    assert module.hparams.famo_update == point["model.famo_update"]
    assert module.balancer.famo.gamma.tolist() == pytest.approx([point["model.famo_gamma"]] * len(module.task_names))
    assert module.balancer.famo.w_lr == pytest.approx(point["model.famo_w_lr"])


CHECKS = {
    "scale_weights": _check_scale_weights,
    "per_scale_gamma": _check_per_scale_gamma,
    "context_lr": _check_context_lr,
    "freezing": _check_freezing,
    "optimizer": _check_optimizer,
}


def test_every_ablation_file_is_checked():
    assert sorted(p.stem for p in ABLATIONS.glob("*.yaml")) == sorted(CHECKS)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_every_grid_point_reaches_the_model_at_demo_scale(name, single_thread):
    for point, command in _points(name):
        cli = _at_demo_scale(command)
        assert cli.model.hparams.preset == "tiny" and cli.model.hparams.init_weights is None
        assert cli.trainer.max_epochs == 3 and type(cli.trainer.accelerator).__name__ == "CPUAccelerator"
        (logger,) = cli.trainer.loggers
        assert isinstance(logger, CSVLogger) and logger.save_dir == f"runs/ablations/{name}"
        assert cli.trainer.checkpoint_callback.dirpath is None  # inside the run's own folder
        CHECKS[name](cli, point)


def test_freezing_ablation_end_to_end_at_demo_scale(tmp_path, single_thread):
    """The documented demo-scale run of one ablation: 4 grid points × 6 steps, then its report."""
    runs = tmp_path / "runs"
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    for _, command in _points("freezing"):
        assert main([*command[1:], *DEMO_SCALE, f"--trainer.logger.init_args.save_dir={runs}", *quiet]) == 0

    report = sweep_report(runs, tmp_path / "report", x="frozen_at_start", y="schedule")
    assert len(report.rows) == 4 and all(math.isfinite(row["val/loss"]) for row in report.rows)
    assert {(tuple(row["frozen_at_start"]), len(row["schedule"])) for row in report.rows} == {
        ((), 0), (("entropy",), 0), ((), 2), (("entropy",), 2)
    }
    assert report.files["heatmap.png"].read_bytes()[:4] == b"\x89PNG"
    table = report.files["table.md"].read_text()
    assert table.count("| csv |") == 4 and '{"1":["h_a","h_s"],"2":["context"]}' in table

    # The setting did what it says: the entropy models of the two runs that froze them never moved.
    means = {}
    for row in report.rows:
        (checkpoint,) = (runs / row["run"] / "checkpoints").glob("*.ckpt")
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        means.setdefault(tuple(row["frozen_at_start"]), []).append(state["model.hyperprior.means"])
    frozen_a, frozen_b = means[("entropy",)]
    assert torch.equal(frozen_a, frozen_b)
    assert all(not torch.equal(trained, frozen_a) for trained in means[()])

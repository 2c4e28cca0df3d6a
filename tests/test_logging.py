"""Loggers: W&B in offline mode (no account, no network) beside the CSV logger, as the README shows."""

from __future__ import annotations

import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from lit_hpcm.loggers.wandb_logger import WandbLogger
from lit_hpcm.training.module import LitHPCM

wandb = pytest.importorskip("wandb")


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B forced offline, with every folder it writes (config, cache, data) inside tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "home" / name.lower()))
    yield
    wandb.finish()


def test_a_short_fit_writes_an_offline_wandb_run_and_a_csv_log(tmp_path, offline_wandb):
    torch.manual_seed(0)
    loggers = [CSVLogger(tmp_path, name="csv"), WandbLogger(offline=True, project="lit-hpcm", save_dir=str(tmp_path))]
    train = DataLoader([torch.rand(2, 3, 64, 64) for _ in range(2)], batch_size=None)
    val = DataLoader([{"image": torch.rand(1, 3, 64, 64), "name": ["photo.png"]}], batch_size=None)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=loggers, log_every_n_steps=1, num_sanity_val_steps=0,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        default_root_dir=tmp_path)
    trainer.fit(LitHPCM(preset="tiny", log_images=1), train, val)
    wandb.finish()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")  # what `wandb sync <save_dir>/wandb/offline-run-*` uploads
    (record,) = run.glob("run-*.wandb")
    assert record.stat().st_size > 0
    assert list((run / "files" / "media" / "images").rglob("*.png"))  # the validation reconstruction
    rows = list(csv.DictReader(open(tmp_path / "csv" / "version_0" / "metrics.csv")))
    assert any(row["train/loss_step"] for row in rows) and any(row["val/loss"] for row in rows)


def test_wandb_prints_nothing_about_a_setting_nobody_chose(tmp_path):
    """In a fresh process (W&B keeps its console settings per process), with W&B's own lines shown as a user
    sees them: the offline banner, and no word about `anonymous`."""
    import os
    import subprocess
    import sys

    script = ("from lit_hpcm.loggers.wandb_logger import WandbLogger; import wandb\n"
              f"WandbLogger(offline=True, project='lit-hpcm', save_dir={str(tmp_path)!r}).experiment.log({{'x': 1.0}})\n"
              "wandb.finish()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_CONFIG_DIR=str(tmp_path / "config"), WANDB_CACHE_DIR=str(tmp_path / "cache"),
               WANDB_DATA_DIR=str(tmp_path / "data"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "offline" in done.stderr and "anonymous" not in done.stderr


def test_the_cli_takes_lightnings_wandb_arguments_for_ours(capsys):
    """The config names Lightning's WandbLogger arguments (offline, project, save_dir): the CLI resolves them
    through our subclass's *args/**kwargs."""
    from lit_hpcm.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["fit", "-c", "configs/demo.yaml", "--trainer.logger+=lit_hpcm.loggers.WandbLogger",
              "--trainer.logger.init_args.offline=true", "--trainer.logger.init_args.project=p1", "--print_config"])
    assert stop.value.code == 0
    printed = capsys.readouterr().out
    assert "lit_hpcm.loggers.WandbLogger" in printed and "project: p1" in printed and "offline: true" in printed


def test_an_unknown_subcommand_lists_every_subcommand(capsys):
    import pytest

    from lit_hpcm.cli import main

    with pytest.raises(SystemExit):
        main(["fitt"])
    err = capsys.readouterr().err
    for name in ("fit", "validate", "test", "predict", "compress", "decompress", "eval", "import-official"):
        assert f"'{name}'" in err


def test_settings_that_cannot_train_are_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys):
    from lit_hpcm.cli import main

    monkeypatch.chdir(tmp_path)
    config = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    for option, message in (("--model.lmbda=-0.5", "lmbda must be > 0"), ("--data.batch_size=-1", "batch_size must be"),
                            ("--data.train_dir=nowhere", "train_dir nowhere: no such folder")):
        assert main(["fit", "-c", config, option]) == 2
        assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no log folder, no checkpoint folder

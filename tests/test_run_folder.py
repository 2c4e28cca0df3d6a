"""`--trainer.default_root_dir DIR` moves everything a run writes under DIR: logs, checkpoints, test results,
early-stopping files. The configs name no other output path, so two runs with two folders share nothing."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from lit_hpcm.callbacks import ScaleEarlyStopping
from lit_hpcm.cli import main
from lit_hpcm.loggers.csv_logger import RunCSVLogger

REPO = Path(__file__).resolve().parents[1]


def test_the_run_folder_holds_every_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # so a path that ignores the folder would land here, in the working folder
    run = tmp_path / "my_run"
    common = ["-c", str(REPO / "configs" / "demo.yaml"), f"--trainer.default_root_dir={run}",
              "--data.patch_size=64", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false"]
    assert main(["fit", *common, "--trainer.max_steps=4"]) == 0
    assert main(["test", *common, "--ckpt_path=last", "--trainer.limit_test_batches=1"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_run"]
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "checkpoints" / "checkpoints.json").is_file()
    assert (run / "logs" / "version_0" / "metrics.csv").is_file()
    assert (run / "logs" / "version_0" / "config.yaml").is_file()
    results = json.loads((run / "test_results.json").read_text())
    assert results["meta"]["checkpoint"] == str(run / "checkpoints" / "last.ckpt")
    assert results["meta"]["global_step"] == 4


def test_early_stopping_files_default_to_the_run_folder(tmp_path):
    callback = ScaleEarlyStopping(monitors=["val/loss"])
    callback.setup(SimpleNamespace(default_root_dir=str(tmp_path)), None, "fit")
    assert callback.dirpath == tmp_path / "early_stopping"
    given = ScaleEarlyStopping(dirpath=str(tmp_path / "mine"), monitors=["val/loss"])
    given.setup(SimpleNamespace(default_root_dir=str(tmp_path)), None, "fit")
    assert given.dirpath == tmp_path / "mine"


def test_a_log_continues_only_a_named_version(tmp_path):
    with pytest.raises(ValueError, match="give the version"):
        RunCSVLogger(str(tmp_path), resume_step=4)


def test_an_offline_wandb_run_lands_in_the_run_folder(tmp_path, monkeypatch):
    """lit_hpcm.loggers.WandbLogger without save_dir writes <default_root_dir>/wandb/offline-run-*, not
    ./wandb in the working folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "my_run"
    logger = {"class_path": "lit_hpcm.loggers.WandbLogger", "init_args": {"project": "lit-hpcm-test"}}
    assert main(["fit", "-c", str(REPO / "configs" / "demo.yaml"), f"--trainer.default_root_dir={run}",
                 f"--trainer.logger={json.dumps([logger])}", "--trainer.max_steps=1", "--data.patch_size=64",
                 "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_run"]
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1

"""Resume through `lit-hpcm fit --ckpt_path`, against one unkilled run: at an epoch's end, mid-epoch, and right
after a mid-epoch validation. Every tensor of the final checkpoint equal, and the resumed run's log is the
unkilled run's log: the same folder (no second version), the same metrics.csv byte for byte."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml

from lit_hpcm.cli import main

STEPS = 32  # two epochs of 16 batches


def _flat(obj) -> list[torch.Tensor]:
    """Every tensor inside a nested checkpoint tree (dicts, lists), in a fixed order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for k in sorted(obj, key=str) for t in _flat(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _flat(item)]
    return []


def _config(tmp_path: Path, out: Path) -> Path:
    """The demo config, smaller (64² crops, one validation image), validating every 8 steps, halving the lr
    after epoch 0, and keeping a checkpoint every 4 steps besides the per-epoch ones."""
    config = yaml.safe_load(open("configs/demo.yaml"))
    config["trainer"].update(default_root_dir=str(out), val_check_interval=8, limit_val_batches=1,
                             enable_progress_bar=False)
    config["trainer"]["callbacks"] = [
        {"class_path": "lit_hpcm.callbacks.TopKCheckpoint", "init_args": {"save_top_k": 1, "save_last_n": 1}},
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(out / "steps"), "filename": "{step}", "every_n_train_steps": 4,
                       "save_top_k": -1, "monitor": None}},
    ]
    config["data"]["patch_size"] = 64
    config["model"].update(lr_scheduler="multistep", lr_milestones=[1], lr_decay=0.5)  # epoch-counted state too
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _fit(config: Path, *extra: str) -> None:
    assert main(["fit", "-c", str(config), *extra]) == 0


@pytest.fixture(scope="module")
def unkilled(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("unkilled")
    out = root / "run"
    _fit(_config(root, out), f"--trainer.max_steps={STEPS}")
    return out


@pytest.mark.parametrize("stop, checkpoint", [(16, "steps/step=16.ckpt"), (16, "checkpoints/epoch=0-step=16.ckpt"),
                                              (12, "steps/step=12.ckpt"), (8, "steps/step=8.ckpt")],
                         ids=["epoch_end", "epoch_end_after_validation", "mid_epoch", "after_validation"])
def test_resumed_fit_equals_the_unkilled_run(tmp_path, unkilled, stop, checkpoint):
    """The step checkpoints are written in the batch's end hook (before that batch's rows and validation), the
    epoch checkpoint after the epoch's validation."""
    out = tmp_path / "run"
    config = _config(tmp_path, out)
    _fit(config, f"--trainer.max_steps={stop}")
    _fit(config, f"--trainer.max_steps={STEPS}", f"--ckpt_path={out / checkpoint}")
    final = [torch.load(run / "steps" / f"step={STEPS}.ckpt", weights_only=False) for run in (unkilled, out)]
    for part in ("state_dict", "optimizer_states"):
        a, b = (_flat(c[part]) for c in final)
        assert len(a) == len(b) > 0 and all(torch.equal(x, y) for x, y in zip(a, b)), part
    assert final[0]["lr_schedulers"] == final[1]["lr_schedulers"]
    assert [g["lr"] for g in final[1]["optimizer_states"][0]["param_groups"]] == [1e-3] * 6  # 2e-3 halved once
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["version_0"]
    assert (out / "logs/version_0/metrics.csv").read_text() == (unkilled / "logs/version_0/metrics.csv").read_text()


def test_resume_last_resolves_to_the_run_folders_last_checkpoint(tmp_path):
    """`--ckpt_path last` is the run folder's last.ckpt (here step 4), and the log continues in version_0."""
    out = tmp_path / "run"
    config = _config(tmp_path, out)
    _fit(config, "--trainer.max_steps=4")
    _fit(config, "--trainer.max_steps=8", "--ckpt_path=last")
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["version_0"]
    rows = [(int(row["step"]), frozenset(k for k, v in row.items() if v and k not in ("step", "epoch")))
            for row in csv.DictReader(open(out / "logs/version_0/metrics.csv"))]
    assert [step for step, _ in rows] == [3, 7, 7] and len(set(rows)) == 3  # training rows, then a validation


@pytest.mark.parametrize("row_on_disk", [True, False], ids=["killed_after_flush", "killed_before_flush"])
def test_resume_from_the_demo_epoch_end_checkpoint_logs_each_row_once(tmp_path, row_on_disk):
    """The demo's own schedule (validation at each epoch's end, so the epoch checkpoint and last.ckpt are written
    in the training epoch's end hook, before the epoch's train/*_epoch row): resumed from the epoch-0 last.ckpt,
    as after a kill just after it was written, with that row already on disk or not yet, the log is the unkilled
    run's byte for byte (the row once, at its own step)."""
    logs = []
    for name, stops in (("unkilled", [8]), ("killed", [4, 8])):
        out = tmp_path / name
        config = yaml.safe_load(open("configs/demo.yaml"))
        config["trainer"].update(default_root_dir=str(out), limit_val_batches=1, enable_progress_bar=False)
        config["data"].update(patch_size=64, train_length=16)  # 4 batches per epoch
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        _fit(path, f"--trainer.max_steps={stops[0]}")
        metrics = out / "logs/version_0/metrics.csv"
        for stop in stops[1:]:
            lines = metrics.read_text().splitlines(keepends=True)
            assert "_epoch" in lines[0] and lines[-1].startswith("0,")  # the last row: epoch 0's means
            metrics.write_text("".join(lines if row_on_disk else lines[:-1]))
            _fit(path, f"--trainer.max_steps={stop}", "--ckpt_path=last")
        logs.append(metrics.read_text())
    assert logs[1] == logs[0]

"""TopKCheckpoint: the kept files and the manifest after a scripted run, and after a resumed one."""

from __future__ import annotations

import json

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_hpcm.callbacks import TopKCheckpoint

# val/loss per epoch: best two end as epochs 4 and 1 (epoch 2 is evicted at epoch 4), last two are 4 and 5.
SCRIPT = [5.0, 1.0, 2.0, 4.0, 0.5, 6.0]
EXPECTED = {1: "best", 4: "both", 5: "last"}


class Scripted(L.LightningModule):
    """A linear model whose validation loss follows its SCRIPT (two training steps per epoch)."""

    SCRIPT = SCRIPT

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.SCRIPT[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(4, 2)), batch_size=2)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(1, 2)), batch_size=1)


def fit(dirpath, epochs, ckpt_path=None):
    callback = TopKCheckpoint(dirpath, save_top_k=2, save_last_n=2)
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[callback],
                        default_root_dir=dirpath)
    trainer.fit(Scripted(), ckpt_path=ckpt_path)
    return callback


def check_kept_files(dirpath):
    files = sorted(p.name for p in dirpath.iterdir())
    expected = [f"epoch={e}-step={2 * (e + 1)}.ckpt" for e in EXPECTED]
    assert files == sorted([*expected, "checkpoints.json", "last.ckpt"])
    manifest = json.loads((dirpath / "checkpoints.json").read_text())
    assert [(m["epoch"], m["kind"]) for m in manifest] == list(EXPECTED.items())
    assert [m["metric"] for m in manifest] == [SCRIPT[e] for e in EXPECTED]
    assert [m["step"] for m in manifest] == [2 * (e + 1) for e in EXPECTED]
    assert all(m["path"] == str(dirpath / name) for m, name in zip(manifest, expected))


def test_best_k_and_last_n_after_six_epochs(tmp_path):
    callback = fit(tmp_path, 6)
    check_kept_files(tmp_path)
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["epoch"] == 5
    assert callback.best_model_path.endswith("epoch=4-step=10.ckpt")


def test_resumed_run_keeps_managing_the_same_files(tmp_path):
    fit(tmp_path, 3)
    assert sorted(p.name for p in tmp_path.glob("epoch=*")) == [
        "epoch=1-step=4.ckpt", "epoch=2-step=6.ckpt"]  # best 1, 2 = last 1, 2 (epoch 0 evicted)
    fit(tmp_path, 6, ckpt_path="last")
    check_kept_files(tmp_path)


def test_a_checkpoint_written_between_validations_has_no_metric(tmp_path):
    """max_steps ends epoch 1 after its first step: that epoch's checkpoint was never validated, so it has no
    score (it used to carry epoch 0's val/loss) and does not rank among the best."""
    callback = TopKCheckpoint(tmp_path, save_top_k=2, save_last_n=2)
    trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[callback],
                        default_root_dir=tmp_path)
    trainer.fit(Scripted())
    manifest = json.loads((tmp_path / "checkpoints.json").read_text())
    assert [(m["step"], m["metric"], m["kind"]) for m in manifest] == [(2, SCRIPT[0], "both"), (3, None, "last")]
    assert list(callback.best_k_models) == [str(tmp_path / "epoch=0-step=2.ckpt")]


def test_a_filename_without_epoch_does_not_overwrite_kept_checkpoints(tmp_path):
    """With `filename: model` every epoch formats to the same name: each new one gets a `-vN` suffix, as with
    ModelCheckpoint, instead of overwriting the best so far; the kept sets list each file once."""
    callback = TopKCheckpoint(tmp_path, filename="model", save_top_k=2, save_last_n=2)
    trainer = L.Trainer(accelerator="cpu", max_epochs=6, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[callback],
                        default_root_dir=tmp_path)
    trainer.fit(Scripted())
    assert len(callback.recent) == len(set(callback.recent)) == 2
    manifest = json.loads((tmp_path / "checkpoints.json").read_text())
    assert [(m["epoch"], m["kind"]) for m in manifest] == list(EXPECTED.items())
    for entry in manifest:  # each kept file holds the epoch the manifest says
        assert torch.load(entry["path"], weights_only=False)["epoch"] == entry["epoch"]
    assert sorted(str(p) for p in tmp_path.glob("model*")) == sorted(m["path"] for m in manifest)  # 3 distinct files


def test_a_fresh_fit_keeps_another_runs_files(tmp_path):
    """A fresh fit into a folder that holds another run's checkpoints warns and writes beside them (`-v1`)."""
    fit(tmp_path, 1)
    before = (tmp_path / "epoch=0-step=2.ckpt").read_bytes()
    fit(tmp_path, 1)
    assert (tmp_path / "epoch=0-step=2.ckpt").read_bytes() == before
    assert (tmp_path / "epoch=0-step=2-v1.ckpt").is_file()

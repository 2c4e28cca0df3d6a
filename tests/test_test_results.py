"""`test` results are exact: every image counted once under DDP, and the tested checkpoint's real step and path."""

from __future__ import annotations

import csv
import json

import lightning as L
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lit_hpcm.data import ImageDataModule, bundled_photos
from lit_hpcm.evaluation.keys import MEASURES
from lit_hpcm.loggers.csv_logger import RunCSVLogger
from lit_hpcm.training.module import LitHPCM


def _images(folder, count: int) -> None:
    folder.mkdir()
    photo = Image.open(bundled_photos(("chelsea.png",))[0]).convert("RGB")
    for i in range(count):
        photo.crop((40 * i, 0, 40 * i + 64, 48)).save(folder / f"img{i}.png")


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    options = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    return L.Trainer(**(options | kwargs))


def test_two_ranks_give_one_answer_for_an_odd_number_of_images(tmp_path, capfd):
    """3 images on 2 ranks: the DistributedSampler pads rank 1 with a repeat of img0; the results hold 3 rows, and
    the logged metrics (metrics.csv, the printed table) are their means, not rank 0's share; no sync warning."""
    _images(tmp_path / "test", 3)
    out = tmp_path / "results.json"
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", test_results=str(out))
    data = ImageDataModule(train_dir=str(tmp_path / "test"), val_dir=str(tmp_path / "test"),
                           test_dir=str(tmp_path / "test"), num_workers=0)
    trainer = _trainer(tmp_path, devices=2, strategy="ddp_spawn", logger=RunCSVLogger(str(tmp_path)))
    (printed,) = trainer.test(module, datamodule=data)
    results = json.loads(out.read_text())
    names = [row["name"] for row in results["per_image"]]
    assert names == ["img0.png", "img1.png", "img2.png"]
    (logged_row,) = csv.DictReader((tmp_path / "logs" / "version_0" / "metrics.csv").open())
    for key, logged in ((key, logged) for key, logged in MEASURES.items() if logged):
        mean = sum(row[key] for row in results["per_image"]) / 3
        assert abs(results["results"][key][0] - mean) < 1e-12
        assert float(logged_row[logged]) == pytest.approx(mean, rel=1e-6)
        assert printed[logged] == pytest.approx(mean, rel=1e-6)
    assert "sync_dist" not in capfd.readouterr().err


def test_meta_records_the_tested_checkpoint_step_and_path(tmp_path):
    _images(tmp_path / "test", 1)
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", lr=1e-3)
    trainer = _trainer(tmp_path, max_steps=3)
    trainer.fit(module, DataLoader([torch.rand(1, 3, 64, 64) for _ in range(3)], batch_size=None))
    ckpt = tmp_path / "three.ckpt"
    trainer.save_checkpoint(ckpt)
    out = tmp_path / "results.json"
    fresh = LitHPCM(preset="tiny", test_results=str(out))
    data = ImageDataModule(train_dir=str(tmp_path / "test"), val_dir=str(tmp_path / "test"),
                           test_dir=str(tmp_path / "test"), num_workers=0)
    _trainer(tmp_path).test(fresh, datamodule=data, ckpt_path=str(ckpt))
    meta = json.loads(out.read_text())["meta"]
    assert meta["global_step"] == 3 and meta["checkpoint"] == str(ckpt)

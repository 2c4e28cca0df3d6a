"""`predict`: real bitstreams written as .hpcm files plus the PNGs decoded from them (tiny preset, CPU)."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lit_hpcm import codec
from lit_hpcm.callbacks.codec_writer import CodecWriter
from lit_hpcm.cli import main
from lit_hpcm.data import ImageDataModule
from lit_hpcm.data.images import open_image
from lit_hpcm.models.weights import load_model
from lit_hpcm.training.module import LitHPCM


def _photo(path, width: int, height: int, seed: int) -> None:
    """A smooth random RGB image (so the codec has something to code) saved at `path`."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize((width, height), Image.BILINEAR).save(path)


@pytest.fixture
def photo_dir(tmp_path):
    """Two images of odd sizes, one in a subfolder: names keep the folder structure."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    _photo(folder / "a.png", 50, 38, 0)
    _photo(folder / "sub" / "b.jpg", 70, 44, 1)
    return folder


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path, **kwargs)


def test_predict_writes_each_image_as_hpcm_and_the_png_decoded_from_it(tmp_path, photo_dir):
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny")
    out = tmp_path / "out"
    data = ImageDataModule(predict_dir=str(photo_dir), num_workers=0)
    predictions = _trainer(tmp_path, callbacks=[CodecWriter(str(out))]).predict(module, data)
    items = [item for batch in predictions for item in batch]
    assert [item["name"] for item in items] == ["a.png", "sub/b.jpg"]
    for item, size in zip(items, [(50, 38), (70, 44)]):
        stem = out / item["name"].rsplit(".", 1)[0]
        data_bytes = stem.with_suffix(".hpcm").read_bytes()
        assert data_bytes == item["data"]
        assert codec.read_header(data_bytes)[0].width == size[0]
        png = open_image(stem.with_suffix(".png"))
        assert png.size == size
        # the PNG is exactly what the file decodes to (not the float forward's output)
        decoded = codec.decode(data_bytes, module.model)
        assert np.array_equal(np.asarray(png), np.asarray(decoded))


def test_two_inputs_with_the_same_output_name_are_refused(tmp_path, photo_dir):
    _photo(photo_dir / "a.jpg", 20, 20, 2)
    data = ImageDataModule(predict_dir=str(photo_dir), num_workers=0)
    with pytest.raises(ValueError, match="same outputs"):
        _trainer(tmp_path, callbacks=[CodecWriter(str(tmp_path / "out"))]).predict(LitHPCM(preset="tiny"), data)


def test_cli_predict_on_the_demo_config_writes_into_the_run_folder(tmp_path, photo_dir, capsys):
    torch.manual_seed(0)
    trainer = _trainer(tmp_path, max_steps=1)
    trainer.fit(LitHPCM(preset="tiny"), DataLoader([torch.rand(2, 3, 64, 64)], batch_size=None))
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    run = tmp_path / "run"
    # the checkpoint is a plain-Adam model: the config must say so (the config, not the checkpoint, builds the model)
    assert main(["predict", "-c", "configs/demo.yaml", f"--ckpt_path={ckpt}", f"--data.predict_dir={photo_dir}",
                 f"--trainer.default_root_dir={run}", f"--trainer.logger.init_args.save_dir={run}",
                 "--model.balancing=none", "--model.optimizer=adam"]) == 0
    assert f"lit-hpcm predict: 2 images -> {run / 'predictions'}" in capsys.readouterr().out  # says where
    written = sorted(p.relative_to(run / "predictions").as_posix() for p in (run / "predictions").rglob("*.*"))
    assert written == ["a.hpcm", "a.png", "sub/b.hpcm", "sub/b.png"]
    model = load_model(ckpt)  # the checkpoint's weights decode the CLI's files exactly
    decoded = codec.decode((run / "predictions" / "sub" / "b.hpcm").read_bytes(), model)
    assert np.array_equal(np.asarray(decoded), np.asarray(open_image(run / "predictions" / "sub" / "b.png")))

"""What a user gets wrong on the `lit-hpcm fit` command line is one line on stderr and exit code 2 (a parser error
with one more line saying where the options are listed), and no `logs/version_N` folder is left behind. Recipe
configs never train on the bundled demo photos; the demo configs say in one line that they do."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lit_hpcm.cli import main
from lit_hpcm.data import BUNDLED_EVAL_PHOTOS, bundled_photos

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "configs/demo.yaml")


@pytest.fixture
def folders(tmp_path) -> dict[str, str]:
    """An empty folder, a folder of two photos, and the run folder."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "photos").mkdir()
    for photo in bundled_photos(BUNDLED_EVAL_PHOTOS):
        shutil.copy(photo, tmp_path / "photos")
    return {name: str(tmp_path / name) for name in ("empty", "photos", "run")}


def _errors(capsys, args: list[str], run: str) -> list[str]:
    """Run `lit-hpcm ARGS` into the run folder; the lines it printed on stderr after Lightning's INFO lines.
    Asserts the exit code 2 and that no log folder was made."""
    assert main([*args, f"--trainer.default_root_dir={run}", "--trainer.enable_progress_bar=false"]) == 2
    assert not (Path(run) / "logs").exists()
    return [line for line in capsys.readouterr().err.splitlines() if not line.startswith(("INFO", "  ", "-"))]


@pytest.mark.parametrize("args, message", [
    (["--data.train_dir={empty}"], "train_dir: {empty}: no image files"),
    (["--data.val_dir={photos}"], "train_dir is not set (bundled sample photos are used only when"),
    (["--data.train_dir={photos}", "--data.val_dir={empty}"], "val_dir: {empty}: no image files"),
    (["--model.preset=huge"], "preset must be one of base, large, tiny, got 'huge'"),
    (["--model.famo_gamma=-1"], "famo_gamma must be finite and >= 0, got -1.0"),
], ids=["empty_train_dir", "val_dir_without_train_dir", "empty_val_dir", "unknown_preset", "negative_gamma"])
def test_a_bad_setting_is_one_line(capsys, folders, args, message):
    lines = _errors(capsys, ["fit", "-c", DEMO, *(arg.format(**folders) for arg in args)], folders["run"])
    assert len(lines) == 1 and lines[0].startswith(f"lit-hpcm fit: error: {message.format(**folders)}"), lines


@pytest.mark.parametrize("args, message", [
    (["-c", DEMO, "--model.lmbdaa=1"], "unrecognized arguments: --model.lmbdaa=1"),
    (["-c", DEMO, "--data.batch_size=four"], 'Parser key "data.batch_size": Expected a <class \'int\'>.'),
    (["-c", DEMO, "--model.balancing=foo"], 'Parser key "model.balancing": Expected a typing.Literal'),
    (["-c", "configs/no_such.yaml"], 'Parser key "config": File does not exist'),
], ids=["key_typo", "not_an_int", "not_a_choice", "missing_config"])
def test_a_parser_error_is_the_message_and_a_hint(capsys, folders, args, message):
    lines = _errors(capsys, ["fit", *args], folders["run"])
    assert len(lines) == 2 and lines[0].startswith(f"lit-hpcm fit: error: {message}"), lines
    assert lines[1] == "(lit-hpcm fit --help lists every option)"


def _without_gpu(monkeypatch) -> None:
    """This machine as one without a GPU, whatever it has (Lightning asks these to pick an accelerator)."""
    from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator

    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: False))
    monkeypatch.setattr(MPSAccelerator, "is_available", staticmethod(lambda: False))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)


def test_a_gpu_recipe_without_a_gpu_says_what_to_add(capsys, folders, monkeypatch):
    _without_gpu(monkeypatch)
    lines = _errors(capsys, ["fit", "-c", str(REPO / "configs/hpcm_base_adam.yaml")], folders["run"])
    assert len(lines) == 1 and lines[0].startswith("lit-hpcm fit: error: trainer.accelerator gpu: this machine has no GPU")
    assert lines[0].endswith("to run on the CPU add --trainer.accelerator cpu")


@pytest.mark.parametrize("config", ["hpcm_base_adam", "hpcm_base_balanced", "hpcm_base_scales",
                                    "hpcm_large_balanced", "finetune", "finetune_balanced"])
def test_a_recipe_refuses_to_train_without_its_data_folders(capsys, folders, config):
    args = ["fit", "-c", str(REPO / f"configs/{config}.yaml"), "--trainer.accelerator=cpu", "--trainer.devices=1",
            "--model.init_weights=null"]
    assert _errors(capsys, args, folders["run"]) == [
        ("lit-hpcm fit: error: train_dir is not set: this config needs your images, --data.train_dir DIR (and "
        "--data.val_dir DIR to validate); only the demo configs use the bundled sample photos")]


def test_the_demo_says_it_uses_the_bundled_photos(folders, caplog):
    """One line, in a 1-step run."""
    run = folders["run"]
    assert main(["fit", "-c", DEMO, f"--trainer.default_root_dir={run}", "--trainer.max_steps=1",
                 "--data.patch_size=64", "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false"]) == 0
    said = [record.getMessage() for record in caplog.records if "bundled photos" in record.getMessage()]
    assert said == [("ImageDataModule: no image folders given, so the demo data: training on 6 and validating on 2 "
                    "of scikit-image's bundled photos")]

"""A run of lit-hpcm 0.1.0 (tests/data/release_0_1_0: its last.ckpt and saved config.yaml) under the current layout:
its checkpoint resumes (0.1.0's `famo.*`, `bit_share.*`, `loss_scale.*` keys mapped to `balancer.*`), and its saved
config is refused in one line that names the new class path."""

from __future__ import annotations

from pathlib import Path

import torch

from lit_hpcm import LitHPCM
from lit_hpcm.cli import main
from lit_hpcm.training.checkpoint_io import check_lightning_checkpoint

RELEASE = Path(__file__).parent / "data" / "release_0_1_0"
REPO = Path(__file__).resolve().parents[1]


def _old_checkpoint() -> dict:
    return torch.load(RELEASE / "last.ckpt", map_location="cpu", weights_only=True)


def test_a_0_1_0_checkpoint_maps_onto_the_balancer_and_loads_every_value():
    checkpoint = _old_checkpoint()
    old = {k: v.clone() for k, v in checkpoint["state_dict"].items() if not k.startswith("model.")}
    assert {k.split(".")[0] for k in old} == {"famo", "bit_share", "loss_scale"}
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    module = LitHPCM(**hparams)
    check_lightning_checkpoint(checkpoint, module.state_dict(), hparams["preset"], "last.ckpt")
    module.load_state_dict(checkpoint["state_dict"])  # strict: every key found, none left over
    state = module.state_dict()
    assert all(torch.equal(state[f"balancer.{key}"], value) for key, value in old.items())
    assert not torch.equal(module.balancer.famo.w, torch.zeros_like(module.balancer.famo.w))  # trained logits


def test_a_0_1_0_checkpoint_resumes_under_the_current_config(tmp_path, single_thread, capsys):
    args = ["fit", "-c", str(REPO / "configs" / "demo_callbacks.yaml"), "--model.task_set", "scales",
            "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
            f"--trainer.default_root_dir={tmp_path}", f"--ckpt_path={RELEASE / 'last.ckpt'}"]
    assert main(args) == 0, capsys.readouterr().err
    resumed = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 18
    keys = [k for k in resumed["state_dict"] if not k.startswith("model.")]
    assert keys and all(k.startswith("balancer.") for k in keys)
    before = _old_checkpoint()["state_dict"]["famo.w"]
    assert not torch.equal(resumed["state_dict"]["balancer.famo.w"], before)  # FAMO went on from the old logits


def test_a_0_1_0_saved_config_is_refused_in_one_line_naming_the_new_path(tmp_path, capsys):
    code = main(["fit", "-c", str(RELEASE / "config.yaml"), f"--trainer.default_root_dir={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "lit_hpcm.run_logger.RunCSVLogger is lit_hpcm.loggers.RunCSVLogger" in err[0]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_an_old_class_path_on_the_command_line_is_refused_too(tmp_path, capsys):
    code = main(["fit", "-c", str(REPO / "configs" / "demo.yaml"), f"--trainer.default_root_dir={tmp_path}",
                 "--trainer.callbacks+=lit_hpcm.codec_writer.CodecWriter"])
    assert code == 2
    assert "is lit_hpcm.callbacks.CodecWriter since" in capsys.readouterr().err

"""Fault tolerance: resume after kill -9, atomic checkpoint files, poisoned batches, bad checkpoints."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from PIL import Image
from test_callbacks_topk import Scripted
from torch.utils.data import DataLoader

from _common import checkpoint_differences
from lit_hpcm.callbacks import TopKCheckpoint
from lit_hpcm.cli import main
from lit_hpcm.errors import CheckpointError
from lit_hpcm.files import write_atomically
from lit_hpcm.training.checkpoint_io import AtomicCheckpointIO, with_atomic_checkpoints
from lit_hpcm.training.module import LitHPCM

REPO = Path(__file__).resolve().parents[1]

# -- resume after kill -9 ---------------------------------------------------------------------------------

# The child is the real CLI; its torch.save writes half of the 2nd checkpoint, says so and waits to be killed.
KILLED_DURING_SECOND_SAVE = """
import io, sys, time, torch
from lit_hpcm.cli import main
real_save, saves = torch.save, []
def save_then_hang(obj, f, *args, **kwargs):
    saves.append(1)
    if len(saves) < 2:
        return real_save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    f.write(buffer.getvalue()[: buffer.tell() // 2])
    f.flush()
    print("MID-SAVE", flush=True)
    time.sleep(600)
torch.save = save_then_hang
sys.exit(main(sys.argv[1:]))
"""


def _images(folder: Path, count: int, size: int) -> str:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(count)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size + 4 * i, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return str(folder)


def _run_config(tmp_path: Path, name: str, train: str, val: str) -> list[str]:
    """CLI arguments: demo config + FAMO next-batch, EMA, a plateau γ schedule and `last` every step;
    4 steps in epochs of 3, so the checkpoints of steps 1 and 2 are mid-epoch."""
    config = {
        "trainer": {
            "max_steps": 4, "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
            "callbacks": [
                {"class_path": "lit_hpcm.callbacks.AdaptiveGamma",
                 "init_args": {"strategy": "plateau", "window": 2, "threshold": 10.0, "cooldown": 0}},
                {"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging",
                 "init_args": {"decay": 0.9, "use_buffers": False}},
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"dirpath": str(tmp_path / name), "every_n_train_steps": 1, "save_last": True,
                               "save_top_k": 0}},
            ],
        },
        "model": {"optimizer": "cautious_adam", "balancing": "famo", "famo_update": "next_batch", "log_images": 0},
        "data": {"train_dir": train, "val_dir": val, "patch_size": 32, "batch_size": 1, "train_length": 3},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return ["fit", "-c", str(REPO / "configs" / "demo.yaml"), "-c", str(path)]


def test_kill_9_mid_epoch_during_a_checkpoint_write_then_resume_equals_an_uninterrupted_run(tmp_path):
    train, val = _images(tmp_path / "train", 4, 40), _images(tmp_path / "val", 1, 32)
    assert main(_run_config(tmp_path, "straight", train, val)) == 0

    killed = _run_config(tmp_path, "killed", train, val)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(tmp_path / "child.log", "w") as log:
        child = subprocess.Popen([sys.executable, "-c", KILLED_DURING_SECOND_SAVE, *killed], cwd=REPO, env=env,
                                 stdout=subprocess.PIPE, stderr=log, text=True)
        watchdog = threading.Timer(600, child.kill)  # a child that never gets there fails the test, not hangs it
        watchdog.start()
        line = child.stdout.readline()
        child.send_signal(signal.SIGKILL)
        child.wait()
        watchdog.cancel()
    assert line.strip() == "MID-SAVE", (tmp_path / "child.log").read_text()[-3000:]
    folder = tmp_path / "killed"
    with pytest.raises(Exception):  # the half-written step-2 checkpoint, left beside the intact `last`
        torch.load(folder / ".last.ckpt.partial", weights_only=True)
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 1

    assert main([*killed, "--ckpt_path", "last"]) == 0
    final = [torch.load(tmp_path / run / "last.ckpt", weights_only=True) for run in ("straight", "killed")]
    assert final[0]["global_step"] == 4
    assert checkpoint_differences(*final) == []
    # what the comparison covered: raw weights, FAMO logits and inner Adam, EMA weights, callback states
    assert {"current_model_state", "averaging_state", "optimizer_states", "loops"} <= set(final[0])
    assert "balancer.famo.w" in final[0]["current_model_state"]
    assert any(key.startswith("AdaptiveGamma") for key in final[0]["callbacks"])


# -- atomic checkpoint files --------------------------------------------------------------------------------


def test_a_save_that_dies_mid_write_leaves_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": torch.tensor(1)}, target)

    def crash(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a zip archive")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": torch.tensor(2)}, target)
    monkeypatch.undo()
    assert io.load_checkpoint(target)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # the partial file is gone


def test_write_atomically_replaces_whole_files_and_creates_folders(tmp_path):
    target = tmp_path / "a" / "b.json"
    write_atomically(target, lambda handle: handle.write(b"old"))
    write_atomically(target, lambda handle: handle.write(b"new"))
    assert target.read_bytes() == b"new" and sorted(p.name for p in target.parent.iterdir()) == ["b.json"]


def test_cli_trainers_get_the_atomic_writer_unless_a_checkpoint_io_is_configured():
    plugins = with_atomic_checkpoints(None)
    assert len(plugins) == 1 and isinstance(plugins[0], AtomicCheckpointIO)
    own = AtomicCheckpointIO()
    assert with_atomic_checkpoints([own]) == [own]
    assert [type(p) for p in with_atomic_checkpoints("bf16-mixed")][1:] == [AtomicCheckpointIO]


class _Scripted(Scripted):
    """The TopKCheckpoint tests' scripted model, two epochs longer."""

    SCRIPT = [5.0, 1.0, 2.0, 4.0, 0.5, 6.0, 0.2, 3.0]


def test_topk_manifest_never_lists_a_deleted_checkpoint(tmp_path):
    """Checked at every deletion: a kill right after it would leave a manifest of existing files only."""
    deleted = []

    class Watched(AtomicCheckpointIO):
        def remove_checkpoint(self, path):
            listed = {row["path"] for row in json.loads((tmp_path / TopKCheckpoint.MANIFEST).read_text())}
            assert str(path) not in listed
            deleted.append(path)
            super().remove_checkpoint(path)

    trainer = L.Trainer(accelerator="cpu", max_epochs=len(_Scripted.SCRIPT), logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, plugins=[Watched()],
                        callbacks=[TopKCheckpoint(str(tmp_path), save_top_k=2, save_last_n=1)])
    trainer.fit(_Scripted())
    assert len(deleted) >= 4  # evicted best ones and dropped recent ones both went through the check
    manifest = json.loads((tmp_path / TopKCheckpoint.MANIFEST).read_text())
    assert sorted(row["path"] for row in manifest) == sorted(str(p) for p in tmp_path.glob("epoch=*.ckpt"))


# -- poisoned batches ---------------------------------------------------------------------------------------


class _StateWatch(L.Callback):
    """Snapshots module, optimizer and EMA state at each batch start; checks chosen batches changed none."""

    def __init__(self, poisoned: set[int]):
        self.poisoned = poisoned
        self.checked = []

    def _state(self, trainer, module, ema):
        average = ema._average_model.state_dict() if ema._average_model is not None else {}
        return copy.deepcopy({"module": module.state_dict(), "optimizer": trainer.optimizers[0].state_dict(),
                              "ema": average, "step": trainer.global_step})

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.before = self._state(trainer, module, self.ema)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx in self.poisoned:
            assert checkpoint_differences(self.before, self._state(trainer, module, self.ema)) == [], batch_idx
            self.checked.append(batch_idx)


def test_poisoned_loss_and_gradient_leave_optimizer_famo_and_ema_unchanged(tmp_path):
    """next_batch FAMO updates its logits before the backward: a gradient skip must put them back."""
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", optimizer="cautious_adam", balancing="famo", famo_update="next_batch", lr=1e-3)
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand(1, 3, 32, 32, generator=g) for _ in range(5)]
    batches[1][0, 0, 0, 0] = float("inf")  # batch 1: non-finite loss
    backward_calls = []

    def nan_in_batch_3(grad):  # batch 3 (the 4th backward; every batch has one): non-finite gradient
        backward_calls.append(1)
        return torch.full_like(grad, float("nan")) if len(backward_calls) == 4 else grad

    module.model.g_s[0].weight.register_hook(nan_in_batch_3)
    ema = EMAWeightAveraging(decay=0.9, use_buffers=False)
    watch = _StateWatch({1, 3})
    watch.ema = ema
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, callbacks=[ema, watch],
                        default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(batches, batch_size=None))
    assert watch.checked == [1, 3]
    assert module.skipped_steps == 2 and trainer.global_step == 3  # batches 0, 2 and 4 stepped
    assert len(backward_calls) == 5
    assert int(ema._average_model.n_averaged) == 3


# -- bad checkpoint files -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A Lightning checkpoint of LitHPCM (tiny, FAMO) after one step."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=folder)
    trainer.fit(LitHPCM(preset="tiny", balancing="famo"), DataLoader([torch.rand(1, 3, 32, 32)], batch_size=None))
    trainer.save_checkpoint(folder / "good.ckpt")
    return folder / "good.ckpt"


def _bad_files(good: Path, folder: Path) -> dict[str, Path]:
    data = good.read_bytes()
    files = {"truncated": data[: len(data) // 3], "garbage": b"this is not a checkpoint",
             "zeroed": data[:4096] + bytes(len(data) - 4096)}
    for name, content in files.items():
        (folder / f"{name}.ckpt").write_bytes(content)
    return {name: folder / f"{name}.ckpt" for name in files}


def test_unreadable_checkpoints_are_named_errors(tiny_checkpoint, tmp_path):
    io = AtomicCheckpointIO()
    for path in [*_bad_files(tiny_checkpoint, tmp_path).values(), tmp_path / "missing.ckpt"]:
        with pytest.raises(CheckpointError, match=f"^{path}: "):
            io.load_checkpoint(path)


def test_lit_hpcm_test_reports_a_bad_checkpoint_in_one_line(tiny_checkpoint, tmp_path, capsys):
    args = ["test", "-c", str(REPO / "configs" / "demo.yaml"), f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}"]
    for name, path in _bad_files(tiny_checkpoint, tmp_path).items():
        assert main([*args, f"--ckpt_path={path}"]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"lit-hpcm test: error: {path}: not a readable PyTorch checkpoint"), err
        assert not any("Traceback" in line for line in err)


def test_a_checkpoint_of_another_model_is_refused_naming_the_file_and_the_problem(tiny_checkpoint, tmp_path):
    def resume(module, ckpt):
        trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)
        trainer.fit(module, DataLoader([torch.rand(1, 3, 32, 32)] * 2, batch_size=None), ckpt_path=ckpt)

    with pytest.raises(CheckpointError, match=r"good\.ckpt: checkpoint does not fit .*unknown key balancer\.famo\.w"):
        resume(LitHPCM(preset="tiny", balancing="none"), tiny_checkpoint)
    other = torch.load(tiny_checkpoint, weights_only=True)
    other["hyper_parameters"]["preset"] = "base"
    torch.save(other, tmp_path / "base.ckpt")
    with pytest.raises(CheckpointError, match=r"base\.ckpt: a checkpoint of preset 'base'; this model is preset 'tin"):
        resume(LitHPCM(preset="tiny", balancing="famo"), tmp_path / "base.ckpt")

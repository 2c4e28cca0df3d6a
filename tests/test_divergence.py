"""A diverged run stops: non-finite weights at the first skipped step, N skipped steps in a row otherwise; one line,
exit code 2, and nothing saved after the stop (the last good checkpoint stays)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lit_hpcm.callbacks import TopKCheckpoint
from lit_hpcm.cli import main
from lit_hpcm.errors import ConfigError, TrainingStopped
from lit_hpcm.training.module import LitHPCM

REPO = Path(__file__).resolve().parents[1]


def _batches(poisoned: set[int], count: int) -> list[torch.Tensor]:
    """`count` random 32² images, those at the `poisoned` indices with an Inf pixel (a non-finite loss)."""
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand(1, 3, 32, 32, generator=g) for _ in range(count)]
    for index in poisoned:
        batches[index][0, 0, 0, 0] = float("inf")
    return batches


def _fit(module: LitHPCM, batches: list[torch.Tensor], root: Path, **trainer_args) -> L.Trainer:
    trainer = L.Trainer(**{"accelerator": "cpu", "max_epochs": 1, "logger": False, "enable_progress_bar": False,
                           "enable_model_summary": False, "default_root_dir": root, **trainer_args})
    trainer.fit(module, DataLoader(batches, batch_size=None))
    return trainer


def test_skips_in_a_row_stop_the_fit_and_a_good_step_resets_the_count(tmp_path, single_thread):
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", lr=1e-3, max_consecutive_skips=3)
    trainer = _fit(module, _batches({1, 2, 4, 5}, 7), tmp_path, enable_checkpointing=False)  # 2 in a row at most
    assert module.skipped_steps == 4 and module.consecutive_skips == 0 and trainer.global_step == 3
    module = LitHPCM(preset="tiny", lr=1e-3, max_consecutive_skips=3)
    with pytest.raises(TrainingStopped, match="3 steps in a row skipped"):
        _fit(module, _batches({2, 3, 4, 5}, 7), tmp_path, enable_checkpointing=False)
    assert module.skipped_steps == 3 and module.global_step == 2  # stopped at batch 4, batch 5 never ran
    assert module.state_dict().keys() and all(torch.isfinite(p).all() for p in module.parameters())


def test_the_count_of_skips_in_a_row_is_kept_in_the_checkpoint():
    module = LitHPCM(preset="tiny")
    module.consecutive_skips = 7
    checkpoint = {"state_dict": module.state_dict(), "pytorch-lightning_version": L.__version__}
    module.on_save_checkpoint(checkpoint)
    loaded = LitHPCM(preset="tiny")
    loaded.on_load_checkpoint(checkpoint)
    assert loaded.consecutive_skips == 7


def test_non_finite_weights_stop_at_the_first_skipped_step_and_last_ckpt_is_not_overwritten(tmp_path, single_thread):
    """An epoch of good steps writes last.ckpt; then the weights are poisoned (as a huge lr does): the next step's
    loss is NaN, the fit stops at once (long before max_consecutive_skips) and last.ckpt keeps the good weights."""

    class PoisonAfterEpoch0(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:
                with torch.no_grad():
                    module.model.g_a[0].weight.fill_(float("nan"))

    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", lr=1e-3)
    checkpoints = TopKCheckpoint(dirpath=str(tmp_path / "checkpoints"), monitor=None, save_top_k=0, save_last_n=1)
    with pytest.raises(TrainingStopped, match="weights are no longer finite"):
        _fit(module, _batches(set(), 2), tmp_path, max_epochs=3, callbacks=[checkpoints, PoisonAfterEpoch0()])
    assert module.skipped_steps == 1 and module.global_step == 2
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 2
    assert all(torch.isfinite(value).all() for value in last["state_dict"].values())


def test_a_diverging_cli_fit_stops_in_one_line_with_exit_code_2(tmp_path, capsys, single_thread):
    """The issue's run: after its first step at lr 1000 every loss is non-finite and nothing trains again (it used
    to skip every later batch for all 12 epochs and exit 0)."""
    code = main(["fit", "-c", str(REPO / "configs/demo.yaml"), "--model.lr=1000", "--model.optimizer=adam",
                 "--model.balancing=none", "--trainer.max_steps=20", "--model.max_consecutive_skips=5",
                 f"--trainer.default_root_dir={tmp_path}", "--data.patch_size=64",
                 "--trainer.enable_progress_bar=false"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lit-hpcm fit: error:")]
    assert code == 2
    assert errors == [("lit-hpcm fit: error: stopped at step 1: 5 steps in a row skipped (non-finite loss; "
                      "--model.max_consecutive_skips 5); the checkpoints written before are kept")]
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()  # stopped within epoch 0: nothing was saved


def test_max_consecutive_skips_must_be_positive():
    with pytest.raises(ConfigError, match="max_consecutive_skips"):
        LitHPCM(preset="tiny", max_consecutive_skips=0)

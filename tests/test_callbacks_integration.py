"""The callbacks on real training runs: LitHPCM (tiny preset) on 64×64 crops of the bundled photos."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lit_hpcm.callbacks import AdaptiveGamma, ProgressiveUnfreezing, ScaleEarlyStopping, TopKCheckpoint
from lit_hpcm.data import ImageDataModule
from lit_hpcm.training.module import LitHPCM


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on two shared cores, two threads per process collapse under contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class GroupProbe(Callback):
    """Records, per epoch, which groups' parameters moved and each param group's LR."""

    def __init__(self):
        self.moved: list[set[str]] = []
        self.lrs: list[dict[str, float]] = []

    def _snapshot(self, pl_module):
        return {g: [p.detach().clone() for _, p in members] for g, members in pl_module.model.parameter_groups().items()}

    def on_train_epoch_start(self, trainer, pl_module):
        self.start = self._snapshot(pl_module)
        self.lrs.append({g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups})

    def on_train_epoch_end(self, trainer, pl_module):
        end = self._snapshot(pl_module)
        self.moved.append({g for g in end if any(not torch.equal(a, b) for a, b in zip(self.start[g], end[g]))})


def fit(root, callbacks, epochs, ckpt_path=None, **module_options):
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", lr=1e-3, **module_options)
    data = ImageDataModule(patch_size=64, batch_size=2, num_workers=0, train_length=4, max_val_images=1)
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks,
                        enable_checkpointing=any(isinstance(c, TopKCheckpoint) for c in callbacks),
                        default_root_dir=root)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return module, trainer


def test_frozen_groups_do_not_move_until_released_and_lrs_follow_multipliers(tmp_path):
    probe = GroupProbe()
    unfreezing = ProgressiveUnfreezing(
        lr_multipliers={"h_a": 0.5, "h_s": 0.5, "context": 0.1}, frozen_at_start=["entropy"],
        schedule={1: ["h_a", "h_s"], 2: ["context"]},
    )
    module, trainer = fit(tmp_path, [unfreezing, probe], 3, lr_scheduler="multistep", lr_milestones=[1], lr_decay=0.5)
    assert probe.moved == [{"g_a", "g_s"}, {"g_a", "g_s", "h_a", "h_s"}, {"g_a", "g_s", "h_a", "h_s", "context"}]
    base = {"g_a": 1e-3, "g_s": 1e-3, "h_a": 5e-4, "h_s": 5e-4, "context": 1e-4, "entropy": 1e-3}
    assert probe.lrs[0] == pytest.approx(base)
    assert probe.lrs[2] == pytest.approx({g: lr * 0.5 for g, lr in base.items()})  # MultiStepLR at epoch 1
    optimizer = trainer.optimizers[0]
    assert all(p not in optimizer.state for _, p in module.model.parameter_groups()["entropy"])


def run_callbacks(dirpath):
    return [
        ProgressiveUnfreezing(lr_multipliers={"context": 0.5}, frozen_at_start=[], schedule={2: ["entropy"]}),
        AdaptiveGamma(strategy="hierarchical", total=4),  # the split run's first part has max_epochs=2
        ScaleEarlyStopping(dirpath / "early_stopping", patience=20, max_patience=30),
        TopKCheckpoint(dirpath / "checkpoints", save_top_k=1, save_last_n=1),
    ]


def read_histories(path):
    return {name: entry["history"] for name, entry in json.loads(path.read_text()).items()}


FAMO_SCALES = dict(balancing="famo", task_set="scales", lr_scheduler="multistep", lr_milestones=[1, 3])


def test_resumed_run_matches_the_uninterrupted_one(tmp_path):
    whole, whole_trainer = fit(tmp_path / "whole", run_callbacks(tmp_path / "whole"), 4, **FAMO_SCALES)
    fit(tmp_path / "split", run_callbacks(tmp_path / "split"), 2, **FAMO_SCALES)
    resumed, resumed_trainer = fit(tmp_path / "split", run_callbacks(tmp_path / "split"), 4, ckpt_path="last",
                                   **FAMO_SCALES)
    torch.testing.assert_close(resumed.state_dict(), whole.state_dict(), rtol=0, atol=0)  # weights and FAMO
    whole_adam, resumed_adam = (t.optimizers[0].state_dict() for t in (whole_trainer, resumed_trainer))
    torch.testing.assert_close(resumed_adam["state"], whole_adam["state"], rtol=0, atol=0)
    assert resumed_adam["param_groups"] == whole_adam["param_groups"]  # LRs included
    # hierarchical, 4 epochs: epoch 3 is in the last phase (s3 favoured)
    assert resumed.balancer.gamma.tolist() == pytest.approx([0.001, 0.001, 0.004, 0.003, 0.006])
    histories = [read_histories(tmp_path / run / "early_stopping" / "early_stopping.json") for run in ("whole", "split")]
    assert [h["epoch"] for h in histories[1]["val/bpp_s1"]] == [0, 1, 2, 3]
    assert histories[0] == histories[1]
    manifest = json.loads((tmp_path / "split" / "checkpoints" / "checkpoints.json").read_text())
    assert manifest[-1]["epoch"] == 3 and manifest[-1]["kind"] in ("last", "both")

"""LitHPCM training: every optimizer × balancing × task set × update mode, the non-finite guard,
exact resume, 2-process DDP (gloo, CPU) and the demo config end to end."""

from __future__ import annotations

import itertools
import json
import os

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins import MixedPrecision
from torch.utils.data import DataLoader

from lit_hpcm.cli import main
from lit_hpcm.training.module import LitHPCM

MODES = [("adam", "none", "rd", "same_batch"), ("cautious_adam", "none", "rd", "same_batch")] + [
    (opt, "famo", tasks, update)
    for opt, tasks, update in itertools.product(("adam", "cautious_adam"), ("rd", "scales"), ("same_batch", "next_batch"))
]


def _batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(2, 3, 64, 64, generator=g) for _ in range(n)]


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    options = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    return L.Trainer(**(options | kwargs))


def _state(module: LitHPCM) -> dict[str, torch.Tensor]:
    """The module's state_dict, cloned (every entry a tensor, FAMO's inner Adam state included)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("optimizer,balancing,task_set,update", MODES)
def test_a_few_steps_of_every_mode_move_the_weights(tmp_path, optimizer, balancing, task_set, update):
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", optimizer=optimizer, balancing=balancing, task_set=task_set,
                     famo_update=update, lr=1e-3)
    before = _state(module)
    _trainer(tmp_path, max_steps=3).fit(module, DataLoader(_batches(3), batch_size=None))
    after = module.state_dict()
    assert not torch.equal(before["model.g_a.0.weight"], after["model.g_a.0.weight"])
    assert module.skipped_steps == 0
    if balancing == "famo":
        assert module.balancer.famo.weights().shape == (len(module.task_names),)
        moved = not torch.equal(before["balancer.famo.w"], after["balancer.famo.w"])
        # next_batch updates the logits from the 2nd step on; same_batch after every step
        assert moved


def test_non_finite_batch_is_skipped_and_changes_nothing(tmp_path):
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", optimizer="cautious_adam", balancing="famo", lr=1e-3)
    batches = _batches(2)
    trainer = _trainer(tmp_path, max_steps=1)
    trainer.fit(module, DataLoader(batches[:1], batch_size=None))
    state = _state(module)
    poisoned = batches[1].clone()
    poisoned[0, 0, 0, 0] = float("nan")
    # a skipped step is no optimizer step, so bound the run by epochs, not steps
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(module, DataLoader([poisoned], batch_size=None))
    assert module.skipped_steps == 1
    for key, value in _state(module).items():
        assert torch.equal(value, state[key]), key
    assert trainer.optimizers[0].state_dict()["state"] == {}  # the poisoned step never reached the optimizer


RESUMED_RECIPES = {  # FAMO with state carried between steps: bit shares and next-batch losses; loss-scale priors
    "scales_next_batch": dict(task_set="scales", famo_update="next_batch"),
    "rd_loss_scale": dict(task_set="rd", task_priors="loss_scale"),
}


@pytest.mark.parametrize("recipe", list(RESUMED_RECIPES))
def test_resume_from_a_checkpoint_continues_bit_identically(tmp_path, recipe):
    data = _batches(4)
    kwargs = dict(preset="tiny", optimizer="cautious_adam", balancing="famo", lr=1e-3, **RESUMED_RECIPES[recipe])

    def fit(max_epochs, ckpt=None, save=None):
        torch.manual_seed(0)
        module = LitHPCM(**kwargs)
        trainer = _trainer(tmp_path, max_epochs=max_epochs)
        trainer.fit(module, DataLoader(data, batch_size=None), ckpt_path=ckpt)
        if save:
            trainer.save_checkpoint(save)
        return module

    straight = fit(2)
    fit(1, save=tmp_path / "mid.ckpt")
    resumed = fit(2, ckpt=tmp_path / "mid.ckpt")
    resumed_state = _state(resumed)
    for key, value in _state(straight).items():
        assert torch.equal(value, resumed_state[key]), key
    assert torch.equal(straight.balancer.famo.w, resumed.balancer.famo.w)
    inner = [[m.balancer.famo.adam_exp_avg, m.balancer.famo.adam_exp_avg_sq, m.balancer.famo.adam_step] for m in (straight, resumed)]
    assert int(inner[0][2]) > 0 and bool(inner[0][1].gt(0).all())  # the inner Adam has taken steps
    assert all(torch.equal(a, b) for a, b in zip(*inner))
    if straight.balancer.loss_scale is not None:  # the running estimate has moved and is carried by the checkpoint
        assert bool(straight.balancer.loss_scale.started) and not torch.equal(straight.balancer.loss_scale.scale, torch.ones(2))


class _RecordRankState(L.Callback):
    """Writes each rank's weights, FAMO logits and loss-scale priors to a file at the end of training."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_train_end(self, trainer, pl_module):
        torch.save({"w": pl_module.balancer.famo.w.detach().clone(), "g_a": pl_module.model.g_a[0].weight.detach().clone(),
                    "loss_scale": pl_module.balancer.loss_scale.scale.clone()},
                   os.path.join(self.folder, f"rank{trainer.global_rank}.pt"))


def test_two_process_ddp_ends_with_identical_logits_weights_and_priors(tmp_path):
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", optimizer="cautious_adam", balancing="famo", task_priors="loss_scale", lr=1e-3)
    # different images per rank: only the all-reduce can keep the ranks' logits identical
    loader = DataLoader(_batches(4), batch_size=None)
    trainer = _trainer(tmp_path, max_steps=2, devices=2, strategy="ddp_spawn", use_distributed_sampler=True,
                       callbacks=[_RecordRankState(str(tmp_path))])
    trainer.fit(module, loader)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert torch.equal(ranks[0]["w"], ranks[1]["w"])
    assert torch.equal(ranks[0]["g_a"], ranks[1]["g_a"])
    assert not torch.equal(ranks[0]["w"], torch.zeros_like(ranks[0]["w"]))
    assert torch.equal(ranks[0]["loss_scale"], ranks[1]["loss_scale"])  # the running priors of averaged losses
    assert not torch.equal(ranks[0]["loss_scale"], torch.ones(2))


def test_demo_config_trains_balanced_rd_without_latent_collapse_and_tests_end_to_end(tmp_path):
    """The README's main command as configured (Balanced R-D: cautious Adam + FAMO with the authors' offsets,
    192 steps): y still carries most of the bits at the end (with offsets 0 it carried ~1e-5 bpp), and the
    test writes real-bitstream results."""
    import csv

    out = tmp_path / "demo"
    common = ["-c", "configs/demo.yaml", f"--trainer.default_root_dir={out}", f"--trainer.logger.init_args.save_dir={out}",
              f"--model.test_results={out}/test_results.json"]
    main(["fit", *common, f"--trainer.callbacks.init_args.dirpath={out}/checkpoints"])
    assert (out / "checkpoints" / "last.ckpt").is_file()
    rows = list(csv.DictReader(open(out / "logs" / "version_0" / "metrics.csv")))
    last = [r for r in rows if r.get("val/bpp")][-1]
    y_bpp = sum(float(last[f"val/bpp_{s}"]) for s in ("s1", "s2", "s3"))
    assert y_bpp > 0.5 * float(last["val/bpp"])
    main(["test", *common, f"--ckpt_path={out}/checkpoints/last.ckpt"])
    results = json.loads((out / "test_results.json").read_text())
    assert results["results"]["bpp"][0] > 0 and len(results["per_image"]) == 2
    assert all(row["bytes"] > 0 for row in results["per_image"])
    assert results["results"]["bpp-file"][0] > results["results"]["bpp"][0]  # the file adds header and CRC


def _one_image_loader(seed: int) -> DataLoader:
    """One batch of one 64×64 image: enough for the tests below, which test schedules, not the model."""
    return DataLoader([b[:1] for b in _batches(1, seed)], batch_size=None)


def _config_callback(config: str, class_name: str) -> tuple[L.Callback, dict]:
    """The callback `class_name` instantiated exactly as `config` (a YAML under configs/) declares it, and its
    init_args."""
    import yaml  # only these appended tests read configs directly
    from lightning.pytorch.cli import instantiate_class

    entries = yaml.safe_load(open(config))["trainer"]["callbacks"]
    (entry,) = [e for e in entries if e["class_path"].rsplit(".", 1)[1] == class_name]
    return instantiate_class((), entry), entry.get("init_args", {})


class _WeightProbe(L.Callback):
    """Records one live weight after every training batch and the weight validation runs with."""

    def __init__(self):
        self.after_batch: list[torch.Tensor] = []
        self.validated: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after_batch.append(pl_module.model.g_a[0].weight.detach().clone())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.validated.append(pl_module.model.g_a[0].weight.detach().clone())


def test_ema_of_the_balanced_config_is_what_validation_and_checkpoints_use(tmp_path):
    ema, init_args = _config_callback("configs/hpcm_base_balanced.yaml", "EMA")
    decay = init_args["decay"]
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", optimizer="cautious_adam", balancing="famo", lr=1e-3)
    batches = [b[:1] for b in _batches(4)]
    batches[2][0, 0, 0, 0] = float("nan")  # a skipped step: no optimizer step, so no EMA update either
    probe = _WeightProbe()  # after the EMA callback: validation hooks see the swapped-in average
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = _trainer(tmp_path, max_epochs=1, callbacks=[ema, probe, checkpoint], enable_checkpointing=True)
    trainer.fit(module, DataLoader(batches, batch_size=None), _one_image_loader(seed=1))
    assert module.skipped_steps == 1
    stepped = [w for i, w in enumerate(probe.after_batch) if i != 2]
    expected = stepped[0]  # AveragedModel copies the weights at its first update, then decays
    for live in stepped[1:]:
        expected = torch.lerp(expected, live, 1 - decay)  # get_ema_multi_avg_fn's update (foreach lerp)
    live = stepped[-1]
    assert (expected - live).abs().max() > 1e-5  # the average really lags the live weights
    assert torch.equal(probe.validated[0], expected)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert torch.equal(saved["state_dict"]["model.g_a.0.weight"], expected)  # what test/predict load
    assert torch.equal(saved["current_model_state"]["model.g_a.0.weight"], live)  # what a resume trains on
    assert torch.equal(module.model.g_a[0].weight, expected)  # Lightning leaves the average in the module


class _ScriptedMetric(L.Callback):
    """Logs `values[epoch]` as "scripted" during validation, standing in for a real monitored metric."""

    def __init__(self, values: list[float]):
        self.values = values
        self.lrs: list[list[float]] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.lrs.append([group["lr"] for group in trainer.optimizers[0].param_groups])

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        pl_module.log("scripted", self.values[trainer.current_epoch], on_epoch=True, batch_size=1)


def test_reduce_lr_on_plateau_drops_every_group_after_the_patience(tmp_path):
    # patience 1: epoch 1 improves, epochs 2 and 3 do not; the 2nd bad epoch (3) exceeds the patience
    script = _ScriptedMetric([3.0, 2.0, 2.0, 2.0, 2.0])
    module = LitHPCM(preset="tiny", lr=1e-3, lr_multipliers={"context": 0.1}, lr_scheduler="plateau",
                     plateau_patience=1, lr_decay=0.5, scheduler_monitor="scripted")
    trainer = _trainer(tmp_path, max_epochs=5, callbacks=[script])
    trainer.fit(module, _one_image_loader(seed=0), _one_image_loader(seed=1))
    names = [group["name"] for group in trainer.optimizers[0].param_groups]
    base = [1e-4 if name == "context" else 1e-3 for name in names]
    assert script.lrs[:4] == [pytest.approx(base)] * 4
    assert script.lrs[4] == pytest.approx([lr * 0.5 for lr in base])


def test_fp16_loss_scaling_is_refused_with_a_clear_error(tmp_path):
    """A skipped non-finite step never lets a GradScaler lower its scale: 16-mixed would skip forever."""
    # On the CPU Lightning turns "16-mixed" into bf16; a plugin with a loss scaler stands in for the GPU's.
    fp16 = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    trainer = L.Trainer(accelerator="cpu", plugins=[fp16], max_steps=1, logger=False,
                        enable_progress_bar=False, enable_checkpointing=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="16-mixed .* use bf16-mixed or 32-true"):
        trainer.fit(LitHPCM(preset="tiny"), DataLoader([torch.rand(1, 3, 32, 32)], batch_size=None))


def test_gradients_reach_the_optimizer_clipped_to_clip_grad_norm(tmp_path):
    """The step clips with the total norm it computed for its finiteness check (one pass over the gradients)."""

    class GradNorms(L.Callback):
        def __init__(self):
            self.norms: list[float] = []

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            grads = [p.grad for p in pl_module.model.parameters() if p.grad is not None]
            self.norms.append(float(torch.nn.utils.get_total_norm(grads)))

    torch.manual_seed(0)
    seen = GradNorms()
    trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, callbacks=[seen], default_root_dir=tmp_path)
    batches = [torch.rand(1, 3, 32, 32) for _ in range(3)]
    trainer.fit(LitHPCM(preset="tiny", clip_grad_norm=1e-3), DataLoader(batches, batch_size=None))
    assert seen.norms == pytest.approx([1e-3] * 3, rel=1e-3)

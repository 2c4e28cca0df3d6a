"""LitHPCM training: every optimizer × balancing × task set × update mode, the non-finite guard,
exact resume, 2-process DDP (gloo, CPU) and the demo config end to end."""

from __future__ import annotations

import itertools
import json
import os

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lit_hpcm.cli import main
from lit_hpcm.module import LitHPCM

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
    """The module's tensors (FAMO's inner-optimizer state is a nested dict and is compared separately)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


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
        assert module.famo.weights().shape == (len(module.task_names),)
        moved = not torch.equal(before["famo.w"], after["famo.w"])
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


def test_resume_from_a_checkpoint_continues_bit_identically(tmp_path):
    data = _batches(4)
    kwargs = dict(preset="tiny", optimizer="cautious_adam", balancing="famo", task_set="scales",
                  famo_update="next_batch", lr=1e-3)

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
    assert torch.equal(straight.famo.w, resumed.famo.w)
    inner = [_flat(m.famo.state_dict()["_extra_state"]) for m in (straight, resumed)]
    assert len(inner[0]) == len(inner[1]) > 0
    assert all(torch.equal(a, b) for a, b in zip(*inner))


def _flat(obj) -> list[torch.Tensor]:
    """Every tensor inside a nested dict/list, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for k in sorted(obj, key=str) for t in _flat(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _flat(item)]
    return []


class _RecordRankState(L.Callback):
    """Writes each rank's weights and FAMO logits to a file at the end of training."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_train_end(self, trainer, pl_module):
        torch.save({"w": pl_module.famo.w.detach().clone(), "g_a": pl_module.model.g_a[0].weight.detach().clone()},
                   os.path.join(self.folder, f"rank{trainer.global_rank}.pt"))


def test_two_process_ddp_ends_with_identical_logits_and_weights(tmp_path):
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", optimizer="cautious_adam", balancing="famo", lr=1e-3)
    # different images per rank: only the all-reduce can keep the ranks' logits identical
    loader = DataLoader(_batches(4), batch_size=None)
    trainer = _trainer(tmp_path, max_steps=2, devices=2, strategy="ddp_spawn", use_distributed_sampler=True,
                       callbacks=[_RecordRankState(str(tmp_path))])
    trainer.fit(module, loader)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert torch.equal(ranks[0]["w"], ranks[1]["w"])
    assert torch.equal(ranks[0]["g_a"], ranks[1]["g_a"])
    assert not torch.equal(ranks[0]["w"], torch.zeros_like(ranks[0]["w"]))


def test_demo_config_fits_and_tests_end_to_end(tmp_path):
    out = tmp_path / "demo"
    common = ["-c", "configs/demo.yaml", f"--trainer.default_root_dir={out}", f"--trainer.logger.init_args.save_dir={out}",
              f"--model.test_results={out}/test_results.json"]
    main(["fit", *common, "--trainer.max_epochs=1", "--data.train_length=8", "--data.patch_size=64",
          f"--trainer.callbacks.init_args.dirpath={out}/checkpoints"])
    assert (out / "checkpoints" / "last.ckpt").is_file()
    main(["test", *common, f"--ckpt_path={out}/checkpoints/last.ckpt"])
    results = json.loads((out / "test_results.json").read_text())
    assert results["results"]["bpp"][0] > 0 and len(results["per_image"]) == 2
    assert all(row["bytes"] > 0 for row in results["per_image"])

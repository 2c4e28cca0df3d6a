"""What the CPU can show of the GPU path (issue 26): coding apart from training settings, one CDF build, CUDA graphs
with freezing, per-rank RNG, host reads per step, the layout cache, epoch means with a skipped step, and
benchmarks/gpu_check.py's CPU run."""

from __future__ import annotations

import json
import subprocess
import sys
import traceback
from pathlib import Path

import lightning as L
import scipy.stats
import torch
from compressai._CXX import pmf_to_quantized_cdf
from PIL import Image
from torch.utils.data import DataLoader

from lit_hpcm.callbacks import EMA
from lit_hpcm.data import ImageDataModule, bundled_photos
from lit_hpcm.models import HPCM
from lit_hpcm.models.hpcm import LAYOUT_CACHE_SIZE
from lit_hpcm.optim.qp import gram_matrix, qp_weights
from lit_hpcm.training import rng_states
from lit_hpcm.training.module import LitHPCM

ROOT = Path(__file__).resolve().parents[1]


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    options = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    return L.Trainer(**(options | kwargs))


def _batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, 64, 64, generator=g) for _ in range(n)]


# -- 1, 2: coding is apart from the trainer's precision and the fit settings -------------------------------------
def test_test_results_are_the_same_under_bf16_mixed_and_32_true(tmp_path):
    folder = tmp_path / "test"
    folder.mkdir()
    photo = Image.open(bundled_photos(("chelsea.png",))[0]).convert("RGB")
    for i in range(2):  # large enough for MS-SSIM (176 px a side), which bf16 convolutions would ruin
        photo.crop((60 * i, 0, 60 * i + 192, 176)).save(folder / f"img{i}.png")
    data = ImageDataModule(train_dir=str(folder), val_dir=str(folder), test_dir=str(folder), num_workers=0)
    rows = {}
    for precision in ("32-true", "bf16-mixed"):
        torch.manual_seed(0)
        out = tmp_path / f"{precision}.json"
        _trainer(tmp_path, precision=precision).test(LitHPCM(preset="tiny", test_results=str(out)), datamodule=data)
        rows[precision] = [{k: r[k] for k in ("bytes", "bpp", "psnr-rgb", "ms-ssim-rgb")}
                           for r in json.loads(out.read_text())["per_image"]]
    assert rows["bf16-mixed"] == rows["32-true"]
    assert all(row["ms-ssim-rgb"] is not None for row in rows["32-true"])


_FLAGS = {"matmul_tf32": lambda: torch.backends.cuda.matmul.allow_tf32,
          "cudnn_tf32": lambda: torch.backends.cudnn.allow_tf32,
          "benchmark": lambda: torch.backends.cudnn.benchmark,
          "autocast": lambda: torch.is_autocast_enabled("cpu")}


def test_coding_ignores_autocast_and_the_fast_path_flags_and_restores_them():
    torch.manual_seed(0)
    model = HPCM("tiny").eval()
    model.update()
    seen = []
    model.g_s.register_forward_pre_hook(lambda *_: seen.append({k: f() for k, f in _FLAGS.items()}))
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    x = torch.rand(1, 3, 64, 64)
    try:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = True, False
        torch.backends.cudnn.benchmark = True
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.decompress(**{k: v for k, v in model.compress(x).items() if k != "symbol_crc"})
        after = {k: f() for k, f in _FLAGS.items()}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved
    assert seen == [{"matmul_tf32": False, "cudnn_tf32": True, "benchmark": False, "autocast": False}]
    assert out["x_hat"].dtype == torch.float32
    assert after == {"matmul_tf32": True, "cudnn_tf32": False, "benchmark": True, "autocast": False}


def test_setup_applies_channels_last_and_tf32_for_fit_only():
    module = LitHPCM(preset="tiny", channels_last=True, tf32=False)
    before = torch.backends.cudnn.allow_tf32
    module.setup("test")
    weight = module.model.g_a[0].weight
    assert weight.is_contiguous() and torch.backends.cudnn.allow_tf32 == before
    try:
        module.setup("fit")
        assert weight.is_contiguous(memory_format=torch.channels_last) and not torch.backends.cudnn.allow_tf32
        module.model.update()  # what test/predict run first: coding uses the NCHW layout again
        assert weight.is_contiguous()
    finally:
        torch.backends.cudnn.allow_tf32 = before


# -- 3: one CDF build -----------------------------------------------------------------------------------------------
def _float64_tables(scales: torch.Tensor, tail_mass: float = 1e-6, beta: float = 1.5) -> list[list[int]]:
    """Quantized CDFs of the generalized Gaussian from scipy in float64, independently of torch's gammaincc."""
    dist = scipy.stats.gennorm(beta)
    tables = []
    for scale in scales.double().tolist():
        center = int(torch.ceil(torch.tensor(scale, dtype=torch.float64) * -dist.ppf(tail_mass / 2)))
        samples = abs(torch.arange(2 * center + 1, dtype=torch.float64) - center)
        upper = dist.cdf(((0.5 - samples) / scale).numpy())
        lower = dist.cdf(((-0.5 - samples) / scale).numpy())
        pmf = list(upper - lower) + [2 * float(lower[0])]
        tables.append(pmf_to_quantized_cdf(pmf, 16))
    return tables


def test_cdf_tables_are_the_float64_build_whatever_the_models_arithmetic():
    torch.manual_seed(0)
    model = HPCM("tiny")
    model.update()
    entropy = model.y_entropy
    built = [row[: int(n)].tolist() for row, n in zip(entropy._quantized_cdf, entropy._cdf_length)]
    assert built == _float64_tables(entropy.scale_table)
    model.double().update()  # float64 parameters and buffers: the same tables
    again = [row[: int(n)].tolist() for row, n in zip(entropy._quantized_cdf, entropy._cdf_length)]
    assert again == built and entropy._quantized_cdf.dtype == torch.int32


# -- 4: CUDA graphs with progressive unfreezing -----------------------------------------------------------------------
def test_cuda_graphs_keep_requires_grad_on_and_drop_frozen_gradients(tmp_path):
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", cuda_graphs=True, lr=1e-3)
    groups = list(module.model.parameter_groups())
    module.set_frozen(["g_a", "h_a"], managed=groups)
    assert all(p.requires_grad for p in module.model.parameters())  # what a graph captures, it keeps
    frozen_before = module.model.g_a[0].weight.detach().clone()
    live_before = module.model.g_s[0].weight.detach().clone()
    _trainer(tmp_path, max_steps=2).fit(module, DataLoader(_batches(2), batch_size=None))
    assert torch.equal(module.model.g_a[0].weight, frozen_before)
    assert not torch.equal(module.model.g_s[0].weight, live_before)


# -- 5: per-rank RNG states -------------------------------------------------------------------------------------------
class _SimulatedDevice:
    """One rank's accelerator generator: a state it can be asked for and given back."""

    def __init__(self, index: int):
        self.state = torch.tensor([index, 100 + index], dtype=torch.uint8)
        self.generator = rng_states.DeviceGenerator(lambda: self.state.clone(), self._set, index)

    def _set(self, state: torch.Tensor) -> None:
        self.state = state.clone()


def test_each_rank_saves_and_restores_its_own_device_rng_state():
    devices = [_SimulatedDevice(rank) for rank in range(3)]
    cpu = torch.get_rng_state()
    own = [rng_states.own_states(d.generator) for d in devices]
    saved = rng_states.gather_states(own[0], lambda _: own)  # what rank 0 writes: every rank's states
    saved_states = [d.state.clone() for d in devices]
    for d in devices:
        d.state = torch.zeros(2, dtype=torch.uint8)  # the noise each device drew since
    torch.rand(5)
    for rank, d in enumerate(devices):
        rng_states.restore_states(saved, rank, d.generator)
    assert [d.state.tolist() for d in devices] == [s.tolist() for s in saved_states]
    assert torch.equal(torch.get_rng_state(), cpu)


def test_checkpoints_of_the_earlier_layout_give_each_device_its_entry():
    devices = [_SimulatedDevice(rank) for rank in range(2)]
    earlier = {"cpu": torch.get_rng_state(), "cuda": [torch.tensor([7, 7], dtype=torch.uint8),
                                                      torch.tensor([9, 9], dtype=torch.uint8)]}
    for rank, d in enumerate(devices):
        rng_states.restore_states(earlier, rank, d.generator)
    assert [d.state.tolist() for d in devices] == [[7, 7], [9, 9]]


# -- 6: host reads per step -----------------------------------------------------------------------------------------
class _HostReads:
    """Counts Tensor.item / __bool__ / tolist calls made from lit-hpcm's code or the EMA update, while active."""

    OURS = (str(ROOT / "lit_hpcm"), str(ROOT / "callbacks"), "swa_utils.py", "weight_averaging.py")

    def __init__(self, monkeypatch):
        self.active = False
        self.where: list[str] = []
        for name in ("item", "__bool__", "tolist"):
            monkeypatch.setattr(torch.Tensor, name, self._counted(getattr(torch.Tensor, name)))

    def _counted(self, method):
        def counted(tensor, *args, **kwargs):
            if self.active:
                caller = traceback.extract_stack(limit=2)[0]
                if any(part in caller.filename for part in self.OURS):
                    self.where.append(f"{caller.filename}:{caller.lineno}")
            return method(tensor, *args, **kwargs)
        return counted


class _Open(L.Callback):
    """Turns the counter on at the start of each training batch after the first (which builds the latent layout,
    once per image size)."""

    def __init__(self, reads: _HostReads):
        self.reads = reads

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.reads.active = batch_idx > 0


class _Close(_Open):
    """Turns it off after the batch-end hooks of the callbacks before it (the EMA update)."""

    def on_train_batch_start(self, *args):
        pass

    def on_train_batch_end(self, *args):
        self.reads.active = False


def test_a_balanced_training_step_reads_the_device_once_and_logs_no_python_numbers(tmp_path, monkeypatch):
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", optimizer="cautious_adam", balancing="famo", task_priors="loss_scale", lr=1e-3)
    logged = []
    log_dict = module.log_dict
    monkeypatch.setattr(module, "log_dict", lambda values, **kw: logged.extend(values.values()) or log_dict(values, **kw))
    reads = _HostReads(monkeypatch)
    callbacks = [_Open(reads), EMA(decay=0.9), _Close(reads)]
    steps = 4
    _trainer(tmp_path, max_steps=steps, callbacks=callbacks, log_every_n_steps=1000).fit(
        module, DataLoader(_batches(steps), batch_size=None))
    assert len(reads.where) == steps - 1 and len(set(reads.where)) == 1, reads.where  # the non-finite check
    assert "module.py" in reads.where[0]
    assert logged and all(isinstance(v, torch.Tensor) for v in logged)


def test_qp_gram_is_float64_and_a_singular_solve_does_not_raise():
    rows = torch.randn(3, 1000)
    gram = gram_matrix(rows)
    exact = rows.double() @ rows.double().T
    assert gram.dtype == torch.float64 and torch.allclose(gram, exact, rtol=1e-12, atol=1e-9)
    weights = qp_weights(torch.zeros(2, 2, dtype=torch.float64))  # no error check, hence no device read
    assert weights.shape == (2,) and not torch.isfinite(weights).all()


# -- 7: the layout cache ----------------------------------------------------------------------------------------------
def test_the_layout_cache_keeps_the_most_recent_sizes_only():
    model = HPCM("tiny")
    sizes = [(4 * k, 4 * k + 4) for k in range(1, 7)]
    for h, w in sizes:
        model.layout(h, w, torch.device("cpu"))
    model.layout(*sizes[3], torch.device("cpu"))  # a hit moves to the most recent end
    assert len(model._layouts) == LAYOUT_CACHE_SIZE
    assert [key[:2] for key in model._layouts] == [sizes[2], sizes[4], sizes[5], sizes[3]]


# -- 9: epoch means with a skipped step; where freed memory is kept ----------------------------------------------------
class _Metrics(L.Callback):
    def __init__(self):
        self.epoch_metrics = {}

    def on_train_end(self, trainer, pl_module):
        self.epoch_metrics = {k: v for k, v in trainer.logged_metrics.items() if k.endswith("_epoch")}


def test_an_epoch_with_a_skipped_step_logs_its_epoch_means(tmp_path):
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", lr=1e-3)
    batches = _batches(3)
    batches[1][0, 0, 0, 0] = float("nan")
    probe = _Metrics()
    _trainer(tmp_path, max_epochs=1, callbacks=[probe]).fit(module, DataLoader(batches, batch_size=None))
    assert module.skipped_steps == 1
    assert "train/loss_epoch" in probe.epoch_metrics


def test_freed_memory_is_kept_by_cpu_training_only(tmp_path, monkeypatch):
    from lit_hpcm.training import module as module_file

    calls = []
    monkeypatch.setattr(module_file, "keep_freed_memory", lambda: calls.append(1) or True)
    LitHPCM(preset="tiny").setup("fit")  # no trainer: no device known, nothing applied
    assert calls == []
    _trainer(tmp_path, max_steps=1).fit(LitHPCM(preset="tiny"), DataLoader(_batches(1), batch_size=None))
    assert calls == [1]


# -- benchmarks/gpu_check.py stays runnable ---------------------------------------------------------------------------
def test_gpu_check_runs_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "-o", str(out)],
                   check=True, cwd=tmp_path, timeout=600)
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["checks"]
    failed = {name: c for name, c in report["checks"].items() if c.get("ok") is False}
    assert not failed, failed

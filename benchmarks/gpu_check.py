"""One script that proves the GPU path (issue 26) in a few minutes when a GPU is lent; `--device cpu` runs the same
checks small (tiny preset, seconds) so CI keeps it alive (tests/test_gpu_path.py).

Checks, each a JSON entry with "ok" (true / false; null where the device cannot show it) and its numbers:

- fit: 10 steps of the Balanced recipe (cautious Adam + FAMO same_batch + loss-scale priors) with the EMA callback
  and the run CSV logger; on CUDA under `torch.cuda.set_sync_debug_mode("warn")`: synchronizing calls per step
  (expected 1: the non-finite check), and on any device the host reads made from lit-hpcm's code.
- codec_round_trip: files encoded under bf16 autocast and with the fit settings (TF32, cuDNN autotuning,
  channels_last weights) are byte-identical to plain ones and decode to the same image.
- cdf_tables: tables built by `update()` on the device equal those built on the CPU.
- compress_processes: two `lit-hpcm compress --device DEVICE` processes write byte-identical files.
- graphs_unfreezing: `cuda_graphs` with a group frozen, then released: trained only once released.
- layout_cache: eval forwards over 6 image sizes keep at most LAYOUT_CACHE_SIZE layouts (and the memory bounded).
- train_step: benchmarks/train_step.py (CUDA: Base b16, fp32 and bf16+channels_last+graphs, Adam and FAMO
  same_batch) against the 2026-11-22 table of docs/PERFORMANCE.md.

    python benchmarks/gpu_check.py --device cuda -o benchmarks/results/gpu_check.json
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import lightning as L
import torch

from _common import provenance, write_json
from lit_hpcm import codec
from lit_hpcm.callbacks import EMA
from lit_hpcm.data import ImageDataModule, bundled_photos
from lit_hpcm.data.images import image_to_tensor, open_image
from lit_hpcm.loggers.csv_logger import RunCSVLogger
from lit_hpcm.models.hpcm import LAYOUT_CACHE_SIZE
from lit_hpcm.training.module import LitHPCM

ROOT = Path(__file__).resolve().parents[1]

# docs/PERFORMANCE.md, 2026-11-22 (6193fe2, torch 2.11, H100): Base b16 median step in seconds (fastest lease).
REFERENCE_2026_11_22 = {("fp32", "adam"): 0.1121, ("fp32", "famo_same_batch"): 0.1576,
                        ("bf16-cl-graphs", "famo_same_batch"): 0.0947}

# Per device: preset, batch, crop, image sizes for the layout cache, train_step.py arguments.
SIZES = {
    "cuda": {"preset": "base", "batch": 16, "crop": 256, "layouts": [256, 512, 768, 1024, 1536, 2048],
             "train_step": ["--presets", "base", "--batch-sizes", "16", "--modes", "fp32", "bf16-cl-graphs",
                            "--recipes", "adam", "famo_same_batch", "--steps", "10", "--warmup", "3"]},
    "cpu": {"preset": "tiny", "batch": 2, "crop": 64, "layouts": [64, 80, 96, 112, 128, 144],
            "train_step": ["--presets", "tiny", "--batch-sizes", "2", "--modes", "fp32", "--recipes", "adam",
                           "--steps", "2", "--warmup", "1", "--workers", "0"]},
}


class HostReads:
    """Counts Tensor.item / __bool__ / tolist calls made from lit-hpcm's code while `active` (the CPU's view of a
    device read: on a GPU each is a synchronize)."""

    OURS = (str(ROOT / "lit_hpcm"), str(ROOT / "callbacks"))

    def __init__(self):
        self.active = False
        self.count = 0
        self._saved = {name: getattr(torch.Tensor, name) for name in ("item", "__bool__", "tolist")}

    def __enter__(self):
        for name, method in self._saved.items():
            setattr(torch.Tensor, name, self._counted(method))
        return self

    def __exit__(self, *exc):
        for name, method in self._saved.items():
            setattr(torch.Tensor, name, method)

    def _counted(self, method):
        def counted(tensor, *args, **kwargs):
            if self.active:
                caller = traceback.extract_stack(limit=2)[0].filename
                self.count += any(part in caller for part in self.OURS)
            return method(tensor, *args, **kwargs)
        return counted


class SyncWindow(L.Callback):
    """Counts host reads and (on CUDA) synchronizing calls from the start of each batch after the first to the end
    of the callbacks listed before this one."""

    def __init__(self, reads: HostReads):
        self.reads = reads
        self.syncs = 0
        self.steps = 0
        self._caught = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:  # the first step builds layouts and graphs: not a steady-state step
            return
        self.reads.active = True
        if pl_module.device.type == "cuda":
            self._caught = warnings.catch_warnings(record=True)
            self._records = self._caught.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self.reads.active:
            return
        self.reads.active = False
        self.steps += 1
        if self._caught is not None:
            torch.cuda.set_sync_debug_mode("default")
            self.syncs += sum("synchroniz" in str(w.message) for w in self._records)
            self._caught.__exit__(None, None, None)
            self._caught = None


def check_fit(device: str, size: dict, work: Path) -> tuple[dict, LitHPCM, Path]:
    """10 Balanced-recipe steps with EMA and the CSV logger; syncs and host reads per steady step; a checkpoint."""
    L.seed_everything(0, verbose=False)
    module = LitHPCM(preset=size["preset"], optimizer="cautious_adam", balancing="famo", task_priors="loss_scale",
                     lr=2e-4, famo_gamma=0.003)
    data = ImageDataModule(patch_size=size["crop"], batch_size=size["batch"], num_workers=0,
                           train_length=size["batch"] * 10)
    with HostReads() as reads:
        window = SyncWindow(reads)
        trainer = L.Trainer(accelerator=device, devices=1, max_steps=10, logger=RunCSVLogger(str(work)),
                            log_every_n_steps=50, callbacks=[EMA(decay=0.999), window], enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            num_sanity_val_steps=0, default_root_dir=work)
        trainer.fit(module, datamodule=data)
    checkpoint = work / "fit.ckpt"
    trainer.save_checkpoint(checkpoint)
    row = {"steps_counted": window.steps, "host_reads_per_step": reads.count / max(window.steps, 1),
           "skipped_steps": module.skipped_steps}
    if device == "cuda":
        row["syncs_per_step"] = window.syncs / max(window.steps, 1)
        row["ok"] = row["syncs_per_step"] <= 1 and row["host_reads_per_step"] == 1
    else:
        row["ok"] = row["host_reads_per_step"] == 1
    return row, module, checkpoint


def _photo(device: str, size: dict) -> torch.Tensor:
    """A crop of a bundled photo [3, crop, crop] in [0, 1] on `device`."""
    image = open_image(bundled_photos(("chelsea.png",))[0]).crop((0, 0, size["crop"], size["crop"]))
    return image_to_tensor(image).to(device)


def check_codec_round_trip(model, device: str, size: dict) -> dict:
    """Plain file vs files coded under bf16 autocast and with the fit settings; all decoded by a plain decoder."""
    x = _photo(device, size)
    model.update()
    plain = codec.encode(model, x)
    with torch.autocast(device, dtype=torch.bfloat16):
        under_bf16 = codec.encode(model, x)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.benchmark = True
    model.to(memory_format=torch.channels_last)
    try:
        with_fit_settings = codec.encode(model, x)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved
        model.to(memory_format=torch.contiguous_format)
    decoded = [codec.decode_tensor(data, model)[0] for data in (plain, under_bf16, with_fit_settings)]
    same_bytes = plain == under_bf16 == with_fit_settings
    same_images = all(torch.equal(decoded[0], d) for d in decoded[1:])
    return {"bytes": len(plain), "same_bytes": same_bytes, "same_images": same_images, "ok": same_bytes and same_images}


def check_cdf_tables(model, device: str) -> dict:
    """`update()` on the model's device and on a CPU copy: identical tables."""
    model.update()
    on_cpu = copy.deepcopy(model).cpu()
    on_cpu.update()
    names = ("_quantized_cdf", "_offset", "_cdf_length")
    pairs = [(getattr(a, n).cpu(), getattr(b, n)) for a, b in ((model.y_entropy, on_cpu.y_entropy),
             (model.hyperprior.entropy, on_cpu.hyperprior.entropy)) for n in names]
    return {"device": device, "ok": all(torch.equal(a, b) for a, b in pairs)}


def check_compress_processes(checkpoint: Path, device: str, size: dict, work: Path) -> dict:
    """Two `lit-hpcm compress` processes on the same image: the same bytes."""
    image = work / "crop.png"
    open_image(bundled_photos(("chelsea.png",))[0]).crop((0, 0, size["crop"], size["crop"])).save(image)
    outputs = []
    for i in range(2):
        target = work / f"crop{i}.hpcm"
        subprocess.run([sys.executable, "-c", "from lit_hpcm.cli import main; raise SystemExit(main())", "compress",
                        str(image), "-o", str(target),
                        "--ckpt", str(checkpoint), "--device", device, "--force"], check=True, capture_output=True)
        outputs.append(target.read_bytes())
    return {"bytes": len(outputs[0]), "ok": outputs[0] == outputs[1]}


class _ReleaseAt(L.Callback):
    """Unfreezes every group before training batch `step` (what ProgressiveUnfreezing does at its milestone), and
    keeps g_a's first weight as it was then."""

    def __init__(self, step: int, groups: list[str]):
        self.step, self.groups = step, groups
        self.at_release = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            self.at_release = pl_module.model.g_a[0].weight.detach().cpu().clone()
            pl_module.set_frozen([], managed=self.groups)


def check_graphs_unfreezing(device: str, size: dict) -> dict:
    """cuda_graphs with g_a frozen for 3 steps, then released for 3: g_a changes only after the release."""
    L.seed_everything(0, verbose=False)
    module = LitHPCM(preset=size["preset"], cuda_graphs=True, lr=1e-3)
    groups = list(module.model.parameter_groups())
    weights = [module.model.g_a[0].weight.detach().cpu().clone()]
    batches = [torch.rand(size["batch"], 3, size["crop"], size["crop"]) for _ in range(3)]
    release = _ReleaseAt(step=3, groups=groups)
    trainer = L.Trainer(accelerator=device, devices=1, max_steps=6, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[release])
    module.set_frozen(["g_a"], managed=groups)
    trainer.fit(module, torch.utils.data.DataLoader(batches * 2, batch_size=None))
    weights += [release.at_release, module.model.g_a[0].weight.detach().cpu().clone()]
    frozen_kept = torch.equal(weights[0], weights[1])
    released_trained = not torch.equal(weights[1], weights[2])
    return {"graphed": device == "cuda", "frozen_kept": frozen_kept, "released_trained": released_trained,
            "ok": frozen_kept and released_trained}


def check_layout_cache(model, device: str, size: dict) -> dict:
    """Eval forwards over 6 square sizes: cached layouts and (CUDA) allocated memory after each."""
    model.eval()
    rows = []
    with torch.no_grad():
        for side in size["layouts"]:
            model(torch.rand(1, 3, side, side, device=device))
            allocated = torch.cuda.memory_allocated() / 2**20 if device == "cuda" else None
            rows.append({"side": side, "cached_layouts": len(model._layouts), "allocated_mib": allocated})
    return {"sizes": rows, "ok": max(r["cached_layouts"] for r in rows) <= LAYOUT_CACHE_SIZE}


def check_train_step(device: str, size: dict, work: Path) -> dict:
    """benchmarks/train_step.py rows, with the 2026-11-22 step time and the ratio where the table has one."""
    target = work / "train_step.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_step.py"), *size["train_step"], "-o", str(target)],
                   check=True, capture_output=True, cwd=ROOT / "benchmarks")
    rows = json.loads(target.read_text())["rows"]
    for row in rows:
        reference = REFERENCE_2026_11_22.get((row.get("mode"), row.get("recipe"))) if device == "cuda" else None
        row["reference_2026_11_22_s"] = reference
        if reference and "median_step_s" in row:
            row["vs_reference"] = row["median_step_s"] / reference
        row.pop("trace", None)
    return {"rows": rows, "ok": all("error" not in r for r in rows)}


def run_checks(device: str, output: Path) -> dict:
    """Every check in order, each timed; one failing check is recorded and the others still run."""
    size = SIZES[device]
    report = {"benchmark": "gpu_check", "device": device, "provenance": provenance(), "checks": {}}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        state = {}

        def fit():
            row, state["module"], state["checkpoint"] = check_fit(device, size, work)
            return row

        steps = {
            "fit": fit,
            "codec_round_trip": lambda: check_codec_round_trip(state["module"].model, device, size),
            "cdf_tables": lambda: check_cdf_tables(state["module"].model, device),
            "compress_processes": lambda: check_compress_processes(state["checkpoint"], device, size, work),
            "graphs_unfreezing": lambda: check_graphs_unfreezing(device, size),
            "layout_cache": lambda: check_layout_cache(state["module"].model, device, size),
            "train_step": lambda: check_train_step(device, size, work),
        }
        for name, step in steps.items():
            started = time.perf_counter()
            try:
                row = step()
            except Exception as error:  # recorded, so one failure does not hide the other checks
                row = {"ok": False, "error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()[-2000:]}
            row["seconds"] = round(time.perf_counter() - started, 2)
            report["checks"][name] = row
            write_json(output, report)
            print(f"{name:20s} ok={row['ok']} ({row['seconds']} s)", flush=True)
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=sorted(SIZES), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.json")
    args = parser.parse_args(argv)
    run_checks(args.device, args.output)


if __name__ == "__main__":
    main()

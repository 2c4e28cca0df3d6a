"""LitHPCM: HPCM training with Balanced Rate-Distortion optimization, by manual optimization.

One training step, in order::

    x ──▶ HPCM ──▶ task losses L (distortion, rate | distortion, rate_z, rate_s1, rate_s2, rate_s3)
      objective = Σ L                          (balancing "none": the official λ·255²·MSE + bpp)
                | FAMO(L) = Σ z_i log(L_i − m_i + ε) / c   (balancing "famo")
      backward ──▶ drop grads of frozen groups
      non-finite losses or grads (on any rank; one device→host read per step) ──▶ skip, count, FAMO restored
      clip (total norm, computed once for the check) ──▶ optimizer step (Adam | cautious Adam)
      FAMO logits step with δ = log D(L before) − log D(L after), L averaged over DDP ranks;
        "after" = the same batch re-run under no_grad ("same_batch", the paper's recipe), or the next
        batch's pre-step losses ("next_batch": no extra forward, one step of delay, other images).

Validation runs the eval-mode forward (hard rounding) and logs rates from likelihoods; `test`
writes every image to real file bytes and back (`lit_hpcm.codec`) and reports bytes-based bpp;
`predict` does the same and returns the bytes and the decoded image (`lit_hpcm.callbacks.codec_writer` writes them).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Iterable, Literal, Optional, Sequence, Union

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as ms_ssim

from .. import codec
from ..data.images import save_image
from ..errors import ConfigError, TrainingStopped
from ..evaluation.keys import MEASURES
from ..evaluation.measure import measure_images, psnr_db, summarize
from ..evaluation.results import write_results
from ..loggers.csv_logger import record_log_state
from ..models import HPCM, PRESETS, load_weights
from ..models.weights import load_into
from ..optim import CautiousAdam
from ..optim.schedules import milestone_scheduler
from . import freezing, lightning_private, rng_states
from .balancer import build_balancer
from .checkpoint_io import check_lightning_checkpoint
from .cpu_allocator import keep_freed_memory
from .cuda_graphs import GraphedTrainingForward
from .epoch_means import EpochMeans
from .tasks import RATE_PARTS, task_losses, task_names

# Lightning 2.6 builds torch pytree LeafSpec objects, which torch 2.14 deprecates with a FutureWarning on every
# fit; neither is ours to fix. Only that message is hidden.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)


def _images(batch) -> torch.Tensor:
    """Training batches are tensors [B, 3, H, W]; evaluation batches dicts with "image" and "name"."""
    return batch["image"] if isinstance(batch, dict) else batch


def _check_settings(lmbda: float, lr: float, clip_grad_norm: Optional[float], plateau_start_epoch: int, preset: str,
                    max_consecutive_skips: Optional[int]) -> None:
    """Refuse values that cannot train (ConfigError naming the option) before anything is built or written; the
    balancing options are checked by `build_balancer`."""
    problems = []
    if preset not in PRESETS:
        problems.append(f"preset must be one of {', '.join(sorted(PRESETS))}, got {preset!r}")
    if max_consecutive_skips is not None and max_consecutive_skips < 1:
        problems.append(f"max_consecutive_skips must be >= 1 or null (never stop), got {max_consecutive_skips}")
    for name, value in (("lmbda", lmbda), ("lr", lr)):
        if not value > 0:
            problems.append(f"{name} must be > 0, got {value}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        problems.append(f"clip_grad_norm must be > 0 or null (off), got {clip_grad_norm}")
    if plateau_start_epoch < 0:
        problems.append(f"plateau_start_epoch must be >= 0, got {plateau_start_epoch}")
    if problems:
        raise ConfigError("; ".join(problems))


def _mean_psnr(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Mean over the images of [B, 3, H, W] of each image's PSNR (dB, x_hat clamped to [0, 1]): the one PSNR
    logged, averaged over images as `test` and the literature report it (logged with the batch size as weight)."""
    with torch.no_grad():
        mse = (x_hat.detach().float().clamp(0, 1) - x.float()).pow(2).mean(dim=(1, 2, 3))
        return psnr_db(mse.clamp_min(1e-10)).mean()  # floored: a logged inf would spoil every epoch mean


class LitHPCM(L.LightningModule):
    """HPCM + R-D loss + optimizer + optional FAMO task balancing.

    Args:
        preset, model_options: the network (`HPCM(preset, **model_options)`).
        lmbda: R-D trade-off λ; distortion is λ·255²·MSE ("mse") or λ·(1 − MS-SSIM) ("ms-ssim").
        optimizer: "adam" (official HPCM recipe) or "cautious_adam" (Balanced R-D).
        lr, betas, weight_decay: optimizer settings; lr_multipliers: per parameter group
            (g_a, g_s, h_a, h_s, context, entropy) factors on lr. lr_scale_with_world_size: multiply lr by
            the number of processes (the Balanced R-D authors' rule, `lr *= num_processes`).
        balancing: "none", "famo" (Balanced R-D's first strategy, for training from scratch) or "qp" (its
            second, for fine-tuning: per-step QP weights, `lit_hpcm.optim.qp`; offsets from famo_min_losses);
            task_set: "rd" or "scales"; famo_gamma (float or per task),
            famo_w_lr, famo_update ("same_batch" | "next_batch"), famo_min_losses (FAMO's offsets m: a float
            or one per task; -1, the Balanced R-D authors' value, by default; 0 is FAMO's paper),
            task_priors (one per task, or "bit_share": the scales' running share of the bits as priors and
            minus it as the rates' offsets, `lit_hpcm.optim.bit_share`; default for "scales", ones for "rd")
            with bit_share_decay (its EMA decay), or "loss_scale": every task's running gap L − m as its prior,
            so that equal logits give the standard R-D gradient (lit-hpcm's R-D-anchored start, not the
            authors' script; `lit_hpcm.optim.loss_scale`) with loss_scale_decay; or scale_weights ([s1, s2, s3]
            fixed priors of the scales).
        clip_grad_norm: gradient-norm clip (None: off).
        max_consecutive_skips: stop the fit (`TrainingStopped`, exit code 2) after this many steps in a row were
            skipped for a non-finite loss or gradient (None: never); a run whose weights are no longer finite
            stops at its first skipped step. Nothing is saved after the stop.
        lr_scheduler: "none", "multistep" (at the lr_milestones, in epochs: × lr_decay each time, or with
            a list, lr × lr_decay[i] from milestone i on) or "plateau" (ReduceLROnPlateau on
            `scheduler_monitor`, factor lr_decay, plateau_patience epochs, stepped after the validation of
            every epoch >= plateau_start_epoch).
        init_weights: start from these weights (our checkpoint or an official file; not a resume).
        compile_model: `torch.compile` the training forward (True, or a dict of torch.compile options,
            e.g. {"mode": "reduce-overhead"} for CUDA graphs); validation and test run eagerly.
        channels_last: keep 4-D weights and inputs in NHWC layout (faster convolutions in bf16).
        cuda_graphs: replay the training forward and backward as recorded CUDA graphs
            (`lit_hpcm.training.cuda_graphs`; single GPU, fixed batch shape; see docs/PERFORMANCE.md).
        tf32: let fp32 matmuls and convolutions use TF32 tensor cores (the official recipe's setting).
        log_images: how many validation reconstructions to log per validation run.
        test_results: where `test` writes its JSON (default: <trainer.default_root_dir>/test_results.json).
    """

    def __init__(
        self,
        preset: str = "base",
        model_options: Optional[dict] = None,
        lmbda: float = 0.0067,
        distortion: Literal["mse", "ms-ssim"] = "mse",
        optimizer: Literal["adam", "cautious_adam"] = "adam",
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        lr_multipliers: Optional[dict[str, float]] = None,
        balancing: Literal["none", "famo", "qp"] = "none",
        task_set: str = "rd",
        famo_gamma: Union[float, list[float]] = 0.001,
        famo_w_lr: float = 0.025,
        famo_update: Literal["same_batch", "next_batch"] = "same_batch",
        famo_min_losses: Union[float, list[float]] = -1.0,
        task_priors: Union[None, list[float], Literal["bit_share", "loss_scale"]] = None,
        bit_share_decay: float = 0.99,
        loss_scale_decay: float = 0.9,
        scale_weights: Optional[list[float]] = None,
        clip_grad_norm: Optional[float] = 1.0,
        max_consecutive_skips: Optional[int] = 50,
        lr_scale_with_world_size: bool = False,
        lr_scheduler: Literal["none", "multistep", "plateau"] = "none",
        lr_milestones: Sequence[int] = (),
        lr_decay: Union[float, list[float]] = 0.1,
        plateau_patience: int = 10,
        plateau_start_epoch: int = 0,
        scheduler_monitor: str = "val/loss",
        init_weights: Optional[str] = None,
        log_images: int = 2,
        test_results: Optional[str] = None,
        compile_model: Union[bool, dict] = False,
        channels_last: bool = False,
        cuda_graphs: bool = False,
        tf32: bool = True,
    ):
        super().__init__()
        _check_settings(lmbda=lmbda, lr=lr, clip_grad_norm=clip_grad_norm, plateau_start_epoch=plateau_start_epoch,
                        preset=preset, max_consecutive_skips=max_consecutive_skips)
        self.task_names = task_names(task_set)
        self.balancer = build_balancer(balancing, task_set, len(self.task_names), famo_w_lr=famo_w_lr,
                                       famo_gamma=famo_gamma, famo_update=famo_update,
                                       famo_min_losses=famo_min_losses, task_priors=task_priors,
                                       scale_weights=scale_weights, bit_share_decay=bit_share_decay,
                                       loss_scale_decay=loss_scale_decay)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.model = HPCM(preset, **(model_options or {}))
        self.balancing = balancing
        self.lr_multipliers: dict[str, float] = dict(lr_multipliers or {})
        self.frozen_groups: set[str] = set()
        self.skipped_steps = 0
        self.consecutive_skips = 0  # skipped steps since the last step that trained
        self.epoch_means = EpochMeans()  # the train/*_epoch values, checkpointed
        self._test_rows: list[dict] = []
        self._loaded_step: Optional[int] = None  # global step of the checkpoint loaded last (test's meta)
        self._resume_logged_batches: Optional[int] = None  # logging step to restore at the start of a resumed fit
        self._compiled_forward = None
        self._device_copies: dict[str, tuple[float, torch.Tensor]] = {}  # see _on_device
        if init_weights:
            load_into(self.model, load_weights(init_weights, preset), init_weights)

    # -- setup -----------------------------------------------------------------------------------
    @property
    def _attached_trainer(self) -> Optional[L.Trainer]:
        """The trainer this module is attached to, or None (built for a test, loaded to compress)."""
        return lightning_private.attached_trainer(self)

    @property
    def base_lr(self) -> float:
        """The learning rate every group's multiplier applies to: `lr`, times the number of processes with
        `lr_scale_with_world_size`."""
        hp = self.hparams
        scale = self.trainer.world_size if hp.lr_scale_with_world_size and self._attached_trainer is not None else 1
        return hp.lr * scale

    def configure_optimizers(self):
        hp = self.hparams
        groups = self.model.parameter_groups()
        unknown = sorted(set(self.lr_multipliers) - set(groups))
        if unknown:
            raise ValueError(f"lr_multipliers for unknown groups {unknown}; groups are {list(groups)}")
        param_groups = [
            {"params": [p for _, p in members], "name": name, "lr": self.base_lr * self.lr_multipliers.get(name, 1.0)}
            for name, members in groups.items()
        ]
        optimizer_class = {"adam": torch.optim.Adam, "cautious_adam": CautiousAdam}[hp.optimizer]
        optimizer = optimizer_class(param_groups, lr=self.base_lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        if hp.lr_scheduler == "none":
            return optimizer
        if hp.lr_scheduler == "multistep":
            scheduler = milestone_scheduler(optimizer, list(hp.lr_milestones), hp.lr_decay)
        else:
            if not isinstance(hp.lr_decay, (int, float)):
                raise ValueError(f"the plateau scheduler takes one lr_decay factor, got {hp.lr_decay}")
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=hp.lr_decay, patience=hp.plateau_patience
            )
        # no "monitor" key: the module steps its schedulers itself (manual optimization), Lightning would ignore it
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def setup(self, stage: str) -> None:
        """CPU training keeps freed memory (`lit_hpcm.training.cpu_allocator`); fast-path settings for fit only: TF32, memory
        layout and the compiled training forward. Test and predict code with fixed arithmetic
        (`lit_hpcm.models.hpcm.coding_arithmetic`), which no training setting reaches."""
        hp = self.hparams
        if self._attached_trainer is not None and self.trainer.strategy.root_device.type == "cpu":
            keep_freed_memory()  # not in GPU ranks: there it would only keep each process's host-memory peak
        if stage != "fit":
            return
        torch.backends.cuda.matmul.allow_tf32 = hp.tf32
        torch.backends.cudnn.allow_tf32 = hp.tf32
        if hp.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self._compiled_forward is not None:
            return
        if self._attached_trainer is not None and getattr(self._attached_trainer.precision_plugin, "scaler", None) is not None:
            # A step with non-finite gradients is skipped before the loss scaler could lower its scale.
            raise ValueError("precision 16-mixed (fp16 loss scaling) is not supported; use bf16-mixed or 32-true")
        if hp.cuda_graphs and hp.compile_model:
            raise ValueError("choose one fast path: cuda_graphs or compile_model, not both")
        if hp.cuda_graphs and self._attached_trainer is not None and self._attached_trainer.world_size > 1:
            raise ValueError("cuda_graphs is for single-GPU runs (one process); turn it off for DDP")
        if hp.cuda_graphs:
            self._compiled_forward = GraphedTrainingForward(self.model)
        elif hp.compile_model:
            options = hp.compile_model if isinstance(hp.compile_model, dict) else {}
            self._compiled_forward = torch.compile(self.model.forward, **options)

    def _forward(self, x: torch.Tensor) -> dict:
        """The model on x [B, 3, H, W]: compiled or graphed while training (if configured), eager otherwise."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self._compiled_forward is None or not self.model.training:
            return self.model(x)
        if self.hparams.compile_model:
            self.model.prepare_layout(x)
            # Each call is a new step for CUDA-graph trees: earlier outputs may be overwritten.
            torch.compiler.cudagraph_mark_step_begin()
        return self._compiled_forward(x)

    # -- the math of a step ------------------------------------------------------------------------
    def _distortion(self, x: torch.Tensor, x_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted distortion λ·D, MSE) for images [B, 3, H, W]."""
        mse = F.mse_loss(x_hat.float(), x.float())
        if self.hparams.distortion == "mse":
            return self.hparams.lmbda * 255.0**2 * mse, mse
        return self.hparams.lmbda * (1 - ms_ssim(x_hat.float(), x.float(), data_range=1.0)), mse

    def _losses(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Task losses [n_tasks] of batch x, and what to log about it."""
        out = self._forward(x)
        distortion, mse = self._distortion(x, out["x_hat"])
        num_pixels = x.shape[0] * x.shape[2] * x.shape[3]
        losses = task_losses(self.hparams.task_set, distortion, out["bits"], num_pixels)
        stats = {"distortion": distortion, "mse": mse, "bpp": sum(out["bits"].values()).sum() / num_pixels,
                 "psnr": _mean_psnr(x, out["x_hat"])}
        stats |= {f"bpp_{part}": out["bits"][part].sum() / num_pixels for part in RATE_PARTS}
        return losses, stats | {"x_hat": out["x_hat"]}

    def _synced(self, losses: torch.Tensor) -> torch.Tensor:
        """Task losses averaged over DDP ranks (identical on every rank), detached."""
        return self._rank_mean(losses.detach())

    def _rank_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """A new tensor: `tensor` (any shape, same on every rank) averaged over DDP ranks by one all-reduce.

        Not `strategy.reduce`, which puts a barrier before every all-reduce; NCCL averages itself (op AVG),
        gloo (CPU) sums and divides."""
        result = tensor.clone()
        if self._attached_trainer is None or self.trainer.world_size == 1:
            return result
        dist = torch.distributed
        if dist.get_backend() == dist.Backend.NCCL:
            dist.all_reduce(result, op=dist.ReduceOp.AVG)
            return result
        dist.all_reduce(result, op=dist.ReduceOp.SUM)
        return result.div_(self.trainer.world_size)

    def training_step(self, batch, batch_idx):
        x = _images(batch)
        optimizer = self.optimizers()
        losses, stats = self._losses(x)
        synced = self._synced(losses)
        snapshot = self.balancer.begin(synced)
        optimizer.zero_grad(set_to_none=True)
        objective = self.balancer.backward(losses, synced, self.manual_backward,
                                           lambda: freezing.trained_parameters(self.model, self.frozen_groups),
                                           self._rank_mean)
        freezing.drop_frozen_grads(self.model, self.frozen_groups)
        stepped = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in stepped]) if stepped else losses.new_zeros(())
        problem = self._non_finite(losses, grad_norm)
        if problem:
            optimizer.zero_grad(set_to_none=True)
            self.balancer.rollback(snapshot)
            return self._skip(problem)
        if self.hparams.clip_grad_norm and stepped:
            # What Lightning's clip_gradients does (clip_grad_norm_), with the norm already computed above.
            torch.nn.utils.clip_grads_with_norm_(stepped, self.hparams.clip_grad_norm, grad_norm)
        optimizer.step()
        self.consecutive_skips = 0
        self.balancer.commit(synced, lambda: self._synced(self._losses_without_grad(x)))
        self._log_step("train", objective, synced, stats, x.shape[0])
        return objective.detach()

    def _losses_without_grad(self, x: torch.Tensor) -> torch.Tensor:
        """Task losses [n_tasks] of batch x under the updated weights (FAMO's same-batch re-run)."""
        with torch.no_grad():
            return self._losses(x)[0]

    # -- freezing and per-group learning rates (set by callbacks through these two methods only) ----------
    def set_frozen(self, groups: Iterable[str], managed: Iterable[str]) -> None:
        """Freeze exactly `groups` (parameter group names; `lit_hpcm.training.freezing`). Their gradients are dropped
        inside the training step; with one process and no `cuda_graphs`, the `managed` groups' requires_grad is
        switched too. (A CUDA graph computes the gradients of the parameters that required them at capture,
        forever: switching requires_grad would never train a group released later.)"""
        self.frozen_groups = set(groups)
        if not (self.hparams.cuda_graphs or (self._attached_trainer is not None and self.trainer.world_size > 1)):
            freezing.switch_requires_grad(self.model, self.frozen_groups, managed)

    def set_lr_multipliers(self, multipliers: dict[str, float]) -> None:
        """Factors on the base lr per parameter group, merged over the configured ones; read when the optimizer
        is built (`configure_optimizers`), so set them before fitting starts."""
        self.lr_multipliers = {**self.lr_multipliers, **multipliers}

    def _non_finite(self, losses: torch.Tensor, grad_norm: torch.Tensor) -> Optional[str]:
        """"loss" or "gradient" if the task losses [n_tasks] or the total gradient norm (0-d) are not finite
        on any DDP rank: the step's only device→host read (both flags in one tensor, one all-reduce)."""
        flags = torch.stack([~torch.isfinite(losses.detach()).all(), ~torch.isfinite(grad_norm)]).float()
        bad_loss, bad_gradient = (self._rank_mean(flags) > 0).tolist()
        return "loss" if bad_loss else "gradient" if bad_gradient else None

    def _skip(self, what: str) -> None:
        """Skip a step whose loss or gradient is not finite: nothing is updated, the count is logged; a run that
        cannot recover stops (`_stop_if_diverged`)."""
        self.skipped_steps += 1
        self.consecutive_skips += 1
        self.log("train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False)
        if self.skipped_steps <= 10 or self.skipped_steps % 100 == 0:
            self.print(f"lit-hpcm: skipped step {self.global_step} (non-finite {what}); {self.skipped_steps} skipped so far")
        self._stop_if_diverged(what)
        return None

    def _stop_if_diverged(self, what: str) -> None:
        """Raise TrainingStopped when training cannot recover: its weights are not finite (looked at only on a step
        skipped for its loss, which non-finite weights always give, so a good step never pays that read), or
        `max_consecutive_skips` steps in a row were skipped (the skipped steps never advance global_step, so
        max_steps would never end the run). Both come from all-reduced flags: every DDP rank stops alike."""
        if what == "loss" and not self._weights_finite():
            raise TrainingStopped(f"stopped at step {self.global_step}: the weights are no longer finite, so no later "
                                  "step can train; the checkpoints written before are kept (a lower --model.lr?)")
        limit = self.hparams.max_consecutive_skips
        if limit is not None and self.consecutive_skips >= limit:
            raise TrainingStopped(f"stopped at step {self.global_step}: {self.consecutive_skips} steps in a row skipped "
                                  f"(non-finite {what}; --model.max_consecutive_skips {limit}); the checkpoints "
                                  "written before are kept")

    def _weights_finite(self) -> bool:
        """Whether every weight is finite on every DDP rank (one all-reduce, one device→host read)."""
        bad = torch.stack([~torch.isfinite(p.detach()).all() for p in self.model.parameters()]).any().float()
        return not bool(self._rank_mean(bad) > 0)

    def _log_step(self, stage: str, objective, losses, stats, batch_size: int) -> None:
        values = {f"{stage}/loss": losses.sum(), f"{stage}/objective": objective.detach()}
        values |= {f"{stage}/{k}": v.detach() for k, v in stats.items() if k != "x_hat"}
        if stage != "train":
            self.log_dict(values, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True)
            return
        self.epoch_means.add(values, batch_size, self.current_epoch)  # logged as train/*_epoch at the epoch's end
        self.log_dict({f"{name}_step": value for name, value in values.items()}, on_step=True, on_epoch=False)
        host = {"train/skipped_steps": float(self.skipped_steps)}
        host |= {f"lr/{g['name']}": float(g["lr"]) for g in self.optimizers().param_groups}
        extra = self._on_device(host)
        weights = self.balancer.weights()
        if weights is not None:  # 0-d tensors, not floats: reading them here would stall the GPU every step
            extra |= {f"weight/{n}": w for n, w in zip(self.task_names, weights)}
        if self.balancer.famo is not None:
            extra |= {f"gamma/{n}": g for n, g in zip(self.task_names, self.balancer.gamma)}
        self.log_dict(extra, on_step=True, on_epoch=False)

    def _on_device(self, values: dict[str, float]) -> dict[str, torch.Tensor]:
        """0-d float32 tensors on the module's device for host values (learning rates, the skip count), copied
        there only when a value changes: a logged Python float is copied to the device, with a synchronize, at
        every step."""
        cache = self._device_copies
        for name, value in values.items():
            if name not in cache or cache[name][0] != value or cache[name][1].device != self.device:
                cache[name] = (value, torch.tensor(value, dtype=torch.float32, device=self.device))
        return {name: cache[name][1] for name in values}

    # -- schedulers --------------------------------------------------------------------------------
    def on_train_epoch_end(self) -> None:
        """The epoch's train/*_epoch means (over its trained steps), for a whole epoch only: a fit stopped by max_steps
        mid-epoch logs none for that part-epoch (a resumed run logs the whole epoch's means when it completes it).
        Whole = every batch processed, skipped steps included (Lightning's progress, restored on resume)."""
        self._restore_logging_step()  # a fit resumed from a checkpoint of this hook repeats it first
        means = self.epoch_means
        processed = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if means.epoch == self.current_epoch and processed >= self.trainer.num_training_batches:
            means = {f"{name}_epoch": value for name, value in self.epoch_means.means().items()}
            self.log_dict(means, on_step=False, on_epoch=True, sync_dist=True)

    def _step_epoch_scheduler(self) -> None:
        """The multistep schedule counts epochs: brought to the current epoch before its first batch trains.
        (Not stepped in on_train_epoch_end: Lightning 2.6 skips that hook for the epoch a checkpoint written
        in its last batch's end hook belongs to, and the resumed run's schedule would lag one epoch.)"""
        scheduler = self.lr_schedulers()
        if scheduler is not None and self.hparams.lr_scheduler == "multistep":
            while scheduler.last_epoch < self.current_epoch:
                scheduler.step()

    def on_validation_epoch_end(self) -> None:
        scheduler = self.lr_schedulers() if self.trainer.state.fn == "fit" else None
        monitor = self.hparams.scheduler_monitor
        if (scheduler is not None and self.hparams.lr_scheduler == "plateau" and not self.trainer.sanity_checking
                and self.current_epoch >= self.hparams.plateau_start_epoch):
            if monitor not in self.trainer.callback_metrics:
                raise ValueError(f"ReduceLROnPlateau monitors {monitor!r}, which was not logged")
            scheduler.step(self.trainer.callback_metrics[monitor])

    # -- validation ------------------------------------------------------------------------------
    def validation_step(self, batch, batch_idx):
        x = _images(batch)
        losses, stats = self._losses(x)
        self._log_step("val", losses.sum(), losses, stats, x.shape[0])
        if batch_idx < self.hparams.log_images and isinstance(batch, dict):
            self._log_reconstruction(batch["name"][0], stats["x_hat"][0].clamp(0, 1))

    def _log_reconstruction(self, name: str, x_hat: torch.Tensor) -> None:
        """Log one reconstruction to every logger that takes images; CSV logs get a PNG file."""
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        key = f"val/reconstruction/{Path(name).stem}"
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key=key, images=[x_hat.float().cpu()], step=self.global_step)
            elif getattr(logger, "log_dir", None):
                target = Path(logger.log_dir) / "reconstructions" / f"step{self.global_step:08d}_{Path(name).stem}.png"
                save_image(x_hat.float().cpu(), target)

    # -- test: real bitstreams ---------------------------------------------------------------------
    @property
    def _tested_step(self) -> int:
        """The training step of the weights under test: the loaded checkpoint's, else the trainer's."""
        return self._loaded_step if self._loaded_step is not None else self.global_step

    @property
    def _tested_checkpoint(self) -> Optional[str]:
        return getattr(self._attached_trainer, "ckpt_path", None) if self._attached_trainer is not None else None

    def on_test_start(self) -> None:
        self.model.update()
        self._test_rows = []

    def test_step(self, batch, batch_idx):
        """Measure each image; the rows are logged once, all ranks' together, in `on_test_epoch_end`."""
        self._test_rows += measure_images(self.model, zip(batch["image"], batch["name"]))

    def _gathered_test_rows(self) -> list[dict]:
        """Every rank's rows on every rank, each image once (sorted by name), so all ranks hold the same list."""
        if self.trainer.world_size == 1:
            return self._test_rows
        gathered = self._all_gather(self._test_rows)
        # DistributedSampler pads the last round with repeats of the first images: count each image once
        unique = {}
        for row in (r for part in gathered for r in part):
            unique.setdefault(row["name"], row)
        return [unique[name] for name in sorted(unique)]

    def on_test_epoch_end(self) -> None:
        """Summarise all images once: the logged metrics, the printed line and test_results.json are one answer."""
        rows = self._gathered_test_rows()
        hp = self.hparams
        summary = summarize(
            rows,
            name=f"lit-hpcm {hp.preset} λ={hp.lmbda}",
            description="real bitstreams (lit_hpcm.codec files); PSNR and MS-SSIM on 8-bit images",
            meta={"preset": hp.preset, "lmbda": hp.lmbda, "optimizer": hp.optimizer, "balancing": hp.balancing,
                  "task_set": hp.task_set, "global_step": self._tested_step,
                  "checkpoint": str(self._tested_checkpoint) if self._tested_checkpoint else None},
        )
        # Every rank logs the same means of the gathered rows: nothing to reduce, so no per-rank mean is logged.
        # rank_zero_only makes sync_dist a no-op (no collective); sync_dist=True states the values are global.
        means = {logged: summary["results"][key][0] for key, logged in MEASURES.items()
                 if logged and key in summary["results"]}
        self.log_dict(means, sync_dist=True, rank_zero_only=True)
        if not self.trainer.is_global_zero:
            return
        target = Path(hp.test_results) if hp.test_results else Path(self.trainer.default_root_dir) / "test_results.json"
        write_results(target, summary)
        self.print(f"lit-hpcm: test results for {len(rows)} images -> {target}")
        self.print(json.dumps({k: round(v[0], 4) for k, v in summary["results"].items()}))

    # -- predict: files a user keeps -------------------------------------------------------------------
    def on_predict_start(self) -> None:
        self.model.update()

    def predict_step(self, batch, batch_idx) -> list[dict]:
        """Compress each image of an evaluation batch with real bitstreams and decode those bytes back.

        Returns one ``{"name": str, "data": bytes, "image": PIL.Image}`` per image (``image`` decoded from
        ``data``, 8-bit RGB); `lit_hpcm.callbacks.CodecWriter` stores them as ``.hpcm`` + ``.png`` files.
        """
        items = []
        for x, name in zip(batch["image"], batch["name"]):
            data = codec.encode(self.model, x)
            items.append({"name": name, "data": data, "image": codec.decode(data, self.model)})
        return items

    # -- checkpoint state --------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Besides weights and optimizer: counters, freezing, and the RNG states that drive training noise."""
        rng = rng_states.gather_states(rng_states.own_states(self._device_generator()), self._all_gather)
        checkpoint["lit_hpcm"] = {"skipped_steps": self.skipped_steps, "consecutive_skips": self.consecutive_skips,
                                  "frozen_groups": sorted(self.frozen_groups),
                                  "lr_multipliers": dict(self.lr_multipliers), "rng": rng,
                                  "logged_batches": self._logged_batches(),
                                  "epoch_means": self.epoch_means.state_dict()}
        record_log_state(checkpoint, self.loggers, self._logged_batches())  # so a resumed fit continues the log

    def _logged_batches(self) -> Optional[int]:
        """Batches trained so far, as the loggers' step counts them (None outside fitting). Lightning's own
        counter lags by one while a batch's end hooks run: inside on_train_batch_end (the batch is processed,
        not completed) and inside the validation that follows a batch (counted after it)."""
        if self._attached_trainer is None:
            return None
        loop = self.trainer.fit_loop.epoch_loop
        progress = loop.batch_progress.total
        in_batch_end = progress.processed - progress.completed
        return lightning_private.logged_batches(self.trainer) + (1 if in_batch_end or self.trainer.validating else 0)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self._restore_logging_step()
        self._step_epoch_scheduler()

    def _restore_logging_step(self) -> None:
        """At the first batch or epoch end of a resumed fit, put back the logging step the checkpoint recorded:
        Lightning 2.6 restarts its counter assuming the checkpoint was written inside on_train_batch_end, so after
        a checkpoint written at an epoch's end the resumed run's rows would sit one step later than the unkilled
        run's (the repeated epoch-end row too, which the log then could not recognise as already written)."""
        if self._resume_logged_batches is not None:
            lightning_private.set_logged_batches(self.trainer, self._resume_logged_batches)
            self._resume_logged_batches = None

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a checkpoint that does not fit (clear `CheckpointError`), then restore our extra state."""
        source = getattr(self._attached_trainer, "ckpt_path", None) or "checkpoint"
        check_lightning_checkpoint(checkpoint, self.state_dict(), self.hparams.preset, source)
        self._loaded_step = checkpoint.get("global_step")
        state = checkpoint.get("lit_hpcm", {})
        self._resume_logged_batches = state.get("logged_batches")
        if "epoch_means" in state:
            self.epoch_means.load_state_dict(state["epoch_means"], self.device)
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.consecutive_skips = int(state.get("consecutive_skips", 0))
        self.frozen_groups = set(state.get("frozen_groups", ()))
        self.lr_multipliers = dict(state.get("lr_multipliers", self.lr_multipliers))
        rank = self.trainer.global_rank if self._attached_trainer is not None else 0
        rng_states.restore_states(state.get("rng", {}), rank, self._device_generator())

    def _device_generator(self) -> Optional[rng_states.DeviceGenerator]:
        """This rank's accelerator generator (the trainer's root device: known before the model is moved there)."""
        device = self.trainer.strategy.root_device if self._attached_trainer is not None else self.device
        return rng_states.device_generator(device)

    def _all_gather(self, obj) -> list:
        """[obj of rank 0, obj of rank 1, ...]: a picklable object from every DDP rank ([obj] in one process)."""
        if self._attached_trainer is None or self.trainer.world_size == 1:
            return [obj]
        gathered = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(gathered, obj)
        return gathered

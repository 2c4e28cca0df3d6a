"""EMA of the weights without host–device syncs: Lightning's `EMAWeightAveraging`, updated with foreach kernels.

Lightning's callback updates torch's `AveragedModel` with an `avg_fn`: one kernel per tensor (~1,100 for Base)
and two reads of the device-side update count (`n_averaged == 0`, `n_averaged > 0`) per step, each a
synchronize. Here the update is `get_ema_multi_avg_fn`'s `_foreach_lerp_` over all floating tensors at once, and
the count is mirrored on the host (read from the device once per fit, at its start). Validation, checkpoints and
the end of training use the average exactly as Lightning's callback does.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn


class EMA(EMAWeightAveraging):
    """`EMAWeightAveraging(decay, use_buffers, ...)` (same arguments) whose per-step update reads no device value."""

    def __init__(self, decay: float = 0.999, use_buffers: bool = True, **kwargs: Any):
        super().__init__(decay=decay, use_buffers=use_buffers, **kwargs)
        self._average = get_ema_multi_avg_fn(decay)
        self._host_count: Optional[int] = None  # updates so far (the averaged model's n_averaged), on the host

    def on_train_start(self, trainer, pl_module) -> None:
        """Mirror the update count once (a resumed fit has restored it by now)."""
        self._host_count = int(self._average_model.n_averaged)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """As Lightning's: update after every optimizer step that `should_update` selects."""
        step_idx = trainer.global_step - 1
        if trainer.global_step > self._latest_update_step and self.should_update(step_idx=step_idx):
            self._update(pl_module)
            self._latest_update_step = trainer.global_step

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """As Lightning's: update at an epoch's end when `should_update` selects the epoch."""
        if trainer.current_epoch > self._latest_update_epoch and self.should_update(epoch_idx=trainer.current_epoch):
            self._update(pl_module)
            self._latest_update_epoch = trainer.current_epoch

    @torch.no_grad()
    def _update(self, pl_module) -> None:
        """One EMA update (the first copies), `AveragedModel.update_parameters` with its count kept on the host."""
        average = self._average_model
        averaged, current = list(average.module.parameters()), list(pl_module.parameters())
        if self._use_buffers:
            averaged += list(average.module.buffers())
            current += list(pl_module.buffers())
        current = [tensor.detach() for tensor in current]
        floating = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        others = [(a, c) for a, c in zip(averaged, current) if not a.is_floating_point()]
        if self._host_count == 0:
            torch._foreach_copy_([a for a, _ in floating], [c for _, c in floating])
        elif floating:
            self._average([a for a, _ in floating], [c for _, c in floating], None)
        for a, c in others:
            a.copy_(c)
        if not self._use_buffers:
            for a, c in zip(average.module.buffers(), pl_module.buffers()):
                a.detach().copy_(c.detach())
        average.n_averaged += 1
        self._host_count += 1

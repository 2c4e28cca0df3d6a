"""Epoch means of the training values that survive a resume.

Lightning averages ``on_epoch`` values in state it does not checkpoint: a fit resumed mid-epoch would log, as
that epoch's ``train/*_epoch``, the mean of the batches since the resume only. These sums live in the
checkpoint instead, so the resumed run logs the same means as a run that was never interrupted.
"""

from __future__ import annotations

from typing import Optional

import torch


class EpochMeans:
    """Batch-size-weighted running sums of named 0-d tensors over one training epoch.

    The sums are one float32 tensor [n] on the values' device: one stack and one multiply-add per step, no host
    sync (float32, as Lightning's own epoch aggregation).
    """

    def __init__(self) -> None:
        self.epoch: Optional[int] = None
        self.names: tuple[str, ...] = ()
        self.sums: Optional[torch.Tensor] = None  # [len(names)]
        self.count = 0  # images

    def add(self, values: dict[str, torch.Tensor], batch_size: int, epoch: int) -> None:
        """Add one batch of `epoch` (the same names every batch); the sums start again when the epoch changes.
        (Keyed by the batch's epoch, not reset by an epoch-start hook: Lightning 2.6 calls neither epoch hook
        around the epoch boundary when it resumes from a checkpoint written in the last batch's end hook.)"""
        weighted = torch.stack([value.detach().float() for value in values.values()]) * batch_size
        if epoch != self.epoch or self.sums is None:
            self.epoch, self.names, self.sums, self.count = epoch, tuple(values), weighted, 0
        else:
            self.sums = self.sums + weighted
        self.count += batch_size

    def means(self) -> dict[str, torch.Tensor]:
        if not self.count:
            return {}
        return dict(zip(self.names, self.sums / self.count))

    def state_dict(self) -> dict:
        sums = None if self.sums is None else self.sums.cpu()
        return {"epoch": self.epoch, "names": self.names, "sums": sums, "count": self.count}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.epoch, self.names, self.count = state["epoch"], tuple(state["names"]), state["count"]
        self.sums = None if state["sums"] is None else state["sums"].to(device)

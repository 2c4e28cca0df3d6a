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

    Sums stay on the values' device (no host sync per step), float32 as Lightning's own epoch aggregation.
    """

    def __init__(self) -> None:
        self.epoch: Optional[int] = None
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0  # images
        self.batches = 0

    def add(self, values: dict[str, torch.Tensor], batch_size: int, epoch: int) -> None:
        """Add one batch of `epoch`; the sums start again when the epoch changes. (Keyed by the batch's epoch,
        not reset by an epoch-start hook: Lightning 2.6 calls neither epoch hook around the epoch boundary
        when it resumes from a checkpoint written in the last batch's end hook.)"""
        if epoch != self.epoch:
            self.epoch, self.sums, self.count, self.batches = epoch, {}, 0, 0
        for name, value in values.items():
            weighted = value.detach().float() * batch_size
            self.sums[name] = self.sums[name] + weighted if name in self.sums else weighted
        self.count += batch_size
        self.batches += 1

    def means(self) -> dict[str, torch.Tensor]:
        return {name: total / self.count for name, total in self.sums.items()} if self.count else {}

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "count": self.count, "batches": self.batches, "sums": {k: v.cpu() for k, v in self.sums.items()}}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.epoch, self.count, self.batches = state["epoch"], state["count"], state["batches"]
        self.sums = {name: value.to(device) for name, value in state["sums"].items()}

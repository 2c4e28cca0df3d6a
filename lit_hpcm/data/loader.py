"""The training loader of lit-hpcm: each index carries its epoch, and the loader's position is checkpointed.

Training crops are drawn from ``(seed, epoch, index)`` (:class:`lit_hpcm.data.datasets.TrainCrops`), so the
epoch travels with the index: the sampler, :class:`EpochTaggedSampler`, yields ``(epoch, i)`` pairs, so worker
processes (persistent or not) never hold a stale epoch. It subclasses ``DistributedSampler`` and shards by the
trainer's rank: Lightning therefore keeps it under DDP (it only replaces samplers that are not
``DistributedSampler``) and calls its ``set_epoch`` at every training epoch start, including the first epoch after
a resume. The same (seed, epoch) gives the same crops and the same global order for any number of workers; the split
of that order across ranks depends on the world size.

Exact resume: the training loader, :class:`ResumableLoader`, counts the batches it has handed out in the
current epoch and gives Lightning ``{"epoch", "batches"}`` to store in every checkpoint (Lightning's
``state_dict``/``load_state_dict`` protocol for loaders). A run restored from a checkpoint written
mid-epoch continues that epoch at the first batch it had not trained on, with the same crops, instead of
replaying the epoch from its start. The loader also starts its sampler (and worker processes) only at
the first batch, after Lightning has set the epoch: otherwise the first epoch after a resume would be
drawn, with workers, in the order of epoch 0.
"""

from __future__ import annotations

from typing import Callable, Optional

from torch.utils.data import DataLoader, DistributedSampler


class EpochTaggedSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled by seed + epoch, sharded by rank) that yields ``(epoch, index)``.

    Tagging each index with the epoch lets :class:`lit_hpcm.data.datasets.TrainCrops` cut the crop of that epoch in
    any worker. :attr:`start` makes the next pass begin part-way through this rank's share of the epoch (then it
    returns to 0): how :class:`ResumableLoader` continues an interrupted epoch.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.start = 0

    def __iter__(self):
        start, self.start = self.start, 0
        indices = list(super().__iter__())[start:]
        return ((self.epoch, index) for index in indices)


class ResumableLoader(DataLoader):
    """Training loader over an :class:`EpochTaggedSampler` whose position Lightning checkpoints.

    ``state_dict()`` is ``{"epoch": e, "batches": n}``: n batches of epoch e handed out so far (Lightning
    fetches no batch ahead of a loader with a length, so at a checkpoint they are exactly the trained
    ones). After ``load_state_dict`` the next pass over epoch e skips those n batches; a pass over another
    epoch (the checkpoint ended its epoch) starts from the beginning.

    Iterating is lazy: nothing is drawn from the sampler before the first batch is asked for, which in
    Lightning is after ``set_epoch`` of that epoch.

    ``epoch_fn`` (optional) names the epoch of each pass instead of the sampler's ``set_epoch`` value, which
    Lightning 2.6 sets one too high when it resumes from a checkpoint written at an epoch's end (the resumed run
    would train another epoch's crops). The data module passes the trainer's ``current_epoch``, which both runs
    agree on.
    """

    def __init__(self, *args, epoch_fn: Optional[Callable[[], Optional[int]]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch_fn = epoch_fn
        if not isinstance(self.sampler, EpochTaggedSampler):
            raise TypeError(f"ResumableLoader needs an EpochTaggedSampler, got {type(self.sampler).__name__}")
        self._position = (self.sampler.epoch, 0)
        self._resume_at: Optional[tuple[int, int]] = None

    def __iter__(self):
        epoch = self.epoch_fn() if self.epoch_fn is not None else None
        if epoch is not None:
            self.sampler.set_epoch(epoch)
        epoch, served = self.sampler.epoch, 0
        if self._resume_at is not None and self._resume_at[0] == epoch:
            served = self._resume_at[1]
        self._resume_at = None
        self.sampler.start = served * self.batch_size
        self._position = (epoch, served)
        for batch in super().__iter__():
            served += 1
            self._position = (epoch, served)
            yield batch

    def state_dict(self) -> dict[str, int]:
        epoch, served = self._position
        return {"epoch": epoch, "batches": served}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume_at = (int(state_dict["epoch"]), int(state_dict["batches"]))

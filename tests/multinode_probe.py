"""A callback for the multi-node simulation (tests/test_multinode.py): each process writes what it saw.

Loaded by the `lit-hpcm` processes that torchrun starts, from ``--trainer.callbacks+=multinode_probe.Probe``
(the test puts ``tests/`` on their PYTHONPATH).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning.pytorch as pl


class Probe(pl.Callback):
    """At the start of fitting: this rank's share of epoch 0 (dataset indices); at the end: the FAMO logits and
    weights. Written to ``$PROBE_DIR/rank<global rank>.json``."""

    def __init__(self) -> None:
        self.record: dict = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sampler = trainer.train_dataloader.sampler
        sampler.set_epoch(0)
        self.record.update(global_rank=trainer.global_rank, node_rank=trainer.node_rank,
                           world_size=trainer.world_size, shard=[index for _, index in sampler])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record.update(logits=pl_module.balancer.famo.w.tolist(), weights=pl_module.balancer.famo.weights().tolist(),
                           step=trainer.global_step)
        Path(os.environ["PROBE_DIR"], f"rank{trainer.global_rank}.json").write_text(json.dumps(self.record))

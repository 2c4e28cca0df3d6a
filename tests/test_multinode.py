"""Two nodes × one process, simulated on this machine: torchrun started twice on localhost (gloo), Lightning's
own torchrun support (TorchElasticEnvironment), the Balanced demo recipe. Both ranks end with identical FAMO
logits; their training shards are disjoint and cover the epoch; `test` counts each of 3 images once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
NODES = 2


def _images(folder: Path, count: int) -> str:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(count)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (48, 48 + 4 * i, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return str(folder)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _on_two_nodes(tmp_path: Path, name: str, args: list[str]) -> None:
    """Run `lit-hpcm ARGS` as two torchrun "nodes" of one process each, and wait for both."""
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]), PROBE_DIR=str(tmp_path),
               OMP_NUM_THREADS="1")
    nodes = []
    for node in range(NODES):
        log = open(tmp_path / f"{name}_node{node}.log", "w")
        command = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={NODES}", "--nproc_per_node=1",
                   f"--node_rank={node}", "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "lit_hpcm.cli",
                   *args, f"--trainer.num_nodes={NODES}", "--trainer.devices=1", "--trainer.strategy=ddp",
                   "--trainer.accelerator=cpu"]
        nodes.append((subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    for process, log in nodes:
        process.wait(timeout=600)
        log.close()
    for node, (process, _) in enumerate(nodes):
        assert process.returncode == 0, (tmp_path / f"{name}_node{node}.log").read_text()[-3000:]


def test_two_nodes_train_one_model_and_test_each_image_once(tmp_path):
    train, test = _images(tmp_path / "train", 6), _images(tmp_path / "test", 3)
    run = tmp_path / "run"
    common = ["-c", str(REPO / "configs" / "demo.yaml"), f"--trainer.default_root_dir={run}",
              f"--data.train_dir={train}", f"--data.test_dir={test}", "--data.val_dir=null", "--data.patch_size=32",
              "--data.batch_size=1", "--data.train_length=8", "--trainer.enable_progress_bar=false"]
    _on_two_nodes(tmp_path, "fit", ["fit", *common, "--trainer.max_steps=4", "--trainer.callbacks+=multinode_probe.Probe"])
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(NODES)]
    assert [(r["global_rank"], r["node_rank"], r["world_size"]) for r in ranks] == [(0, 0, 2), (1, 1, 2)]
    assert ranks[0]["step"] == ranks[1]["step"] == 4
    assert ranks[0]["logits"] == ranks[1]["logits"] and ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["logits"] != [0.0, 0.0]  # FAMO did update them
    shards = [set(r["shard"]) for r in ranks]
    assert len(ranks[0]["shard"]) == len(ranks[1]["shard"]) == 4
    assert not shards[0] & shards[1] and shards[0] | shards[1] == set(range(8))

    _on_two_nodes(tmp_path, "test", ["test", *common, "--ckpt_path=last"])
    results = json.loads((run / "test_results.json").read_text())
    assert sorted(row["name"] for row in results["per_image"]) == ["0.png", "1.png", "2.png"]

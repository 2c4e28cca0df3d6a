"""A run prints what its user needs: none of the warnings and adverts of the libraries underneath that say
nothing about the run (each was printed by every `lit-hpcm fit` before it was silenced at its source)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOT_FOR_THE_USER = (
    "torch.jit.script",                 # PyTorch's deprecation of the compressai entropy models' scripting
    "args parameter",                   # LightningCLI, when args are passed that sys.argv also holds
    "LeafSpec",                         # torch.utils._pytree deprecation inside Lightning
    "weights_only",                     # torch.load's default, for checkpoints lit-hpcm writes itself
    "Tip: For seamless cloud logging",  # Lightning's advert
    "keys will be ignored",             # an lr scheduler "monitor" under manual optimization
)


def test_a_fit_prints_nothing_that_is_not_about_the_run(tmp_path):
    command = [sys.executable, "-m", "lit_hpcm.cli", "fit", "-c", "configs/demo.yaml", "--trainer.max_steps=16",
               f"--trainer.default_root_dir={tmp_path}", "--data.patch_size=64", "--trainer.limit_val_batches=1",
               "--trainer.enable_progress_bar=false"]
    done = subprocess.run(command, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=600)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed[-3000:]
    assert "max_steps=16` reached" in printed
    assert [text for text in NOT_FOR_THE_USER if text in printed] == []


# Several commands in one child (one start-up), with the progress bar on and output unbuffered so the order of its
# lines and the bar's is the order a terminal shows; "=== name" separates the commands' output.
NOISE_RUN = """
import sys, yaml
from lit_hpcm.cli import main
a, b = sys.argv[1], sys.argv[2]
config = yaml.safe_load(open("configs/demo.yaml"))
config["trainer"].update(limit_val_batches=1, max_steps=6)
config["data"].update(patch_size=64, train_length=16)  # 4 batches per epoch
config["trainer"]["callbacks"].append({"class_path": "lit_hpcm.callbacks.ProgressiveUnfreezing", "init_args": {
    "frozen_at_start": [], "schedule": {1: ["context"]}, "report": False}})
open(f"{a}.yaml", "w").write(yaml.safe_dump(config))
for name, args in [("fit", ["fit", f"--trainer.default_root_dir={a}"]),
                   ("resume", ["fit", f"--trainer.default_root_dir={a}", "--ckpt_path=last",
                               "--trainer.max_steps=7"]),
                   ("test", ["test", f"--trainer.default_root_dir={b}", f"--ckpt_path={a}/checkpoints/last.ckpt"]),
                   ("test_again", ["test", f"--trainer.default_root_dir={b}", f"--ckpt_path={a}/checkpoints/last.ckpt"])]:
    print(f"=== {name}", flush=True)
    assert main([args[0], "-c", f"{a}.yaml", *args[1:], "--trainer.limit_test_batches=1"]) == 0
"""


def test_resume_and_test_are_quiet_and_messages_get_their_own_line(tmp_path):
    """No "Checkpoint directory ... exists and is not empty" on a resume, no "The dirpath has changed" on a test
    of another folder's checkpoint, no new log version per test, the bar of a fit resumed mid-epoch names its
    epoch and total (it read "Training: 5/?"), and a callback's message is not glued to a bar line."""
    a, b = tmp_path / "a", tmp_path / "b"
    done = subprocess.run([sys.executable, "-c", NOISE_RUN, str(a), str(b)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL, check=False,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"))
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed[-3000:]
    parts = dict(part.split("\n", 1) for part in done.stdout.split("=== ")[1:])
    assert "exists and is not empty" not in printed and "dirpath has changed" not in printed
    assert sorted(p.name for p in (a / "logs").iterdir()) == ["version_0"]
    assert sorted(p.name for p in (b / "logs").iterdir()) == ["test"]
    assert re.search(r"Epoch 1: +75%\|[^|]*\| 3/4 ", parts["resume"])  # batch 3 of 4 in epoch 1
    assert re.search(r"Training: \|[^|]*\| [1-9]", parts["resume"]) is None  # no batch counted without epoch
    unfroze = "ProgressiveUnfreezing: epoch 1: unfroze ['context']"
    assert unfroze in done.stdout and re.search(rf"[^\n]{re.escape(unfroze)}", done.stdout) is None

"""A run prints what its user needs: none of the warnings and adverts of the libraries underneath that say
nothing about the run (each was printed by every `lit-hpcm fit` before it was silenced at its source)."""

from __future__ import annotations

import os
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

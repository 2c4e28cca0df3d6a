"""`--ckpt_path` never silently overrides what the user asked, and a file that cannot work is one line, exit 2."""

from __future__ import annotations

import json

import pytest

from lit_hpcm.cli import main
from lit_hpcm.models import HPCM
from lit_hpcm.models.weights import save_weights


def _common(out) -> list[str]:
    return ["-c", "configs/demo.yaml", f"--trainer.default_root_dir={out}", f"--trainer.logger.init_args.save_dir={out}",
            f"--trainer.callbacks.init_args.dirpath={out}/checkpoints", "--data.patch_size=64", "--data.train_length=8",
            "--trainer.limit_val_batches=1"]


@pytest.fixture(scope="module")
def famo_checkpoint(tmp_path_factory):
    """A 2-step checkpoint of the demo config (Balanced R-D: FAMO state inside), with its own test_results path."""
    out = tmp_path_factory.mktemp("run")
    assert main(["fit", *_common(out), "--trainer.max_steps=2", f"--model.test_results={out}/run_results.json"]) == 0
    return out, out / "checkpoints" / "last.ckpt"


def test_values_given_win_over_the_checkpoints(famo_checkpoint, tmp_path):
    out, ckpt = famo_checkpoint
    mine = tmp_path / "mine.json"
    assert main(["test", *_common(out), f"--ckpt_path={ckpt}", f"--model.test_results={mine}"]) == 0
    assert mine.is_file() and not (out / "run_results.json").exists()
    assert json.loads(mine.read_text())["meta"]["global_step"] == 2


def test_a_checkpoint_that_cannot_fit_the_config_is_one_line(famo_checkpoint, tmp_path, capsys):
    out, ckpt = famo_checkpoint
    other = tmp_path / "other"
    code = main(["fit", *_common(other), "--model.optimizer=adam", "--model.balancing=none", "--trainer.max_steps=3",
                 f"--ckpt_path={ckpt}"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lit-hpcm fit: error:") and "famo" in err[-1]


def test_weights_files_folders_and_garbage_are_named(tmp_path, capsys):
    weights = save_weights(HPCM("tiny").state_dict(), "tiny", tmp_path / "w.pt")
    garbage = tmp_path / "g.ckpt"
    garbage.write_bytes(b"garbage")
    cases = ((weights, "--model.init_weights"), (tmp_path, "a folder, not a checkpoint file"),
             (garbage, "not a readable PyTorch checkpoint"))
    for path, message in cases:
        assert main(["test", *_common(tmp_path / "o"), f"--ckpt_path={path}"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and "weights_only" not in err

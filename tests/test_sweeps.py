"""Sweep launch files: W&B grid sweep files, their expansion (`lit-hpcm sweep-grid`) and the shell loop."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lit_hpcm.cli import main
from lit_hpcm.sweeps.grid import flag, grid_points, load_sweep, sweep_commands

ROOT = Path(__file__).resolve().parents[1]
GRID_SH = ROOT / "configs" / "sweeps" / "grid.sh"
SWEEP_FILES = sorted((ROOT / "configs" / "sweeps").glob("*.yaml")) + sorted((ROOT / "configs" / "ablations").glob("*.yaml"))
FRAGMENTS = {"run.yaml", "demo_scale.yaml"}  # LightningCLI config pieces, not sweep files


def _sweep(tmp_path, **changes) -> Path:
    sweep = {
        "program": "lit-hpcm",
        "method": "grid",
        "command": ["${env}", "${program}", "fit", "-c", "base.yaml", "${args}", "--trainer.max_epochs=1"],
        "parameters": {"model.a": {"values": [1, 2]}, "model.b": {"values": ["x", [0.5, 0.5]]}, "model.c": {"value": {"k": 1}}},
    }
    sweep.update(changes)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_grid_points_are_the_cartesian_product_first_key_slowest():
    points = grid_points({"a": {"values": [1, 2]}, "b": {"values": ["x", "y", "z"]}, "c": {"value": 0}})
    assert [(p["a"], p["b"], p["c"]) for p in points] == [(a, b, 0) for a in (1, 2) for b in "xyz"]


def test_flags_read_back_as_the_same_values():
    """Strings stay bare; lists, mappings, numbers and booleans become JSON, which jsonargparse reads as YAML."""
    for value in (0.0025, 3, True, [0.33, 0.33, 0.34], {"1": ["h_a", "h_s"]}, [], {}, "same_batch"):
        key, text = flag("model.x", value)[2:].split("=", 1)
        assert key == "model.x" and yaml.safe_load(text) == value


def test_sweep_commands_fill_the_command_macros(tmp_path):
    commands = sweep_commands(_sweep(tmp_path))
    assert len(commands) == 4
    assert commands[0] == [
        "lit-hpcm", "fit", "-c", "base.yaml", "--model.a=1", "--model.b=x", '--model.c={"k": 1}', "--trainer.max_epochs=1"
    ]
    assert commands[3][4:6] == ["--model.a=2", "--model.b=[0.5, 0.5]"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "bayes"}, "method must be 'grid'"),
        ({"program": None}, "missing 'program'"),
        ({"command": ["${program}", "fit"]}, r"exactly once"),
        ({"command": ["${interpreter}", "${program}", "${args}"]}, r"unsupported command macros \['\$\{interpreter\}'\]"),
        ({"parameters": {}}, "'parameters' must map"),
        ({"parameters": {"model.a": {"min": 0, "max": 1}}}, "exactly one of 'values' or 'value'"),
        ({"parameters": {"model.a": {"values": []}}}, "non-empty list"),
    ],
)
def test_unusable_sweep_files_are_refused(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        load_sweep(_sweep(tmp_path, **changes))


def test_sweep_grid_command(tmp_path, capsys):
    assert main(["sweep-grid", str(_sweep(tmp_path))]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [shlex.split(line) for line in lines] == sweep_commands(tmp_path / "sweep.yaml")
    assert main(["sweep-grid", str(tmp_path / "missing.yaml")]) == 2
    assert "sweep file not found" in capsys.readouterr().err


@pytest.mark.parametrize("path", [p for p in SWEEP_FILES if p.name not in FRAGMENTS], ids=lambda p: p.name)
def test_shipped_sweep_files_expand_into_fit_commands_with_their_own_run_folder(path):
    """Each sweep writes its runs under its own folder, through the shared run.yaml fragment."""
    sweep = load_sweep(path)
    commands = sweep_commands(path)
    assert len(commands) == len(grid_points(sweep["parameters"])) > 1
    folder = f"--trainer.logger.init_args.save_dir=runs/{path.parent.name}/{path.stem}"
    for argv in commands:
        assert argv[:2] == ["lit-hpcm", "fit"] and argv[4:7] == ["-c", "configs/sweeps/run.yaml", folder]
        assert (ROOT / argv[3]).is_file()


def test_grid_sh_runs_every_point_with_the_overrides_and_reports_failures(tmp_path):
    """The shell loop runs each planned command plus the extra arguments; a failed run does not stop it."""
    sweep = _sweep(
        tmp_path,
        program="sh",
        command=["${program}", "-c", 'echo "ran $*" >> "$0"; [ "$1" != --p=2 ]', str(tmp_path / "log"), "${args}"],
        parameters={"p": {"values": [1, 2, 3]}},
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(GRID_SH), str(sweep), "--extra=a b"], capture_output=True, text=True, env=env)
    assert done.returncode == 1 and "1 of 3 runs failed" in done.stderr
    assert (tmp_path / "log").read_text().splitlines() == [f"ran --p={p} --extra=a b" for p in (1, 2, 3)]
    assert "[2/3] failed" in done.stderr and r"[3/3] sh -c" in done.stderr and r"--extra=a\ b" in done.stderr

    dry = subprocess.run(["bash", str(GRID_SH), str(sweep)], capture_output=True, text=True, env={**env, "DRY_RUN": "1"})
    assert dry.returncode == 0 and dry.stderr.count("sh -c") == 3 and (tmp_path / "log").read_text().count("ran") == 3

"""Grid sweeps written as W&B sweep files, expanded into the commands to run — with or without W&B.

A sweep file is a W&B sweep configuration restricted to what a plain loop can run::

    program: lit-hpcm
    method: grid
    command: [${program}, fit, -c, configs/X.yaml, --trainer.logger.init_args.save_dir=runs/NAME, ${args}]
    parameters:
      model.famo_gamma: {values: [0.001, 0.002]}     # one flag per grid point: --model.famo_gamma=0.001
      model.lmbda: {value: 0.0067}                    # a constant

``wandb sweep FILE`` + ``wandb agent`` run it on a W&B server. :func:`sweep_commands` produces the same
commands locally, printed by ``lit-hpcm sweep-grid FILE`` (or ``python -m lit_hpcm.sweeps.grid FILE``,
without the CLI's start-up cost), and ``configs/sweeps/grid.sh`` loops over them: one file, both launchers.
Values are written as JSON, which jsonargparse reads as YAML just like the Python ``str()`` that W&B's agent
writes (``--model.scale_weights=[0.5, 0.3, 0.2]``).
"""

from __future__ import annotations

import itertools
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

ARGS_MACRO = "${args}"
# Macros a grid command may use: W&B's agent fills ${env} with /usr/bin/env, which adds nothing here.
_DROPPED_MACROS = ("${env}",)


def _fail(path: Path, message: str) -> ValueError:
    return ValueError(f"{path}: {message}")


def load_sweep(path: str | Path) -> dict:
    """Read and check a grid sweep file (``ValueError`` naming the file and what is wrong)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file not found: {path}")
    try:
        sweep = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise _fail(path, f"invalid YAML ({err})") from None
    if not isinstance(sweep, dict):
        raise _fail(path, "expected a mapping with program, method, command and parameters")
    if sweep.get("method") != "grid":
        raise _fail(path, f"method must be 'grid' to run without a W&B controller, got {sweep.get('method')!r}")
    if not isinstance(sweep.get("program"), str):
        raise _fail(path, "missing 'program' (the executable ${program} stands for, e.g. lit-hpcm)")
    command = sweep.get("command")
    if not isinstance(command, list) or command.count(ARGS_MACRO) != 1:
        raise _fail(path, f"'command' must be a list containing {ARGS_MACRO} exactly once")
    known = (ARGS_MACRO, "${program}", *_DROPPED_MACROS)
    unknown = [part for part in map(str, command) if part.startswith("${") and part not in known]
    if unknown:
        raise _fail(path, f"unsupported command macros {unknown}; use ${{program}} and {ARGS_MACRO}")
    _check_parameters(path, sweep.get("parameters"))
    return sweep


def _check_parameters(path: Path, parameters: Any) -> None:
    """Every parameter is ``{values: [non-empty list]}`` or ``{value: x}`` (grids need discrete values)."""
    if not isinstance(parameters, dict) or not parameters:
        raise _fail(path, "'parameters' must map each swept argument to {values: [...]} or {value: ...}")
    for key, spec in parameters.items():
        if not isinstance(spec, dict) or ("value" in spec) == ("values" in spec):
            raise _fail(path, f"parameter {key!r} needs exactly one of 'values' or 'value', got {spec!r}")
        if "values" in spec and (not isinstance(spec["values"], list) or not spec["values"]):
            raise _fail(path, f"parameter {key!r}: 'values' must be a non-empty list")


def grid_points(parameters: dict[str, dict]) -> list[dict[str, Any]]:
    """All combinations of the parameters' values, the first parameter varying slowest."""
    keys = list(parameters)
    choices = [spec["values"] if "values" in spec else [spec["value"]] for spec in parameters.values()]
    return [dict(zip(keys, combination)) for combination in itertools.product(*choices)]


def flag(key: str, value: Any) -> str:
    """``--key=value`` with strings as they are and everything else as JSON (YAML to jsonargparse)."""
    text = value if isinstance(value, str) else json.dumps(value)
    return f"--{key}={text}"


def sweep_commands(path: str | Path) -> list[list[str]]:
    """The command (argv, program first) of every grid point of the sweep file at ``path``."""
    sweep = load_sweep(path)
    commands = []
    for point in grid_points(sweep["parameters"]):
        argv: list[str] = []
        for part in map(str, sweep["command"]):
            if part == "${program}":
                argv.append(sweep["program"])
            elif part == ARGS_MACRO:
                argv.extend(flag(key, value) for key, value in point.items())
            elif part not in _DROPPED_MACROS:
                argv.append(part)
        commands.append(argv)
    return commands


def plan_lines(path: str | Path) -> list[str]:
    """The commands of :func:`sweep_commands`, each as one shell-quoted line (the plan grid.sh runs)."""
    return [shlex.join(argv) for argv in sweep_commands(path)]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m lit_hpcm.sweeps.grid SWEEP.yaml")
    try:
        print("\n".join(plan_lines(sys.argv[1])))
    except (ValueError, OSError) as err:
        sys.exit(f"sweep-grid: error: {err}")

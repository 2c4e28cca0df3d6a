"""What `pip install` puts on the path: the callbacks as lit_hpcm.callbacks, no top-level `callbacks` module
(another PyPI distribution has that name), and every package folder of the source tree listed in pyproject."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_installed_names(tmp_path):
    script = ("import importlib.util, lit_hpcm.callbacks as c\n"
              "assert importlib.util.find_spec('callbacks') is None, 'a top-level callbacks module is installed'\n"
              "print(c.TopKCheckpoint.__module__, c.AdaptiveGamma.__module__)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)  # not the repo
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["lit_hpcm.callbacks.topk_checkpoint", "lit_hpcm.callbacks.adaptive_gamma"]


def test_every_package_folder_is_installed():
    settings = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {".".join(("lit_hpcm", *init.parent.relative_to(REPO / "lit_hpcm").parts))
               for init in (REPO / "lit_hpcm").rglob("__init__.py")}
    assert set(settings["packages"]) == folders | {"lit_hpcm.callbacks"}
    assert settings["package-dir"] == {"lit_hpcm.callbacks": "callbacks"}


def test_a_training_process_does_not_load_the_bd_library(tmp_path):
    """bjontegaard (and our plotting module) load on first use. (matplotlib is loaded anyway, by torchmetrics,
    which Lightning imports.)"""
    script = ("import sys, lit_hpcm.module, lit_hpcm.evaluation as e\n"
              "print(sorted(m for m in ('bjontegaard', 'lit_hpcm.evaluation.plots') if m in sys.modules))\n"
              "e.rd_plot; print(sorted(m for m in ('bjontegaard', 'lit_hpcm.evaluation.plots') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "['lit_hpcm.evaluation.plots']"]  # bjontegaard: at a BD call


def test_building_the_command_line_loads_neither_torch_nor_lightning(tmp_path):
    """`lit-hpcm --help` and every tool's --help build the parser only: the heavy imports wait for a runner."""
    script = ("import sys\nfrom lit_hpcm.cli import _tools_parser\n_tools_parser()\n"
              "print(sorted(m for m in ('torch', 'lightning', 'compressai', 'matplotlib', 'bjontegaard') "
              "if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

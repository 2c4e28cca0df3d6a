"""What `pip install` puts on the path: the callbacks as lit_hpcm.callbacks, no top-level `callbacks` module
(another PyPI distribution has that name), and every package folder of the source tree listed in pyproject."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

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
    script = ("import sys, lit_hpcm.training.module, lit_hpcm.evaluation as e\n"
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


HEAVY_MODULES = ("lightning", "wandb", "matplotlib", "torch_geometric", "torchvision", "pandas", "compressai.zoo",
                 "compressai.models")


def test_the_codec_commands_load_only_what_coding_needs_and_write_the_same_bytes(tmp_path):
    """`lit-hpcm compress` / `decompress` load CompressAI's coding core only (`compressai_core`, which every `lit-hpcm`
    process registers) and no Lightning (its checkpoint plugin loads on first use); the file equals the one the fully
    imported library writes."""
    import torch
    from PIL import Image

    from lit_hpcm import codec
    from lit_hpcm.data.images import open_image
    from lit_hpcm.models import HPCM
    from lit_hpcm.models.weights import load_model, save_weights

    torch.manual_seed(0)
    weights = save_weights(HPCM("tiny").state_dict(), "tiny", tmp_path / "tiny.pt")
    Image.effect_mandelbrot((40, 30), (-2, -1, 1, 1), 60).convert("RGB").save(tmp_path / "in.png")
    script = ("import sys\nfrom lit_hpcm.cli import main\n"
              f"main(['compress', 'in.png', '-o', 'in.hpcm', '--ckpt', {str(weights)!r}])\n"
              f"main(['decompress', 'in.hpcm', '-o', 'out.png', '--ckpt', {str(weights)!r}])\n"
              f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    expected = codec.encode(load_model(weights, None, torch.device("cpu")), open_image(tmp_path / "in.png"))
    assert (tmp_path / "in.hpcm").read_bytes() == expected
    assert (tmp_path / "out.png").is_file()


def test_the_coding_core_becomes_the_whole_package_when_more_is_asked_and_leaves_an_imported_one_alone():
    script = ("import sys\nfrom lit_hpcm.codec.compressai_core import load_coding_core\nload_coding_core()\n"
              "import compressai\nfrom compressai.entropy_models import GaussianConditional\n"
              "print(compressai.get_entropy_coder(), 'torch_geometric' in sys.modules)\n"
              "compressai.set_entropy_coder('ans')\n"  # not in the core: CompressAI's own __init__ runs now
              "print(compressai.get_entropy_coder(), 'torch_geometric' in sys.modules, compressai.zoo.__name__)\n"
              "try:\n    compressai.no_such_part\nexcept AttributeError:\n    print('AttributeError')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ans", "False", "ans", "True", "compressai.zoo", "AttributeError"]

    import compressai

    from lit_hpcm.codec.compressai_core import load_coding_core

    load_coding_core()
    assert sys.modules["compressai"] is compressai


def test_codec_data_and_file_modules_load_without_lightning():
    """`lit-hpcm compress/decompress/eval` read checkpoints and images through these packages without Lightning."""
    script = ("import sys\nimport lit_hpcm.codec.compressai_core as core\ncore.load_coding_core()\n"
              "import lit_hpcm, lit_hpcm.files, lit_hpcm.data, lit_hpcm.data.images, lit_hpcm.models\n"
              "from lit_hpcm.codec import encode\nfrom lit_hpcm.data import readable_eval_images\n"
              "import lit_hpcm.training.cpu_allocator\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


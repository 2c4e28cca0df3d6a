"""CompressAI's coding core alone, for processes that only code images (`lit-hpcm compress` / `decompress`).

Importing anything from CompressAI runs its package `__init__`, which imports every subpackage: datasets, zoo,
losses and registries that pull in torch_geometric, torchvision, pandas and sympy (about 2.4 s and 285 MiB on the
project's CPU machine, docs/PERFORMANCE.md). Coding needs only `compressai.entropy_models`, `compressai.ops`,
`compressai._CXX` and `compressai.ans`, none of which imports those.

`load_coding_core()` registers the `compressai` package without running its `__init__`: submodules still import
from the installed package's folder, the two functions of the package that the entropy models call are provided
(the rANS coder is the only one CompressAI ships), and any other subpackage loads on first attribute access. It
changes nothing when CompressAI is already imported, and is meant for the command-line codec processes only: a
program that also uses the rest of CompressAI should import it normally.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

PACKAGE = "compressai"
ENTROPY_CODER = "ans"


def _subpackage_on_first_use(name: str):
    try:
        return importlib.import_module(f"{PACKAGE}.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}") from None


def load_coding_core() -> None:
    """Make `import compressai.entropy_models` / `compressai.ans` load only what coding needs (see the module)."""
    if PACKAGE in sys.modules:
        return
    package = importlib.util.module_from_spec(importlib.util.find_spec(PACKAGE))
    package.available_entropy_coders = lambda: [ENTROPY_CODER]
    package.get_entropy_coder = lambda: ENTROPY_CODER
    package.__getattr__ = _subpackage_on_first_use
    sys.modules[PACKAGE] = package

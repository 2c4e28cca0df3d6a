"""CompressAI's coding core alone, unless the rest of CompressAI is used: what `lit-hpcm` processes import.

Importing anything from CompressAI runs its package `__init__`, which imports every subpackage: datasets, zoo,
losses and registries that pull in torch_geometric, torchvision, pandas and sympy, a large share of a command's
start-up time and memory (see docs/PERFORMANCE.md). lit-hpcm needs only `compressai.entropy_models`, `compressai.ops`,
`compressai._CXX` and `compressai.ans`, none of which imports those.

`load_coding_core()` registers the `compressai` package without running its `__init__`: its submodules import from
the installed package's folder as usual, and the two package functions the entropy models call are provided (the
rANS coder is the only one CompressAI ships). The first time anything else is asked of the package (another
attribute, such as `compressai.set_entropy_coder` or `compressai.__version__`), its real `__init__` runs, so code
that uses the rest of CompressAI in the same process sees the real package, only later. Nothing changes when
CompressAI is already imported.
"""

from __future__ import annotations

import importlib.util
import sys

PACKAGE = "compressai"
ENTROPY_CODER = "ans"


def _initialise_fully(name: str):
    """Module `__getattr__` of the core-only package: run CompressAI's own `__init__`, then answer."""
    package = sys.modules[PACKAGE]
    del package.__getattr__  # from here on attribute look-ups are the real package's
    package.__spec__.loader.exec_module(package)
    return getattr(package, name)


def load_coding_core() -> None:
    """Make `import compressai.entropy_models` / `compressai.ans` load only what coding needs (see the module)."""
    if PACKAGE in sys.modules:
        return
    package = importlib.util.module_from_spec(importlib.util.find_spec(PACKAGE))
    package.available_entropy_coders = lambda: [ENTROPY_CODER]
    package.get_entropy_coder = lambda: ENTROPY_CODER
    package.__getattr__ = _initialise_fully
    sys.modules[PACKAGE] = package

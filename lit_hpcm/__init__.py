"""lit-hpcm: train, fine-tune and evaluate the HPCM learned image codec with Balanced Rate-Distortion optimization.

`lit_hpcm.LitHPCM` (the LightningModule, `lit_hpcm.training`) loads Lightning on first use, so the codec and
evaluation tools start without it. Package map: README "Layout".
"""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, where: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for `package` that imports ``package.<where[name]>`` when `name` is first asked for.

    The packages whose modules pull in Lightning, bjontegaard or the plotting code export their names this way,
    so importing one light module of theirs (or the package) does not load the heavy ones."""

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f".{where[name]}", package), name)

    return __getattr__


__all__ = ["LitHPCM"]
__getattr__ = lazy_exports(__name__, {"LitHPCM": "training.module"})

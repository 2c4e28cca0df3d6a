"""Training policy for LitHPCM as Lightning callbacks: γ schedules, progressive unfreezing, per-scale early
stopping, best-K + last-N checkpointing, and an EMA of the weights without host syncs. They change only what the
module exposes (``set_gamma``, ``set_lr_multipliers``, ``set_frozen``) and read logged metrics.

The names load their module on first use, so the command-line tools can read the γ strategies without
importing Lightning.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "AdaptiveGamma": "adaptive_gamma",
    "EMA": "ema",
    "ProgressiveUnfreezing": "unfreezing",
    "ScaleEarlyStopping": "scale_early_stopping",
    "TopKCheckpoint": "topk_checkpoint",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)

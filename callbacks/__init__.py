"""Training policy for LitHPCM as Lightning callbacks: γ schedules, progressive unfreezing, per-scale early
stopping, best-K + last-N checkpointing, and an EMA of the weights without host syncs. They change only what the
module exposes (``balancer.set_gamma``, ``set_lr_multipliers``, ``set_frozen``) and read logged metrics.

The names load their module on first use, so the command-line tools can read the γ strategies without
importing Lightning.
"""

from __future__ import annotations

from lit_hpcm import lazy_exports

_WHERE = {
    "AdaptiveGamma": "adaptive_gamma",
    "CodecWriter": "codec_writer",
    "EMA": "ema",
    "ProgressiveUnfreezing": "unfreezing",
    "ScaleEarlyStopping": "scale_early_stopping",
    "TopKCheckpoint": "topk_checkpoint",
}
__all__ = sorted(_WHERE)

__getattr__ = lazy_exports(__name__, _WHERE)

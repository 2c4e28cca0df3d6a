"""Training policy for LitHPCM as Lightning callbacks: γ schedules, progressive unfreezing, per-scale early
stopping and best-K + last-N checkpointing. They change only what the module exposes (``set_gamma``,
``lr_multipliers``, ``frozen_groups``) and read logged metrics."""

from .adaptive_gamma import AdaptiveGamma
from .scale_early_stopping import ScaleEarlyStopping
from .topk_checkpoint import TopKCheckpoint
from .unfreezing import ProgressiveUnfreezing

__all__ = ["AdaptiveGamma", "ProgressiveUnfreezing", "ScaleEarlyStopping", "TopKCheckpoint"]

"""HPCM network, its presets and coding schedule."""

from .hpcm import HPCM, PARAMETER_GROUPS
from .presets import PRESETS, HPCMConfig

__all__ = ["HPCM", "HPCMConfig", "PRESETS", "PARAMETER_GROUPS"]

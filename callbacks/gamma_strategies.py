"""The names of AdaptiveGamma's γ strategies (importable without Lightning, for the command line)."""

from __future__ import annotations

from typing import Literal, get_args

Strategy = Literal["fixed", "linear", "cosine", "step", "plateau", "hpcm", "hierarchical"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
PROGRESS_STRATEGIES = ("linear", "cosine", "hpcm", "hierarchical")  # those that need the run length

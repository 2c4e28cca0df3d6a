"""Rebuild the official parameter values the parity fixtures were computed with (fixture README)."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import torch

# The project's own copy of the official-HPCM reference outputs (README there), so any clone runs the parity tests.
FIXTURES = Path(__file__).resolve().parent / "data" / "hpcm_reference"


def fixture_dir() -> Path:
    """The parity fixture folder kept in the repository (tests/data/hpcm_reference)."""
    return FIXTURES


def official_state(name: str) -> dict[str, torch.Tensor]:
    """Official-named state_dict for fixture `name` ("hpcm_base" | "hpcm_large"), filled as documented."""
    spec = json.loads((FIXTURES / f"{name}_spec.json").read_text())
    salt, gain = spec["fill_salt"], spec["fill_gain"]
    state = {}
    for key in spec["parameters"]:
        shape = spec["state_dict_shapes"][key]
        g = torch.Generator().manual_seed(zlib.crc32((salt + key).encode()))
        t = torch.randn(shape, generator=g, dtype=torch.float64)
        if len(shape) >= 2 and key.endswith("weight"):
            value = gain * t / math.sqrt(shape[1] * math.prod(shape[2:]))
        else:
            value = 0.1 * t
        state[key] = value.float()
    state["scales_hyper"] = 0.5 + 10 * state["scales_hyper"].abs()
    return state

"""Shared fixtures: a tiny HPCM with CDF tables built, deterministic seeds."""

from __future__ import annotations

import pytest
import torch

from lit_hpcm.models import HPCM


@pytest.fixture
def tiny_model() -> HPCM:
    """A tiny-preset HPCM in eval mode with its CDF tables built (seeded weights)."""
    torch.manual_seed(0)
    model = HPCM("tiny").eval()
    model.update()
    return model

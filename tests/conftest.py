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


@pytest.fixture
def single_thread():
    """One intra-op thread for tests that train or code in-process: on two shared CI cores, two threads per
    process collapse under contention (a 6-step demo run: 3 s with one thread, minutes with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

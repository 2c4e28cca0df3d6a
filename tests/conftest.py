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
def coding_model() -> HPCM:
    """`tiny_model` with the last convolution of g_a scaled ×30: untrained weights give all-zero y symbols, these
    give many distinct ones, so what depends on the symbols (their order, per image) shows."""
    torch.manual_seed(0)
    model = HPCM("tiny").eval()
    with torch.no_grad():
        model.g_a[-1].weight.mul_(30.0)  # g_a ends with the convolution that makes y
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

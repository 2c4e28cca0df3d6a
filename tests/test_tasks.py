"""R-D task sets: names, bpp rates, and the per-scale rates partitioning the total rate."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_hpcm.training.tasks import TASK_SETS, task_losses, task_names

SCALES = ("z", "s1", "s2", "s3")


def test_names():
    assert task_names("rd") == ("distortion", "rate")
    assert task_names("scales") == ("distortion", "rate_z", "rate_s1", "rate_s2", "rate_s3")
    assert set(TASK_SETS) == {"rd", "scales"}


def test_unknown_task_set_lists_valid_ones():
    with pytest.raises(ValueError, match="valid: rd, scales"):
        task_names("five")
    with pytest.raises(ValueError, match="unknown task_set"):
        task_losses("five", torch.tensor(1.0), {}, 1)


def test_missing_bits_key():
    bits = {"z": torch.ones(2), "s1": torch.ones(2)}
    with pytest.raises(ValueError, match="keys"):
        task_losses("rd", torch.tensor(1.0), bits, 8)


def test_rd_values_and_gradient():
    # Batch of 2 images of 2x2 pixels: 8 pixels; 5 + 3 * 5 = 20 bits in all -> 2.5 bpp.
    bits = {k: torch.tensor([1.0, 4.0] if k == "z" else [3.0, 2.0], requires_grad=True) for k in SCALES}
    losses = task_losses("rd", torch.tensor(0.7), bits, num_pixels=8)
    assert losses.tolist() == pytest.approx([0.7, 2.5])
    losses[1].backward()
    assert bits["s2"].grad.tolist() == [0.125, 0.125]


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 4),
    num_pixels=st.integers(1, 10**6),
    seed=st.integers(0, 2**16),
)
def test_scale_rates_partition_the_rate(batch, num_pixels, seed):
    gen = torch.Generator().manual_seed(seed)
    bits = {k: torch.rand(batch, generator=gen) * 1e5 for k in SCALES}
    distortion = torch.rand((), generator=gen)
    rd = task_losses("rd", distortion, bits, num_pixels)
    scales = task_losses("scales", distortion, bits, num_pixels)
    assert scales.shape == (5,) and rd.shape == (2,)
    assert scales[0] == rd[0] == distortion
    assert scales[1:].sum().item() == pytest.approx(rd[1].item(), rel=1e-6)
    assert scales[1].item() == pytest.approx(bits["z"].sum().item() / num_pixels, rel=1e-6)


def test_an_unknown_task_set_is_a_config_error_naming_the_registry():
    from lit_hpcm.errors import ConfigError
    from lit_hpcm.training.module import LitHPCM

    with pytest.raises(ConfigError, match="unknown task_set 'scale'; valid: rd, scales"):
        LitHPCM(preset="tiny", task_set="scale")

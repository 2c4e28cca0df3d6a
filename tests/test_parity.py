"""Parity with the official HPCM (fixtures computed by lyq133/LIC-HPCM): base and large presets.

Runs the real presets once each (a few seconds on a CPU), through `load_official`.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from official_fill import fixture_dir, official_state
from skimage import data as sample_photos

from lit_hpcm.models.official import load_official

FIXTURES = ["hpcm_base", "hpcm_large"]


@functools.lru_cache(maxsize=None)
def official_run(name: str):
    """(model, reference tensors, our eval forward on the reference input) for one fixture."""
    reference = torch.load(fixture_dir() / f"{name}_io.pt")
    model = load_official(official_state(name), preset=name.split("_")[1])
    with torch.no_grad():
        out = model(reference["x"])
    return model, reference, out


def _bits(likelihoods: torch.Tensor) -> float:
    return float(-torch.log2(likelihoods.double()).sum())


def _coded_and_estimated_bytes(model, x: torch.Tensor) -> tuple[int, float, dict]:
    with torch.no_grad():
        out = model(x)
    encoded = model.compress(x)
    coded = sum(len(s[0]) for s in encoded["strings"])
    return coded, sum(float(b.sum()) for b in out["bits"].values()) / 8, out | {"encoded": encoded}


@pytest.mark.parametrize("name", FIXTURES)
def test_total_bits_of_y_and_z_match_within_0_1_percent(name):
    _, reference, out = official_run(name)
    for key in ("y", "z"):
        expected, got = _bits(reference[f"likelihoods_{key}"]), _bits(out["likelihoods"][key])
        assert abs(got - expected) / expected < 1e-3, (name, key, got, expected)


@pytest.mark.parametrize("name", FIXTURES)
def test_reconstruction_within_60_db_of_the_official(name):
    _, reference, out = official_run(name)
    mse = float((out["x_hat"].double() - reference["x_hat"].double()).pow(2).mean())
    assert mse == 0.0 or -10 * np.log10(mse) >= 60


def test_fixture_image_codes_within_1_percent_plus_64_bytes_and_decodes_exactly():
    model, reference, _ = official_run("hpcm_base")
    coded, estimated, out = _coded_and_estimated_bytes(model, reference["x"])
    assert coded <= 1.01 * estimated + 64, (coded, estimated)
    decoded = model.decompress(out["encoded"]["strings"], out["encoded"]["shape"])
    assert torch.equal(decoded["x_hat"], out["x_hat"].clamp(0, 1))


def test_real_photo_codes_within_2_percent_of_the_estimate():
    model, _, _ = official_run("hpcm_base")
    photo = torch.from_numpy(sample_photos.astronaut()[:256, 128:512].copy()).permute(2, 0, 1).float() / 255
    coded, estimated, _ = _coded_and_estimated_bytes(model, photo.unsqueeze(0))
    assert abs(coded - estimated) <= 0.02 * estimated, (coded, estimated)

"""Network sizes of the HPCM presets.

`base` and `large` are the official HPCM-Base / HPCM-Large networks (lyq133/LIC-HPCM); `tiny` keeps
the same topology and coding schedule with narrow widths and small attention windows so that tests
and the demo run on a CPU with 64×64 inputs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class HPCMConfig:
    """Hyper-parameters of one HPCM network.

    analysis_widths: channels after the 1st, 2nd and 3rd downsampling of g_a (g_s mirrors them).
    latent_channels (M): channels of y; must be a multiple of 8 (the masks permute 8 channel groups).
    hyper_channels (N): channels of z.
    windows: attention window of the s1, s2, s3 context cells (on each scale's own grid).
    """

    analysis_widths: tuple[int, int, int] = (96, 192, 384)
    latent_channels: int = 320
    hyper_channels: int = 256
    analysis_depths: tuple[int, int, int] = (2, 2, 4)
    synthesis_depths: tuple[int, int, int] = (4, 2, 2)
    hyper_depth: int = 3
    prior_s1_s2_depths: tuple[int, int] = (2, 1)
    prior_s3_depths: tuple[int, int] = (3, 2)
    windows: tuple[int, int, int] = (4, 8, 8)
    attention_heads: int = 32
    mlp_ratio: int = 4
    partial_ratio: int = 4

    def __post_init__(self) -> None:
        if self.latent_channels % 8:
            raise ValueError(f"latent_channels must be a multiple of 8, got {self.latent_channels}")
        if (2 * self.latent_channels) % self.attention_heads:
            raise ValueError("2 * latent_channels must be divisible by attention_heads")

    @property
    def pad_multiple(self) -> int:
        """Input sizes must be multiples of this: 16 (g_a) × what the latent grid needs.

        The latent y needs a multiple of 4 (s1 is y/4 and the mask tiles are 4×4) and each scale's
        grid a multiple of its window: s1 = y/4, s2 = y/2, s3 = y.
        """
        w1, w2, w3 = self.windows
        latent_multiple = math.lcm(4, 4 * w1, 2 * w2, w3)
        return 16 * latent_multiple


PRESETS: dict[str, HPCMConfig] = {
    "base": HPCMConfig(),
    "large": HPCMConfig(
        analysis_depths=(2, 2, 8),
        synthesis_depths=(8, 2, 2),
        prior_s1_s2_depths=(2, 2),
        prior_s3_depths=(4, 3),
    ),
    "tiny": HPCMConfig(
        analysis_widths=(16, 24, 32),
        latent_channels=32,
        hyper_channels=32,
        analysis_depths=(1, 1, 1),
        synthesis_depths=(1, 1, 1),
        hyper_depth=1,
        prior_s1_s2_depths=(1, 1),
        prior_s3_depths=(1, 1),
        windows=(1, 2, 4),
        attention_heads=4,
    ),
}


def resolve_config(preset: str, **overrides) -> HPCMConfig:
    """The preset's config with `overrides` applied (unknown preset or field -> ValueError)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown HPCM preset {preset!r}; choose one of {sorted(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(HPCMConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown HPCM option(s) {unknown}; valid: {sorted(fields)}")
    tupled = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return dataclasses.replace(PRESETS[preset], **tupled)

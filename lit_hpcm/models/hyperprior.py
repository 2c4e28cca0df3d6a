"""Coding of the hyper-latent z: a learned per-channel mean and scale, generalized-Gaussian."""

from __future__ import annotations

import torch
from torch import nn

from .coders import padded_stream, ste_round
from .entropy import GeneralizedGaussianConditional


class PerChannelZCodec(nn.Module):
    """z [B, N, h, w] -> (z_hat, likelihoods), and its bitstream.

    Each channel c has a learned mean μ_c and scale α_c; z − μ is rounded (STE in training, with
    uniform noise for the likelihood) and coded with one CDF table per channel, built by `update()`.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.means = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.scales = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.entropy = GeneralizedGaussianConditional(None)

    def forward(self, z: torch.Tensor, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        residual = z - self.means
        if training:
            z_hat = ste_round(residual) + self.means
            noisy = residual + torch.empty_like(residual).uniform_(-0.5, 0.5)
            return z_hat, self.entropy.likelihood(noisy, self.scales.expand_as(noisy))
        q = torch.round(residual)
        return q + self.means, self.entropy.likelihood(q, self.scales.expand_as(q))

    def update(self) -> None:
        """Rebuild the per-channel CDF tables from the current scales."""
        scales = self.entropy.lower_bound_scale(self.scales.detach().flatten().float()).cpu()
        self.entropy.update_scale_table(scales.tolist(), force=True)

    def _indexes(self, batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        channels = torch.arange(self.means.shape[1], dtype=torch.int32, device=device)
        return channels.view(1, -1, 1, 1).expand(batch, -1, height, width)

    def compress(self, z: torch.Tensor) -> tuple[list[bytes], torch.Tensor]:
        """z [B, N, h, w] -> (one byte string per image, z_hat)."""
        b, _, h, w = z.shape
        strings = self.entropy.compress(z, self._indexes(b, h, w, z.device), means=self.means.expand(b, -1, -1, -1))
        return strings, torch.round(z - self.means) + self.means

    def decompress(self, strings: list[bytes], size: tuple[int, int]) -> torch.Tensor:
        """Byte strings (one per image) and z's spatial size -> z_hat [B, N, h, w]."""
        indexes = self._indexes(len(strings), *size, device=self.means.device)
        means = self.means.detach().expand(len(strings), -1, -1, -1)
        padded = [padded_stream(string, indexes[0].numel()) for string in strings]
        return self.entropy.decompress(padded, indexes, means=means)

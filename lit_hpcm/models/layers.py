"""Building blocks of HPCM: partial-conv and depthwise-conv residual blocks, window cross-attention.

All blocks keep the spatial size of their input; shapes are given as [B, C, H, W].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv1x1(in_ch: int, out_ch: int) -> nn.Conv2d:
    """Pointwise convolution (channel mixing only)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=1)


def down2(in_ch: int, out_ch: int) -> nn.Conv2d:
    """Non-overlapping 2×2 convolution, stride 2: halves H and W."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=2, stride=2)


def up2(in_ch: int, out_ch: int) -> nn.ConvTranspose2d:
    """Transposed 2×2 convolution, stride 2: doubles H and W (inverse layout of `down2`)."""
    return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2)


def down4x4(in_ch: int, out_ch: int) -> nn.Conv2d:
    """Overlapping 4×4 convolution, stride 2, padding 1: the first layer of g_a."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1)


def up4x4(in_ch: int, out_ch: int) -> nn.ConvTranspose2d:
    """Transposed 4×4 convolution, stride 2, padding 1: the last layer of g_s."""
    return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1)


class PartialConv3x3(nn.Module):
    """3×3 convolution applied to the first `conv_channels` channels only; the rest pass through.

    [B, N, H, W] -> [B, N, H, W]. Cheap spatial mixing (FasterNet-style partial convolution).
    """

    def __init__(self, channels: int, conv_channels: int):
        super().__init__()
        self.split = (conv_channels, channels - conv_channels)
        self.conv = nn.Conv2d(conv_channels, conv_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head, tail = torch.split(x, self.split, dim=1)
        return torch.cat((self.conv(head), tail), dim=1)


def _mlp(expand: nn.Module, project: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """W2·LeakyReLU(W1·x), the activation in place: W1's output is not needed by its own backward, and LeakyReLU
    (slope 0.01 > 0) backpropagates from its output, so autograd keeps one wide [B, hidden, H, W] tensor instead of
    two. Same values as out of place."""
    return project(F.leaky_relu(expand(x), inplace=True))


class PConvRB(nn.Module):
    """Residual block x + W2·LeakyReLU(W1·PConv(x)) used by all four transforms.

    The partial conv touches N / partial_ratio channels; the MLP widens to N · mlp_ratio.
    [B, N, H, W] -> [B, N, H, W].
    """

    def __init__(self, channels: int, mlp_ratio: int = 4, partial_ratio: int = 4):
        super().__init__()
        hidden = channels * mlp_ratio
        self.spatial = PartialConv3x3(channels, channels // partial_ratio)
        self.expand = conv1x1(channels, hidden)
        self.project = conv1x1(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + _mlp(self.expand, self.project, self.spatial(x))


class DWConvRB(nn.Module):
    """Residual block x + W2·LeakyReLU(W1·DWConv3x3(x)) of the spatial-prior networks.

    [B, N, H, W] -> [B, N, H, W]; hidden width N · mlp_ratio (2 in HPCM).
    """

    def __init__(self, channels: int, mlp_ratio: int = 2):
        super().__init__()
        hidden = channels * mlp_ratio
        self.spatial = nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=channels)
        self.expand = conv1x1(channels, hidden)
        self.project = conv1x1(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + _mlp(self.expand, self.project, self.spatial(x))


class SpatialPrior(nn.Module):
    """Predicts [scales, means] of a coding step from [context state, y_hat so far].

    Two DWConvRB stacks; between them the features are multiplied by a per-step learned channel
    vector (supplied by the caller), so one prior network serves several steps.
    [B, 3M, h, w], multiplier [1, 3M, 1, 1] -> [B, 2M, h, w].
    """

    def __init__(self, latent_channels: int, depth_before: int, depth_after: int):
        super().__init__()
        width = 3 * latent_channels
        self.before = nn.Sequential(*(DWConvRB(width) for _ in range(depth_before)))
        self.after = nn.Sequential(
            *(DWConvRB(width) for _ in range(depth_after)), conv1x1(width, 2 * latent_channels)
        )

    def forward(self, x: torch.Tensor, multiplier: torch.Tensor) -> torch.Tensor:
        return self.after(self.before(x) * multiplier)


class WindowCrossAttention(nn.Module):
    """Carries the context state from one coding step to the next.

    Queries come from the new step's prediction, keys and values from the previous state; attention
    runs inside non-overlapping window×window tiles, multi-head, followed by a residual projection
    of the query input: h_t = Attn(q(x_t), k(h), v(h)) + out(x_t).
    x_t, h: [B, D, H, W] with H, W multiples of `window` -> [B, D, H, W].
    """

    def __init__(self, channels: int, window: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels cannot be split into {heads} heads")
        self.window = window
        self.heads = heads
        self.query = conv1x1(channels, channels)
        self.key = conv1x1(channels, channels)
        self.value = conv1x1(channels, channels)
        self.out = conv1x1(channels, channels)

    def _to_windows(self, x: torch.Tensor) -> torch.Tensor:
        """[B, D, H, W] -> [B·nH·nW, heads, window², D/heads]."""
        b, d, h, w = x.shape
        s = self.window
        x = x.view(b, self.heads, d // self.heads, h // s, s, w // s, s)
        return x.permute(0, 3, 5, 1, 4, 6, 2).reshape(-1, self.heads, s * s, d // self.heads)

    def _from_windows(self, x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Inverse of `_to_windows`."""
        b, d, h, w = shape
        s = self.window
        x = x.view(b, h // s, w // s, self.heads, s, s, d // self.heads)
        return x.permute(0, 3, 6, 1, 4, 2, 5).reshape(b, d, h, w)

    def forward(self, x_t: torch.Tensor, h_prev: torch.Tensor) -> torch.Tensor:
        q = self._to_windows(self.query(x_t))
        k = self._to_windows(self.key(h_prev))
        v = self._to_windows(self.value(h_prev))
        attended = F.scaled_dot_product_attention(q, k, v)
        return self._from_windows(attended, x_t.shape) + self.out(x_t)

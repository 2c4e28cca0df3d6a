"""HPCM: learned image compression with hierarchical progressive context modeling (ICCV 2025).

    x ─▶ pad ─▶ g_a ─▶ y ─▶ h_a ─▶ z ─▶ PerChannelZCodec ─▶ z_hat ─▶ h_s ─▶ params
                       │                                                   │
                       └────────────▶ ProgressiveContext (11 steps) ◀──────┘
                                              │ y_hat
                                              ▼
                                     g_s ─▶ crop ─▶ x_hat

Inputs are RGB in [0, 1], [B, 3, H, W] of any size: they are zero-padded (centred, as the official
test does) to a multiple of `config.pad_multiple` and the output is cropped back.
"""

from __future__ import annotations

import functools
import zlib
from collections import OrderedDict
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from compressai.entropy_models import GaussianConditional
from torch import nn

from .coders import LatentDecoder, LatentEncoder, LatentQuantizer
from .context import ProgressiveContext
from .entropy import GeneralizedGaussianConditional, official_scale_table
from .hyperprior import PerChannelZCodec
from .layers import PConvRB, down2, down4x4, up2, up4x4
from .masks import LatentLayout
from .presets import HPCMConfig, resolve_config
from .schedule import SCALES

# Parameter groups for layer-wise learning rates and freezing: top-level child -> group name.
PARAMETER_GROUPS: dict[str, str] = {
    "g_a": "g_a",
    "g_s": "g_s",
    "h_a": "h_a",
    "h_s": "h_s",
    "context": "context",
    "hyperprior": "entropy",
    "y_entropy": "entropy",
}


def _analysis(c: HPCMConfig) -> nn.Sequential:
    (w1, w2, w3), (d1, d2, d3) = c.analysis_widths, c.analysis_depths
    block = lambda n: PConvRB(n, c.mlp_ratio, c.partial_ratio)  # noqa: E731
    return nn.Sequential(
        down4x4(3, w1), *(block(w1) for _ in range(d1)),
        down2(w1, w2), *(block(w2) for _ in range(d2)),
        down2(w2, w3), *(block(w3) for _ in range(d3)),
        down2(w3, c.latent_channels),
    )


def _synthesis(c: HPCMConfig) -> nn.Sequential:
    (w1, w2, w3), (d3, d2, d1) = c.analysis_widths, c.synthesis_depths
    block = lambda n: PConvRB(n, c.mlp_ratio, c.partial_ratio)  # noqa: E731
    return nn.Sequential(
        up2(c.latent_channels, w3), *(block(w3) for _ in range(d3)),
        up2(w3, w2), *(block(w2) for _ in range(d2)),
        up2(w2, w1), *(block(w1) for _ in range(d1)),
        up4x4(w1, 3),
    )


def _hyper_analysis(c: HPCMConfig) -> nn.Sequential:
    block = lambda n: PConvRB(n, c.mlp_ratio, c.partial_ratio)  # noqa: E731
    m, n = c.latent_channels, c.hyper_channels
    return nn.Sequential(block(m), down2(m, n), *(block(n) for _ in range(c.hyper_depth)), down2(n, n))


def _hyper_synthesis(c: HPCMConfig) -> nn.Sequential:
    block = lambda n: PConvRB(n, c.mlp_ratio, c.partial_ratio)  # noqa: E731
    m, n = c.latent_channels, c.hyper_channels
    return nn.Sequential(up2(n, n), *(block(n) for _ in range(c.hyper_depth)), up2(n, 2 * m), block(2 * m))


RELEASE_TABLE_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length")  # what `update()` builds from the scale table

LAYOUT_CACHE_SIZE = 4
"""Latent sizes whose `LatentLayout` stays cached: a training run uses one or two, a test set cycles through a few;
each entry holds index maps of the latent's size on its device, which for a large image take much memory."""

# Coding arithmetic: torch's defaults, whatever a trainer or the fast path set (files record only the device kind).
_CODING_FLAGS = ((torch.backends.cuda.matmul, "allow_tf32", False), (torch.backends.cudnn, "allow_tf32", True),
                 (torch.backends.cudnn, "benchmark", False), (torch.backends.cudnn, "deterministic", False))


@contextmanager
def coding_arithmetic(device_type: str):
    """Encode, decode and build tables with fixed arithmetic: autocast off (whatever the trainer's precision: a bf16
    synthesis or bf16-rounded symbols would tie a file to a training setting) and the TF32 / cuDNN autotuning
    flags at torch's defaults (what `lit-hpcm compress`/`decompress` use), restored afterwards."""
    saved = [getattr(owner, name) for owner, name, _ in _CODING_FLAGS]
    try:
        for owner, name, value in _CODING_FLAGS:
            setattr(owner, name, value)
        with torch.autocast(device_type, enabled=False):
            yield
    finally:
        for (owner, name, _), value in zip(_CODING_FLAGS, saved):
            setattr(owner, name, value)


def _coding(method):
    """`method` of an HPCM under no_grad and `coding_arithmetic` on the device of the model's parameters."""

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        with torch.no_grad(), coding_arithmetic(next(self.parameters()).device.type):
            return method(self, *args, **kwargs)

    return wrapped


def centred_padding(height: int, width: int, multiple: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding that brings H×W up to multiples of `multiple`."""
    ph = -height % multiple
    pw = -width % multiple
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2


def crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo `centred_padding`: [B, C, H', W'] -> [B, C, *size] (the centred window)."""
    top = (x.shape[-2] - size[0]) // 2
    left = (x.shape[-1] - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


class HPCM(nn.Module):
    """The HPCM codec. `HPCM(preset="base" | "large" | "tiny", **overrides)`.

    forward(x) -> {"x_hat": [B,3,H,W], "likelihoods": {"y": [B,M,h,w], "z": [B,N,h/4,w/4]},
                   "bits": {"z", "s1", "s2", "s3": [B]}}  (bits = −log2 likelihood sums per image;
                   they partition the total exactly: Σ bits = −Σ log2 likelihoods).
    compress(x) -> {"strings": [y_strings, z_strings], "shape": (H, W), "symbol_crc": [B ints]} (one string per
                   image each; symbol_crc: CRC-32 of each image's y symbols, `coders.symbol_checksums`);
    decompress(strings, shape) -> {"x_hat": [B,3,H,W] clamped to [0,1], "symbol_crc": [B ints]}: the symbols it
                   decoded, equal to the encoder's unless its float arithmetic differs; both need `update()` first.
    """

    def __init__(self, preset: str = "base", **overrides):
        super().__init__()
        self.preset = preset
        self.config = resolve_config(preset, **overrides)
        c = self.config
        self.g_a = _analysis(c)
        self.g_s = _synthesis(c)
        self.h_a = _hyper_analysis(c)
        self.h_s = _hyper_synthesis(c)
        self.hyperprior = PerChannelZCodec(c.hyper_channels)
        self.context = ProgressiveContext(c)
        self.y_entropy = GeneralizedGaussianConditional(official_scale_table().tolist())
        self._layouts: OrderedDict[tuple, LatentLayout] = OrderedDict()  # LRU of LAYOUT_CACHE_SIZE entries
        self._fingerprint: int | None = None  # see fingerprint()

    # -- geometry -------------------------------------------------------------------------------
    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an RGB batch [B, 3, H, W], got shape {tuple(x.shape)}")
        return F.pad(x, centred_padding(*x.shape[-2:], self.config.pad_multiple))

    def layout(self, height: int, width: int, device: torch.device) -> LatentLayout:
        """Static masks and index maps for a latent of height×width (the LAYOUT_CACHE_SIZE most recently used
        sizes and devices stay cached, so memory does not grow with every image size a run meets)."""
        key = (height, width, str(device))
        if key in self._layouts:
            self._layouts.move_to_end(key)
        else:
            self._layouts[key] = LatentLayout(self.config.latent_channels, height, width, device)
            while len(self._layouts) > LAYOUT_CACHE_SIZE:
                self._layouts.popitem(last=False)
        return self._layouts[key]

    def prepare_layout(self, x: torch.Tensor) -> LatentLayout:
        """Build (and cache) the layout an input batch x [B, 3, H, W] will use.

        Called eagerly before a compiled forward: the layout's index maps come from data-dependent
        ops (nonzero) that a graph compiler cannot trace, while a cache hit inside the graph is free.
        """
        return self.layout(*self._latent_size(tuple(x.shape[-2:])), x.device)

    def _transform(self, transform: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """g_a or g_s applied to x [B, C, H, W]; on the CPU outside training in NHWC (channels-last) layout.

        There oneDNN runs these wide-image convolutions without converting layouts around each layer, which makes
        eval forwards faster (see docs/PERFORMANCE.md); training steps gain nothing from it, and on the GPU the
        LightningModule's `channels_last` setting decides. The values change only by float rounding, and a decoder
        rebuilds the entropy parameters from the stream without either transform, so a file decodes to the same
        latent whichever layout its encoder used. The output comes back NCHW-contiguous when x was.
        """
        if x.device.type != "cpu" or self.training or not x.is_contiguous():
            return transform(x)
        return transform(x.contiguous(memory_format=torch.channels_last)).contiguous()

    # -- training / estimation --------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> dict:
        size = tuple(x.shape[-2:])
        y = self._transform(self.g_a, self._pad(x))
        z = self.h_a(y)
        z_hat, z_likelihoods = self.hyperprior(z, self.training)
        params = self.h_s(z_hat)
        layout = self.layout(y.shape[-2], y.shape[-1], y.device)
        quantizer = LatentQuantizer(y, layout, self.training)
        y_hat = self.context(params, layout, quantizer)
        y_likelihoods = self.y_entropy.likelihood(*quantizer.likelihood_inputs())
        x_hat = crop(self._transform(self.g_s, y_hat), size)
        return {
            "x_hat": x_hat,
            "likelihoods": {"y": y_likelihoods, "z": z_likelihoods},
            "bits": self._bits(y_likelihoods, z_likelihoods, layout),
        }

    @staticmethod
    def _bits(y_likelihoods: torch.Tensor, z_likelihoods: torch.Tensor, layout: LatentLayout) -> dict:
        """−log2 likelihood sums per image: z, and y split by the scale that codes each cell."""
        y_bits = -torch.log2(y_likelihoods)
        bits = {"z": -torch.log2(z_likelihoods).flatten(1).sum(1)}
        for level, scale in enumerate(SCALES, start=1):
            bits[scale] = (y_bits * (layout.level == level)).flatten(1).sum(1)
        return bits

    # -- entropy coding --------------------------------------------------------------------------
    @_coding
    def update(self, scale_table: torch.Tensor | None = None, force: bool = True) -> bool:
        """Build the CDF tables: y from `scale_table` (default: the official 60 levels), z per channel (both on the
        CPU in float64, `GeneralizedGaussianConditional.update`), and put 4-D weights back in the default NCHW
        layout, which coding uses whatever layout training chose (`channels_last`)."""
        self.to(memory_format=torch.contiguous_format)
        table = official_scale_table() if scale_table is None else scale_table
        self.y_entropy.update_scale_table(torch.as_tensor(table).tolist(), force=force)
        self.hyperprior.update()
        self._fingerprint = None  # weights may have changed since the last file was written
        return True

    @contextmanager
    def release_tables(self, format_version: int):
        """The CDF tables that files of `format_version` were coded with, for the duration of the block.

        Format 3 files use `update()`'s tables (float64, built on the CPU). Formats 1 and 2 were coded with
        CompressAI's own float32 build on the buffers' device, whose quantized CDFs differ from the float64 ones in a
        few entries: decoding such a file with the float64 tables would give other symbols. For them the tables are
        rebuilt that way here (on the CPU, where those files were coded) and the current ones restored afterwards.
        """
        if format_version >= 3:
            yield
            return
        coders = [m for m in self.modules() if isinstance(m, GeneralizedGaussianConditional)]
        saved = [{name: getattr(m, name) for name in RELEASE_TABLE_BUFFERS} for m in coders]
        try:
            with torch.no_grad(), coding_arithmetic(next(self.parameters()).device.type):
                for coder in coders:
                    GaussianConditional.update(coder)
            yield
        finally:
            for coder, buffers in zip(coders, saved):
                for name, value in buffers.items():
                    setattr(coder, name, value)

    def fingerprint(self) -> int:
        """CRC-32 of the parameters (float32 bytes, in name order), which a coded file records so that
        other weights refuse to decode it. Computed once per `update()` (coding runs after one)."""
        if self._fingerprint is None:
            crc = 0
            for _, param in sorted(self.named_parameters()):
                crc = zlib.crc32(param.detach().float().cpu().contiguous().numpy().tobytes(), crc)
            self._fingerprint = crc
        return self._fingerprint

    @_coding
    def compress(self, x: torch.Tensor) -> dict:
        y = self._transform(self.g_a, self._pad(x))
        z = self.h_a(y)
        z_strings, z_hat = self.hyperprior.compress(z)
        params = self.h_s(z_hat)
        encoder = LatentEncoder(y, self.layout(y.shape[-2], y.shape[-1], y.device), self.y_entropy)
        self.context(params, encoder.layout, encoder)
        y_strings, symbol_crc = encoder.strings()
        return {"strings": [y_strings, z_strings], "shape": tuple(x.shape[-2:]), "symbol_crc": symbol_crc}

    @_coding
    def decompress(self, strings: list, shape: tuple[int, int]) -> dict:
        y_size = self._latent_size(tuple(shape))
        z_hat = self.hyperprior.decompress(strings[1], (y_size[0] // 4, y_size[1] // 4))
        params = self.h_s(z_hat)
        layout = self.layout(*y_size, params.device)
        decoder = LatentDecoder(strings[0], layout, self.y_entropy)
        y_hat = self.context(params, layout, decoder)
        x_hat = crop(self._transform(self.g_s, y_hat), tuple(shape)).clamp_(0, 1)
        return {"x_hat": x_hat, "symbol_crc": decoder.checksums()}

    def _latent_size(self, shape: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of y for images of size (H, W): the padded size over g_a's stride 16."""
        padded = [s + p for s, p in zip(shape, self._padding_of(shape))]
        return padded[0] // 16, padded[1] // 16

    def _padding_of(self, shape: tuple[int, int]) -> tuple[int, int]:
        left, right, top, bottom = centred_padding(*shape, self.config.pad_multiple)
        return top + bottom, left + right

    # -- parameter groups ------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Named parameters by group (g_a, g_s, h_a, h_s, context, entropy): an exact partition."""
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {g: [] for g in dict.fromkeys(PARAMETER_GROUPS.values())}
        for name, param in self.named_parameters():
            groups[PARAMETER_GROUPS[name.split(".", 1)[0]]].append((name, param))
        assigned = sum(len(v) for v in groups.values())
        assert assigned == len(list(self.parameters())), "parameter groups must partition the model"
        return groups

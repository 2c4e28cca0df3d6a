"""Step coders: what the scheduled context loop does with each step's cells.

- `LatentQuantizer` (forward): rounds (STE in training) and accumulates the values and scales the
  likelihood of y is computed from.
- `LatentEncoder` (compress): rounds, and records symbols and CDF indexes in bitstream order.
- `LatentDecoder` (decompress): reads the symbols back from the rANS stream.

All three return the same y_hat arithmetic, (q + means) · mask, so a decoder rebuilds exactly the
tensors the encoder saw and the context predictions stay bit-identical — as long as it computes with the
encoder's float arithmetic. Where that differs (another CPU vector ISA, another thread count), a scale can
fall into a neighbouring CDF bucket and the rANS stream decodes, without any error, into other symbols.
Encoder and decoder therefore both report a CRC-32 of the symbols they coded (`symbol_checksums`), which
the file format compares.
"""

from __future__ import annotations

import zlib
from typing import Callable

import torch
from compressai.ans import BufferedRansEncoder, RansDecoder

from .entropy import GeneralizedGaussianConditional
from .masks import LatentLayout
from .schedule import Step


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return (torch.round(x) - x).detach() + x


def padded_stream(string: bytes, symbols: int) -> bytes:
    """An rANS string followed by zero 32-bit words, two for the initial state and one per symbol it codes, for
    CompressAI's decoder.

    That decoder reads its stream without bounds checks: a stream that lost step (decoded with other float
    arithmetic, or forged) goes on reading past its end, at most a word per symbol outside bypass runs, after the
    two words of its initial state. The padding keeps those reads in memory of ours and makes such a decode
    repeatable (unpadded, each call read other bytes); what it decodes is then refused by the symbol CRC, or, for z,
    by the y symbols that depend on it.
    """
    return string + bytes(4 * (symbols + 2))


def symbol_checksums(symbols: torch.Tensor) -> list[int]:
    """CRC-32 per image of the coded symbols: [B, n] int32, steps concatenated in schedule order -> B ints.

    Computed on little-endian int32 bytes, so the encoder's and a decoder's values agree on any machine.
    """
    return [zlib.crc32(row.tobytes()) for row in symbols.cpu().numpy().astype("<i4")]


def _step_cells(layout: LatentLayout, step: Step, x: torch.Tensor) -> torch.Tensor:
    """The step's cells of x [B, M, h, w], in bitstream order: [B, n]."""
    return x.flatten(1)[:, layout.cells[step.scale][step.part]]


class LatentQuantizer:
    """Forward-pass coder. y: [B, M, H, W] the latent to quantize."""

    def __init__(self, y: torch.Tensor, layout: LatentLayout, training: bool):
        self.layout = layout
        self.training = training
        self.grids = {scale: layout.grid_of(scale, y) for scale in layout.sizes}
        self.values = None
        self.scales = None

    def code(self, step, scales, means, mask):
        values = (self.grids[step.scale] - means) * mask
        q = ste_round(values) if self.training else torch.round(values)
        step_scales = scales * mask
        self.values = values if self.values is None else self.values + values
        self.scales = step_scales if self.scales is None else self.scales + step_scales
        return (q + means) * mask

    def next_scale(self, upsample: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.values = upsample(self.values)
        self.scales = upsample(self.scales)

    def likelihood_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(centred values, scales), both [B, M, H, W]: noisy values in training, rounded in eval."""
        if self.training:
            noise = torch.empty_like(self.values).uniform_(-0.5, 0.5)
            return self.values + noise, self.scales
        return torch.round(self.values), self.scales


class LatentEncoder:
    """Compress-side coder: collects each step's symbols and CDF indexes for one rANS stream per image."""

    def __init__(self, y: torch.Tensor, layout: LatentLayout, entropy: GeneralizedGaussianConditional):
        self.layout = layout
        self.entropy = entropy
        self.grids = {scale: layout.grid_of(scale, y) for scale in layout.sizes}
        self.symbols: list[torch.Tensor] = []
        self.indexes: list[torch.Tensor] = []

    def code(self, step, scales, means, mask):
        q = torch.round((self.grids[step.scale] - means) * mask)
        self.symbols.append(_step_cells(self.layout, step, q).int())
        self.indexes.append(self.entropy.build_indexes(_step_cells(self.layout, step, scales)))
        return (q + means) * mask

    def next_scale(self, upsample) -> None:
        pass

    def strings(self) -> tuple[list[bytes], list[int]]:
        """(one rANS byte string per image, holding every step's symbols in schedule order; the CRC-32 of each
        image's symbols, `symbol_checksums`)."""
        cdfs, lengths, offsets = self.entropy.table()
        symbols = torch.cat(self.symbols, dim=1).cpu()
        indexes = torch.cat(self.indexes, dim=1).cpu()
        out = []
        for image_symbols, image_indexes in zip(symbols, indexes):
            encoder = BufferedRansEncoder()
            encoder.encode_with_indexes(image_symbols.tolist(), image_indexes.tolist(), cdfs, lengths, offsets)
            out.append(encoder.flush())
        return out, symbol_checksums(symbols)


class LatentDecoder:
    """Decompress-side coder: decodes each step's symbols, in schedule order, from one stream per image."""

    def __init__(self, strings: list[bytes], layout: LatentLayout, entropy: GeneralizedGaussianConditional):
        self.layout = layout
        self.entropy = entropy
        self.table = entropy.table()
        self.decoders = []
        for string in strings:
            decoder = RansDecoder()
            decoder.set_stream(padded_stream(string, layout.level.numel()))  # every cell of y is one symbol
            self.decoders.append(decoder)
        self.symbols: list[torch.Tensor] = []

    def code(self, step, scales, means, mask):
        cells = self.layout.cells[step.scale][step.part]
        indexes = self.entropy.build_indexes(_step_cells(self.layout, step, scales)).cpu()
        decoded = [d.decode_stream(idx.tolist(), *self.table) for d, idx in zip(self.decoders, indexes)]
        self.symbols.append(torch.tensor(decoded, dtype=torch.int32))
        q = torch.zeros_like(means).flatten(1)
        q[:, cells] = self.symbols[-1].to(means.device, means.dtype)
        return (q.view_as(means) + means) * mask

    def next_scale(self, upsample) -> None:
        pass

    def checksums(self) -> list[int]:
        """CRC-32 per image of the decoded symbols: equal to the encoder's exactly when decoding stayed in step."""
        return symbol_checksums(torch.cat(self.symbols, dim=1))

"""Format 3 codes with the float64 CDF tables; files of formats 1 and 2 (coded with CompressAI's float32 tables by
earlier releases) still decode exactly, with the tables they were coded with."""

from __future__ import annotations

import struct
import zlib

import torch

from lit_hpcm import codec


def _as_version(data: bytes, version: int) -> bytes:
    """`data` (a format-3 file) with another version byte; formats 2 and 3 share the layout."""
    body = data[:4] + bytes([version]) + data[5:-4]
    return body + struct.pack(">I", zlib.crc32(body))


def test_the_two_table_builds_differ_and_release_tables_restores_the_current_ones(coding_model):
    current = coding_model.y_entropy._quantized_cdf.clone()
    with coding_model.release_tables(2):
        legacy = coding_model.y_entropy._quantized_cdf.clone()
    assert not torch.equal(current, legacy)  # another build: a format-2 file needs its own
    assert torch.equal(coding_model.y_entropy._quantized_cdf, current)


def test_a_format_2_file_of_the_earlier_release_decodes_exactly(coding_model):
    image = torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(3))
    with coding_model.release_tables(2):  # how the earlier release coded it
        old = _as_version(codec.encode(coding_model, image), 2)
        expected = coding_model.decompress(*_strings_and_shape(old))["x_hat"][0]
    decoded, header = codec.decode_tensor(old, coding_model)
    assert header.version == 2 and torch.equal(decoded, expected)
    new = codec.encode(coding_model, image)
    assert codec.read_header(new)[0].version == 3
    assert torch.equal(codec.decode_tensor(new, coding_model)[0], coding_model(image[None])["x_hat"][0].clamp(0, 1))


def _strings_and_shape(data: bytes):
    header, z_string, y_string = codec.read_header(data)
    return [[y_string], [z_string]], (header.height, header.width)

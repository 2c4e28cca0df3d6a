"""What a decode may allocate: a forged image size is refused, in one line, before anything is allocated."""

from __future__ import annotations

import struct
import zlib

import pytest
import torch

from lit_hpcm import codec
from lit_hpcm.cli import main
from lit_hpcm.cli.codec_commands import register_decompress
from lit_hpcm.models import HPCM
from lit_hpcm.models.weights import save_weights


def _with_size(data: bytes, width: int, height: int) -> bytes:
    """The file ``data`` declaring another image size, its CRC rewritten as a forger would."""
    header, _, _ = codec.read_header(data)
    width_at = len(codec.MAGIC) + 1 + 1 + len(header.preset)  # magic, version, preset length and name
    body = bytearray(data[:-4])
    body[width_at : width_at + 8] = struct.pack(">II", width, height)
    return bytes(body) + struct.pack(">I", zlib.crc32(body))


def test_a_forged_huge_size_is_refused_before_decoding(tiny_model, monkeypatch):
    """16384×16384 (2^28 pixels, what a header may declare) needed tens of GB to decode; now refused unless the
    caller raises max_pixels, and the model's decompress is never reached."""
    forged = _with_size(codec.encode(tiny_model, torch.rand(3, 16, 16)), 1 << 14, 1 << 14)
    calls = []
    monkeypatch.setattr(tiny_model, "decompress", lambda *args: calls.append(args) or pytest.fail("allocating"))
    with pytest.raises(ValueError, match=r"16384×16384 image \(268.4 Mpx\), more than max_pixels 67108864"):
        codec.decode_tensor(forged, tiny_model)
    with pytest.raises(ValueError, match="more than max_pixels"):
        codec.decode(forged, tiny_model)
    with pytest.raises(ValueError, match="more than max_pixels 255 "):
        codec.decode_tensor(codec.encode(tiny_model, torch.rand(3, 16, 16)), tiny_model, max_pixels=255)
    assert calls == []


def test_max_pixels_bounds_only_larger_images(tiny_model):
    data = codec.encode(tiny_model, torch.rand(3, 16, 24))
    x, header = codec.decode_tensor(data, tiny_model, max_pixels=16 * 24)  # exactly at the bound: decoded
    assert x.shape == (3, 16, 24) and (header.width, header.height) == (24, 16)
    assert codec.DEFAULT_MAX_PIXELS == 1 << 26


def test_decompress_max_pixels_refuses_in_one_line_and_writes_nothing(tmp_path, capsys):
    torch.manual_seed(0)
    model = HPCM("tiny")
    weights = save_weights(model.state_dict(), "tiny", tmp_path / "tiny.pt")
    model.eval().update()
    (tmp_path / "forged.hpcm").write_bytes(_with_size(codec.encode(model, torch.rand(3, 16, 16)), 12000, 8000))
    argv = ["decompress", str(tmp_path / "forged.hpcm"), "-o", str(tmp_path / "out.png"), "--ckpt", str(weights)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lit-hpcm decompress: error: the file declares a 12000×8000 image (96.0 Mpx)")
    assert err.count("\n") == 1 and not (tmp_path / "out.png").exists()

    (tmp_path / "small.hpcm").write_bytes(codec.encode(model, torch.rand(3, 16, 16)))
    small = ["decompress", str(tmp_path / "small.hpcm"), "--ckpt", str(weights)]
    assert main([*small, "-o", str(tmp_path / "a.png"), "--max_pixels", "255"]) == 2
    assert "more than max_pixels 255 " in capsys.readouterr().err
    assert main([*small, "-o", str(tmp_path / "b.png"), "--max_pixels", "256"]) == 0
    with pytest.raises(SystemExit):
        main([*small, "-o", str(tmp_path / "c.png"), "--max_pixels", "0"])
    assert "expected a whole number >= 1, got '0'" in capsys.readouterr().err


def test_decompress_help_states_the_default_bound():
    import argparse

    parser = register_decompress(argparse.ArgumentParser(prog="lit-hpcm").add_subparsers())
    assert str(codec.DEFAULT_MAX_PIXELS) in " ".join(parser.format_help().split())

"""Image file codec: round trips for any image mode/size, and no crash, hang or wrong image on bad files."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lit_hpcm.cli import main
from lit_hpcm.codec import bitstream as codec  # its module globals are monkeypatched below
from lit_hpcm.models import HPCM


def _photo(mode: str, size=(37, 29)) -> Image.Image:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (size[1], size[0]), dtype=np.uint16))
    return rgb.convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16"])
def test_every_mode_round_trips_through_a_file(tiny_model, mode):
    image = _photo(mode)
    data = codec.encode(tiny_model, image)
    decoded = codec.decode(data, tiny_model)
    assert decoded.size == image.size
    assert decoded.mode == ("L" if mode in ("L", "I;16") else "RGB")
    header, _, _ = codec.read_header(data)
    assert (header.width, header.height, header.mode, header.preset) == (37, 29, image.mode, "tiny")


@pytest.mark.parametrize("size", [(1, 1), (3, 200), (65, 64)])
def test_odd_sizes_decode_to_the_eval_forward(tiny_model, size):
    x = torch.rand(3, *size)
    decoded, _ = codec.decode_tensor(codec.encode(tiny_model, x), tiny_model)
    with torch.no_grad():
        expected = tiny_model(x[None])["x_hat"][0].clamp(0, 1)
    assert torch.equal(decoded, expected)


def test_other_weights_and_other_presets_are_refused(tiny_model):
    data = codec.encode(tiny_model, torch.rand(3, 16, 16))
    other = HPCM("tiny").eval()
    other.update()
    with pytest.raises(ValueError, match="different model weights"):
        codec.decode(data, other)
    forged = data[:-4].replace(b"\x04tiny", b"\x04base", 1)
    with pytest.raises(ValueError, match="preset"):
        codec.decode(forged + struct.pack(">I", zlib.crc32(forged)), tiny_model)


def _repacked(data: bytes, version: int, threads: int | None = None, device: int = 0, arithmetic: str | None = None):
    """The file `data` written again as format `version` (1: without symbol CRC, threads and arithmetic; 2 and 3
    share a layout), with the given device code and, if given, thread count and arithmetic; the layout spelled out
    independently of the codec."""
    header, z_string, y_string = codec.read_header(data)
    text = lambda s: bytes([len(s)]) + s.encode("latin-1")  # noqa: E731
    payload = struct.pack(">I", len(z_string)) + z_string + y_string
    body = b"HPCM" + bytes([version]) + text(header.preset) + struct.pack(">II", header.width, header.height)
    body += text(header.mode) + struct.pack(">BI", device, header.fingerprint)
    if version >= 2:
        body += struct.pack(">IH", header.symbol_crc, header.threads if threads is None else threads)
        body += text(header.arithmetic if arithmetic is None else arithmetic)
    body += struct.pack(">I", len(payload)) + payload
    return body + struct.pack(">I", zlib.crc32(body))


def _recording_threads(model, monkeypatch) -> list[int]:
    """Make `model.decompress` record the intra-op thread count it runs with; returns the record."""
    decompress, seen = model.decompress, []

    def record(*args):
        seen.append(torch.get_num_threads())
        return decompress(*args)

    monkeypatch.setattr(model, "decompress", record)
    return seen


def test_a_cpu_file_decodes_with_the_encoders_thread_count(coding_model, monkeypatch):
    """oneDNN's float sums depend on the thread count: the decoder adopts the encoder's, then restores its own."""
    own = torch.get_num_threads()
    x = torch.rand(3, 40, 40)
    torch.set_num_threads(1)
    try:
        data = codec.encode(coding_model, x)
        with torch.no_grad():
            expected = coding_model(x[None])["x_hat"][0].clamp(0, 1)  # the reconstruction with the encoder's threads
    finally:
        torch.set_num_threads(own)
    header, _, _ = codec.read_header(data)
    assert header.threads == 1 and header.arithmetic.startswith(f"cpu {torch.backends.cpu.get_cpu_capability()}")
    assert _repacked(data, codec.FORMAT_VERSION) == data  # the test's statement of the layout is the codec's
    threads_seen = _recording_threads(coding_model, monkeypatch)
    torch.set_num_threads(2)
    try:
        decoded, _ = codec.decode_tensor(data, coding_model)
        assert threads_seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(own)
    assert torch.equal(decoded, expected)


def test_a_file_cannot_make_the_decoder_start_thousands_of_threads(coding_model, monkeypatch):
    data = _repacked(codec.encode(coding_model, torch.rand(3, 16, 16)), 2, threads=3)
    threads_seen = _recording_threads(coding_model, monkeypatch)
    monkeypatch.setattr(codec, "DECODE_THREAD_FLOOR", 1)
    monkeypatch.setattr(codec.os, "cpu_count", lambda: 2)
    own = torch.get_num_threads()
    try:
        codec.decode_tensor(data, coding_model)
    except ValueError as error:  # 2 threads instead of 3 may change the sums: then the symbol CRC says so
        assert "3 threads and decoded with" in str(error) and "2 threads" in str(error)
    assert threads_seen == [2] and torch.get_num_threads() == own


def test_a_decode_that_drifts_to_other_symbols_is_refused(coding_model, monkeypatch):
    """What other float arithmetic does to a learned entropy coder (a scale in another CDF bucket), simulated by
    shifting every CDF index in the decoder: the rANS stream decodes without error, the symbol CRC refuses it."""
    data = codec.encode(coding_model, torch.rand(3, 40, 40))
    build_indexes = coding_model.y_entropy.build_indexes
    monkeypatch.setattr(coding_model.y_entropy, "build_indexes", lambda scales: (build_indexes(scales) + 7) % 60)
    threads = torch.get_num_threads()
    with pytest.raises(ValueError, match=r"symbol CRC mismatch\): encoder and decoder both computed with cpu .*, torch "
                       r".*damaged or forged"):
        codec.decode_tensor(data, coding_model)
    assert torch.get_num_threads() == threads
    monkeypatch.setattr(codec, "arithmetic_of", lambda model: "cpu AVX2, torch 0.0")
    with pytest.raises(ValueError, match=r"encoded with cpu .* threads and decoded with cpu AVX2, torch 0.0, \d+ thr"):
        codec.decode_tensor(data, coding_model)
    # CompressAI's decoder reads a stream that lost step past its end; within the zero padding it is repeatable
    # (unpadded, such a 40×40 file gave another result on each call)
    header, z_string, y_string = codec.read_header(data)
    drifted = {coding_model.decompress([[y_string], [z_string]], (40, 40))["symbol_crc"][0] for _ in range(4)}
    assert len(drifted) == 1 and drifted != {header.symbol_crc}


def test_a_forged_image_size_is_refused_not_a_crash(coding_model):
    """A header whose width grew by 65,536 (CRC rewritten) makes the decoder read far past the coded strings: that
    was a segmentation fault before the streams were padded; now the symbol CRC refuses it."""
    data = bytearray(codec.encode(coding_model, torch.rand(3, 64, 64)))
    width_at = 4 + 1 + 1 + len("tiny")  # magic, version, preset length and name
    data[width_at + 1] ^= 1
    body = bytes(data[:-4])
    with pytest.raises(ValueError, match="symbol CRC mismatch"):
        codec.decode_tensor(body + struct.pack(">I", zlib.crc32(body)), coding_model)


def test_the_thread_count_is_restored_when_decoding_fails(coding_model, monkeypatch):
    data = _repacked(codec.encode(coding_model, torch.rand(3, 16, 16)), 2, threads=1)

    def fail(*args):
        assert torch.get_num_threads() == 1
        raise RuntimeError("inside the decoder")

    monkeypatch.setattr(coding_model, "decompress", fail)
    own = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match="inside the decoder"):
            codec.decode_tensor(data, coding_model)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(own)


def test_version_1_files_still_decode_and_impossible_headers_are_refused(coding_model, monkeypatch):
    image = torch.rand(3, 24, 32)
    data = codec.encode(coding_model, image)
    with coding_model.release_tables(1):  # the tables version 1 files were coded with
        old = _repacked(codec.encode(coding_model, image), 1)
    header, _, _ = codec.read_header(old)
    assert (header.symbol_crc, header.threads, header.arithmetic) == (None, None, None)
    assert torch.equal(codec.decode_tensor(old, coding_model)[0], codec.decode_tensor(data, coding_model)[0])
    for threads, device in ((0, 0), (codec.MAX_THREADS + 1, 0), (2, 1)):  # a cuda file records 0 threads
        with pytest.raises(ValueError, match="impossible thread count"):
            codec.read_header(_repacked(data, codec.FORMAT_VERSION, threads, device))
    assert codec.read_header(_repacked(data, codec.FORMAT_VERSION, 0, device=1))[0].device == "cuda"
    for text in ("cpu\nAVX2", "cpu \x1b[31m", "cpu é"):
        with pytest.raises(ValueError, match="encoder arithmetic is not printable ASCII"):
            codec.read_header(_repacked(data, codec.FORMAT_VERSION, arithmetic=text))
    with monkeypatch.context() as patch:
        patch.setattr(torch, "get_num_threads", lambda: codec.MAX_THREADS + 1)
        with pytest.raises(ValueError, match="set fewer to encode"):
            codec.encode(coding_model, torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match=r"version 4 is not supported \(this build reads \(1, 2, 3\)\)"):
        codec.read_header(b"HPCM\x04" + data[5:-4] + struct.pack(">I", zlib.crc32(b"HPCM\x04" + data[5:-4])))


@pytest.fixture(scope="module")
def reference_file():
    torch.manual_seed(0)
    model = HPCM("tiny").eval()
    model.update()
    return model, codec.encode(model, torch.rand(3, 40, 40))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_files_raise_value_error_or_decode_exactly(reference_file, data):
    model, original = reference_file
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice", "random"]))
    blob = bytearray(original)
    if kind == "flip":
        for pos in data.draw(st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=4)):
            blob[pos] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "extend":
        blob += data.draw(st.binary(min_size=1, max_size=64))
    elif kind == "splice":
        at = data.draw(st.integers(0, len(blob)))
        blob[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    else:
        blob = bytearray(data.draw(st.binary(max_size=256)))
    try:
        decoded, _ = codec.decode_tensor(bytes(blob), model)
    except ValueError:
        return
    # a mutation that left a valid file must still decode to the exact original reconstruction
    assert torch.equal(decoded, codec.decode_tensor(original, model)[0])


def test_cli_compress_decompress_and_bad_file(tmp_path, capsys):
    torch.manual_seed(0)
    from lit_hpcm.models.weights import save_weights

    weights = save_weights(HPCM("tiny").state_dict(), "tiny", tmp_path / "tiny.pt")
    _photo("RGB").save(tmp_path / "in.png")
    assert main(["compress", str(tmp_path / "in.png"), "-o", str(tmp_path / "x.hpcm"), "--ckpt", str(weights)]) == 0
    assert main(["decompress", str(tmp_path / "x.hpcm"), "-o", str(tmp_path / "out.png"), "--ckpt", str(weights)]) == 0
    assert Image.open(tmp_path / "out.png").size == (37, 29)
    (tmp_path / "bad.hpcm").write_bytes(b"HPCM\x01garbage")
    assert main(["decompress", str(tmp_path / "bad.hpcm"), "-o", str(tmp_path / "o.png"), "--ckpt", str(weights)]) == 2
    assert "CRC mismatch" in capsys.readouterr().err


def test_cli_never_writes_over_an_input_and_refuses_an_existing_output(tmp_path, capsys):
    torch.manual_seed(0)
    from lit_hpcm.models.weights import save_weights

    weights = save_weights(HPCM("tiny").state_dict(), "tiny", tmp_path / "tiny.pt")
    photo = tmp_path / "photo.png"
    _photo("RGB").save(photo)
    original = photo.read_bytes()
    ckpt = ["--ckpt", str(weights)]
    assert main(["compress", str(photo), "-o", str(photo), *ckpt, "--force"]) == 2  # the input, even with --force
    assert "also an input" in capsys.readouterr().err and photo.read_bytes() == original
    assert main(["compress", str(photo), "-o", str(tmp_path / "x.hpcm"), *ckpt]) == 0
    assert main(["compress", str(photo), "-o", str(tmp_path / "x.hpcm"), *ckpt]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["compress", str(photo), "-o", str(tmp_path / "x.hpcm"), *ckpt, "--force"]) == 0
    assert main(["decompress", str(tmp_path / "x.hpcm"), "-o", str(photo), *ckpt]) == 2
    assert photo.read_bytes() == original
    assert main(["decompress", str(tmp_path / "x.hpcm"), "-o", str(tmp_path), *ckpt, "--force"]) == 2
    assert "a folder, not a file" in capsys.readouterr().err
    assert main(["import-official", str(weights), str(weights), "--preset", "tiny", "--force"]) == 2

"""Image <-> file bytes on top of `HPCM.compress` / `HPCM.decompress`.

File layout, format version 3 (all integers big-endian; version 2 has the same layout)::

    magic "HPCM" | u8 format version | u8 len + preset name | u32 width | u32 height
    | u8 len + original PIL mode | u8 device kind (0 cpu, 1 cuda) | u32 model fingerprint
    | u32 CRC-32 of the y symbols | u16 encoder threads (0 on cuda) | u8 len + encoder arithmetic
    | u32 payload length | payload | u32 CRC-32 of every byte before it

    payload = u32 len + z string | y string

Learned codecs fail silently: a stream decoded by different weights, or with float arithmetic other than
the encoder's, decodes without error into a wrong image. The fingerprint (CRC-32 of the model's
parameters) and the device kind refuse the first and the coarsest case of the second up front. Finer
differences of arithmetic (another CPU vector ISA, another intra-op thread count, another GPU) show only
while decoding, so the file also carries a CRC-32 of the y symbols the encoder coded: a decoder that ends
with other symbols refuses the file, naming both arithmetics ("encoder arithmetic" is a description, e.g.
"cpu AVX512, torch 2.14.1"). On the CPU a decoder runs with the encoder's thread count (up to a cap), since
oneDNN's kernels (and their float sums) depend on it. Version 3 files are coded with CDF tables built in float64 on
the CPU (the same wherever the model ran); versions 1 and 2 were coded with CompressAI's float32 tables and decode with
those (`HPCM.release_tables`). Version 1 files (no symbol CRC, threads or arithmetic) still decode, unchecked. Every
malformed input raises `ValueError`.
"""

from __future__ import annotations

import os
import struct
import zlib
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from PIL import Image

from ..data.images import image_to_tensor, tensor_to_image
from ..models import HPCM

MAGIC = b"HPCM"
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
MAX_THREADS = 4096  # a larger thread count in a header is damage, not a machine
DECODE_THREAD_FLOOR = 256  # a decoder follows a file's thread count up to max(its CPUs, this), see _decode_threads
DEVICE_KINDS = ("cpu", "cuda")
DEFAULT_MAX_PIXELS = 1 << 26  # 67.1 Mpx (8192×8192): a decode refuses a larger declared size before allocating
_GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


@dataclass(frozen=True)
class Header:
    """What a file says about itself."""

    preset: str
    width: int
    height: int
    mode: str
    device: str
    fingerprint: int
    symbol_crc: int | None = None  # None in version 1 files: nothing to check the decode against
    threads: int | None = None  # the encoder's intra-op threads (CPU files of version 2)
    arithmetic: str | None = None  # where the encoder computed, for messages: "cpu AVX512, torch 2.14.1"
    version: int = FORMAT_VERSION  # the file format, which also says which CDF tables coded it


def _device_of(model: HPCM) -> str:
    kind = next(model.parameters()).device.type
    if kind not in DEVICE_KINDS:
        raise ValueError(f"the image codec runs on {DEVICE_KINDS}, not on {kind!r}")
    return kind


def arithmetic_of(model: HPCM) -> str:
    """Where `model` computes, as a file records it: the CPU's vector ISA or the GPU's name, and the torch version
    (its oneDNN or cuDNN kernels decide the float sums)."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        where = f"cuda {torch.cuda.get_device_name(device)}"
    else:
        where = f"cpu {torch.backends.cpu.get_cpu_capability()}"
    return f"{where}, torch {torch.__version__}".encode("ascii", "replace")[:255].decode("ascii")


@contextmanager
def _intra_op_threads(count: int | None):
    """Run the block with `count` intra-op threads (None: as set), restoring the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(count or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _pack_str(text: str) -> bytes:
    raw = text.encode("ascii")
    return struct.pack(">B", len(raw)) + raw


def encode(model: HPCM, image: Image.Image | torch.Tensor) -> bytes:
    """A PIL image (any mode) or an RGB tensor [3, H, W] in [0, 1] -> the bytes of one file."""
    if isinstance(image, Image.Image):
        mode, x = image.mode, image_to_tensor(image)
    else:
        mode, x = "RGB", image
    if x.dim() != 3 or x.shape[0] != 3 or min(x.shape[1:]) < 1:
        raise ValueError(f"expected an image tensor [3, H, W], got {tuple(x.shape)}")
    device = _device_of(model)
    threads = torch.get_num_threads() if device == "cpu" else 0
    if threads > MAX_THREADS:
        raise ValueError(f"{threads} intra-op threads: a file records at most {MAX_THREADS}; set fewer to encode")
    encoded = model.compress(x.unsqueeze(0).to(next(model.parameters()).device))  # cuda:N, not just "cuda"
    (y_string,), (z_string,) = encoded["strings"]
    payload = struct.pack(">I", len(z_string)) + z_string + y_string
    height, width = x.shape[1:]
    header = (
        MAGIC
        + struct.pack(">B", FORMAT_VERSION)
        + _pack_str(model.preset)
        + struct.pack(">II", width, height)
        + _pack_str(mode)
        + struct.pack(">BI", DEVICE_KINDS.index(device), model.fingerprint())
        + struct.pack(">IH", encoded["symbol_crc"][0], threads)
        + _pack_str(arithmetic_of(model))
        + struct.pack(">I", len(payload))
    )
    body = header + payload
    return body + struct.pack(">I", zlib.crc32(body))


class _Reader:
    """Bounds-checked reads from a byte string; running off the end is a `ValueError`."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"truncated HPCM file: {what} needs {n} bytes, {len(self.data) - self.pos} left")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def text(self, what: str) -> str:
        (n,) = self.unpack(">B", what)
        raw = self.take(n, what)
        if any(byte < 0x20 or byte > 0x7E for byte in raw):
            raise ValueError(f"corrupt HPCM file: {what} is not printable ASCII")
        return raw.decode("ascii")


def read_header(data: bytes) -> tuple[Header, bytes, bytes]:
    """Parse and check a file: (header, z string, y string). Anything malformed -> ValueError."""
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if data[: len(MAGIC)] != MAGIC:
        raise ValueError("not an HPCM file (bad magic)")
    if len(data) < len(MAGIC) + 4 or zlib.crc32(data[:-4]) != struct.unpack(">I", data[-4:])[0]:
        raise ValueError("corrupt or truncated HPCM file: CRC mismatch")
    reader = _Reader(data[:-4])
    reader.take(len(MAGIC), "magic")  # checked above
    (version,) = reader.unpack(">B", "format version")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"HPCM file format version {version} is not supported (this build reads {READABLE_VERSIONS})")
    preset = reader.text("preset")
    width, height = reader.unpack(">II", "image size")
    mode = reader.text("image mode")
    device_code, fingerprint = reader.unpack(">BI", "device and fingerprint")
    symbol_crc = threads = arithmetic = None
    if version >= 2:
        symbol_crc, threads = reader.unpack(">IH", "symbol CRC and threads")
        arithmetic = reader.text("encoder arithmetic")
    (length,) = reader.unpack(">I", "payload length")
    payload = reader.take(length, "payload")
    if reader.pos != len(reader.data):
        raise ValueError(f"corrupt HPCM file: {len(reader.data) - reader.pos} unexpected bytes after the payload")
    if device_code >= len(DEVICE_KINDS) or width < 1 or height < 1 or width * height > 1 << 28:
        raise ValueError("corrupt HPCM file: impossible header values")
    device = DEVICE_KINDS[device_code]
    if threads is not None and (threads > MAX_THREADS or (threads == 0) != (device == "cuda")):
        raise ValueError("corrupt HPCM file: impossible thread count")
    (z_length,) = struct.unpack(">I", payload[:4]) if len(payload) >= 4 else (None,)
    if z_length is None or z_length > len(payload) - 4:
        raise ValueError("corrupt HPCM file: bad z-string length")
    header = Header(preset, width, height, mode, device, fingerprint, symbol_crc, threads, arithmetic, version)
    return header, payload[4 : 4 + z_length], payload[4 + z_length :]


def coded_bytes(data: bytes) -> int:
    """Bytes of the entropy-coded strings (z and y) in a file: what CompressAI's eval_model and the official
    HPCM test count as the rate. The file adds ~75 bytes (header, lengths, CRCs) on top."""
    _, z_string, y_string = read_header(data)
    return len(z_string) + len(y_string)


def check_size(header: Header, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse (ValueError) a file whose declared image has more than ``max_pixels`` pixels.

    Decoding allocates by the size the header declares, not by the payload (a forged 2^28-pixel header needs tens
    of GB), so this bound is checked before anything is allocated.
    """
    pixels = header.width * header.height
    if pixels > max_pixels:
        raise ValueError(f"the file declares a {header.width}×{header.height} image ({pixels / 1e6:.1f} Mpx), more "
                         f"than max_pixels {max_pixels} ({max_pixels / 1e6:.1f} Mpx) allows: raise it to decode")


def decode_tensor(data: bytes, model: HPCM, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[torch.Tensor, Header]:
    """File bytes -> (RGB tensor [3, H, W] in [0, 1], header); refuses files the model cannot decode exactly and
    files declaring more than ``max_pixels`` pixels (`check_size`).

    A CPU file of version 2 is decoded with the encoder's intra-op thread count (`_decode_threads`; set with
    `torch.set_num_threads` for the decode and restored after it), then its symbols are checked against the file's.
    """
    header, z_string, y_string = read_header(data)
    check_size(header, max_pixels)
    if header.preset != model.preset:
        raise ValueError(f"file was encoded with preset {header.preset!r}; this model is {model.preset!r}")
    if header.fingerprint != model.fingerprint():
        raise ValueError("file was encoded with different model weights (fingerprint mismatch)")
    device = _device_of(model)
    if header.device != device:
        raise ValueError(
            f"file was encoded on {header.device} and this model runs on {device}: learned entropy coding "
            "is only exact on the same kind of device; decode it there"
        )
    threads = _decode_threads(header.threads) if device == "cpu" and header.threads else None
    with _intra_op_threads(threads), model.release_tables(header.version):
        decoded = model.decompress([[y_string], [z_string]], (header.height, header.width))
    if header.symbol_crc is not None and decoded["symbol_crc"][0] != header.symbol_crc:
        raise ValueError(_mismatch_message(header, arithmetic_of(model), threads))
    return decoded["x_hat"][0], header


def _decode_threads(recorded: int) -> int:
    """Threads to decode a CPU file with: the encoder's count, up to max(this machine's CPUs, 256).

    oneDNN's float sums depend on the thread count, so matching it keeps the decode exact; the cap keeps a file from
    making a decoder start thousands of threads (another count may change the sums, which the symbol CRC catches).
    """
    return min(recorded, max(os.cpu_count() or 1, DECODE_THREAD_FLOOR))


def _mismatch_message(header: Header, arithmetic: str, threads: int | None) -> str:
    """Why a decode that ended with other symbols than the file's is refused, naming both arithmetics."""
    encoder = header.arithmetic + (f", {header.threads} threads" if header.threads else "")
    decoder = arithmetic + (f", {threads} threads" if threads else "")
    if encoder != decoder:
        cause = (
            f"it was encoded with {encoder} and decoded with {decoder}; learned entropy coding is exact only with "
            "the encoder's float arithmetic, so decode it on a machine like the encoder's"
        )
    else:
        cause = (
            f"encoder and decoder both computed with {encoder}, so the file is damaged or forged, or was encoded "
            "with a setting it does not record (oneDNN's ISA limit, channels-last convolutions, TF32)"
        )
    return f"file decodes to other symbols than were encoded (symbol CRC mismatch): {cause}"


def decode(data: bytes, model: HPCM, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """File bytes -> PIL image (8-bit; grayscale originals come back as "L", everything else as "RGB"); see
    `decode_tensor` for what is refused."""
    x, header = decode_tensor(data, model, max_pixels)
    return tensor_to_image(x, "L" if header.mode in _GRAYSCALE_MODES else "RGB")


__all__ = ["DEFAULT_MAX_PIXELS", "Header", "check_size", "coded_bytes", "decode", "decode_tensor", "encode",
           "read_header"]

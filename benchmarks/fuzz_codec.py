"""Fuzz campaign of the image file format: no damaged file may crash, hang or decode to a wrong image.

    python benchmarks/fuzz_codec.py --count 10000 --resealed 1000 --forged 2000 -o fuzz_codec.json

The reference file is a 64×64 noise image coded by the tiny preset with seeded weights, the last
convolution of the analysis transform scaled ×30 (untrained weights give all-zero latents and a
59-byte file; scaled, the file carries a payload of about 1 kB). Input i of a campaign is a mutation
drawn from a generator seeded by (--seed, campaign, i), so any input can be rebuilt from the JSON.

- ``damaged`` (--count): bytes flipped, the file truncated, extended, spliced, cut, zeroed over a
  range, a chunk repeated, or replaced by random bytes (half of them after the magic). The contract:
  every input is a ``ValueError`` within --deadline seconds, or decodes to exactly the original image.
- ``resealed`` (--resealed): the entropy-coded payload is damaged (bytes flipped, z or y string cut or
  extended) and the length fields and CRC are rewritten to match, as a forger would: these reach the
  rANS decoder. What this campaign checks is that the decoder survives garbage: no crash, no hang. Since
  format version 2 the file's CRC of the y symbols refuses most of them after decoding; a forger who
  also recomputes that CRC (which takes the weights) still gets another image.
- ``forged`` (--forged): one header field forged and the CRC rewritten: the image size (above the decoder's
  ``max_pixels`` bound but within the 2^28 pixels a header may declare; small, up to 512 per side; or any
  u32 pair), the format version, device, fingerprint, thread count, symbol CRC, payload length, or a text
  field (preset, mode, arithmetic) replaced by random bytes. The contract: no crash, no hang, and every
  size above ``max_pixels`` refused (``ValueError``) within --deadline seconds, before anything is allocated.

Each input is decoded in a worker process. A worker that dies (native crash) is counted as a crash
and restarted; one that does not answer within --hang-timeout seconds is a hang, killed and
restarted. Any exception other than ``ValueError`` is a crash too.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import re
import struct
import time
import zlib
from collections import Counter

from _common import provenance, write_json

DAMAGES = ("flip", "truncate", "extend", "splice", "cut", "zero", "repeat", "random")
FORGERIES = ("flip_payload", "cut_y", "extend_y", "cut_z", "extend_z")
HEADER_FORGERIES = ("size_over_bound", "size_small", "size_any", "version", "device", "fingerprint", "threads",
                    "symbol_crc", "payload_length", "preset", "mode", "arithmetic")
_SHOWN_MESSAGES = 12


# -- the worker: owns the model and decodes ---------------------------------------------------------------


def _reference():
    """(tiny model ready to code, its file for a seeded 64×64 noise image, that file's decoded image)."""
    import torch

    from lit_hpcm import codec
    from lit_hpcm.models import HPCM

    torch.manual_seed(0)
    model = HPCM("tiny").eval()
    last_conv = [m for m in model.g_a.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last_conv.weight.mul_(30.0)
    model.update()
    original = codec.encode(model, torch.rand(3, 64, 64))
    return model, original, codec.decode_tensor(original, model)[0]


def _worker(connection) -> None:
    """Answer every input with (outcome, seconds, detail); the first message sent is the reference file."""
    import torch

    from lit_hpcm import codec

    torch.set_num_threads(1)
    model, original, expected = _reference()
    connection.send(original)
    while True:
        blob = connection.recv()
        start = time.perf_counter()
        try:
            decoded, _ = codec.decode_tensor(blob, model)
            outcome = "exact" if decoded.shape == expected.shape and torch.equal(decoded, expected) else "different"
            detail = ""
        except ValueError as err:
            outcome, detail = "value_error", str(err)
        except Exception as err:  # noqa: BLE001 - anything but ValueError breaks the contract
            outcome, detail = "other_exception", f"{type(err).__name__}: {err}"
        connection.send((outcome, time.perf_counter() - start, detail[:160]))


class Decoder:
    """A worker process behind a pipe, restarted after a crash or a hang."""

    def __init__(self, hang_timeout: float):
        self.hang_timeout = hang_timeout
        self.context = mp.get_context("spawn")
        self.original = self._start()

    def _start(self) -> bytes:
        self.connection, child = self.context.Pipe()
        self.process = self.context.Process(target=_worker, args=(child,), daemon=True)
        self.process.start()
        child.close()
        return self.connection.recv()

    def _restart(self) -> None:
        self.process.kill()
        self.process.join()
        self._start()

    def decode(self, blob: bytes) -> tuple[str, float, str]:
        self.connection.send(blob)
        try:
            if self.connection.poll(self.hang_timeout):
                return self.connection.recv()
        except EOFError:
            self._restart()
            return "crash", float("nan"), f"worker died (exit code {self.process.exitcode})"
        self._restart()
        return "hang", self.hang_timeout, f"no answer within {self.hang_timeout} s"

    def close(self) -> None:
        self.process.kill()
        self.process.join()


# -- inputs ----------------------------------------------------------------------------------------------------


def _bytes(rng: random.Random, low: int, high: int) -> bytes:
    return rng.randbytes(rng.randint(low, high))


def damaged(original: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One damaged copy of ``original``: (kind, bytes)."""
    kind = rng.choice(DAMAGES)
    blob = bytearray(original)
    n = len(blob)
    a, b = sorted(rng.randrange(n + 1) for _ in range(2))
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            blob[rng.randrange(n)] ^= rng.randint(1, 255)
    elif kind == "truncate":
        blob = blob[: rng.randrange(n)]
    elif kind == "extend":
        blob += _bytes(rng, 1, 64)
    elif kind == "splice":
        blob[a:a] = _bytes(rng, 1, 32)
    elif kind == "cut":
        del blob[a : max(b, a + 1)]
    elif kind == "zero":
        blob[a : max(b, a + 1)] = bytes(max(b, a + 1) - a)
    elif kind == "repeat":
        blob[b:b] = blob[a:b] or blob[:1]
    else:
        blob = bytearray((original[:4] if rng.random() < 0.5 else b"") + _bytes(rng, 0, 2 * n))
    return kind, bytes(blob)


def _payload_bounds(original: bytes) -> tuple[int, int]:
    """(offset of the u32 payload length, offset of the payload) in ``original``: the payload (z length, z, y)
    ends just before the file's CRC, whatever the header in front of it holds."""
    from lit_hpcm import codec

    _, z_string, y_string = codec.read_header(original)
    payload_at = len(original) - 4 - (4 + len(z_string) + len(y_string))
    return payload_at - 4, payload_at


def resealed(original: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One copy with a damaged payload, length fields and CRC rewritten to match: (kind, bytes)."""
    length_at, payload_at = _payload_bounds(original)
    header, payload = original[:length_at], original[payload_at:-4]
    (z_length,) = struct.unpack(">I", payload[:4])
    z, y = bytearray(payload[4 : 4 + z_length]), bytearray(payload[4 + z_length :])
    kind = rng.choice(FORGERIES)
    if kind == "flip_payload":
        target = z if (rng.random() < 0.3 and z) or not y else y
        for _ in range(rng.randint(1, 4)):
            target[rng.randrange(len(target))] ^= rng.randint(1, 255)
    elif kind == "cut_y":
        y = y[: rng.randrange(len(y) + 1)]
    elif kind == "extend_y":
        y += _bytes(rng, 1, 64)
    elif kind == "cut_z":
        z = z[: rng.randrange(len(z) + 1)]
    else:
        z += _bytes(rng, 1, 64)
    payload = struct.pack(">I", len(z)) + bytes(z) + bytes(y)
    body = header + struct.pack(">I", len(payload)) + payload
    return kind, body + struct.pack(">I", zlib.crc32(body))


def _header_fields(original: bytes) -> dict[str, tuple[int, str]]:
    """Offset and struct format ("text": u8 length + bytes) of each header field of ``original`` (format 2 and 3
    layout, see lit_hpcm.codec), spelled out independently of the codec's parser."""
    fields, pos = {"version": (len(b"HPCM"), ">B")}, len(b"HPCM") + 1
    for name, fmt in (("preset", "text"), ("width", ">I"), ("height", ">I"), ("mode", "text"), ("device", ">B"),
                      ("fingerprint", ">I"), ("symbol_crc", ">I"), ("threads", ">H"), ("arithmetic", "text"),
                      ("payload_length", ">I")):
        fields[name] = (pos, fmt)
        pos += 1 + original[pos] if fmt == "text" else struct.calcsize(fmt)
    return fields


def _forged_size(kind: str, rng: random.Random) -> tuple[int, int]:
    """(width, height) for a size forgery: over the decode bound (within 2^28 pixels), small, or any u32 pair."""
    from lit_hpcm.codec import DEFAULT_MAX_PIXELS

    if kind == "size_over_bound":
        width = rng.randint(DEFAULT_MAX_PIXELS // (1 << 14) + 1, 1 << 14)
        return width, rng.randint(DEFAULT_MAX_PIXELS // width + 1, (1 << 28) // width)
    if kind == "size_small":
        return rng.randint(1, 512), rng.randint(1, 512)
    return rng.getrandbits(32), rng.getrandbits(32)


def forged_header(original: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One copy with one header field forged and the CRC rewritten to match: (kind, bytes)."""
    fields = _header_fields(original)
    kind = rng.choice(HEADER_FORGERIES)
    body = bytearray(original[:-4])
    if kind.startswith("size_"):
        at = fields["width"][0]
        body[at : at + 8] = struct.pack(">II", *_forged_size(kind, rng))
    elif fields[kind][1] == "text":
        at = fields[kind][0]
        body[at : at + 1 + body[at]] = bytes([n := rng.randint(0, 40)]) + rng.randbytes(n)
    else:
        at, fmt = fields[kind]
        body[at : at + struct.calcsize(fmt)] = rng.randbytes(struct.calcsize(fmt))
    return kind, bytes(body) + struct.pack(">I", zlib.crc32(body))


# -- campaigns -------------------------------------------------------------------------------------------------


def campaign(name: str, count: int, make, decoder: Decoder, seed: int, deadline: float) -> dict:
    """Decode ``count`` inputs from ``make(original, rng)``; counts per outcome and kind, timings, examples."""
    outcomes, by_kind, messages, failures, slowest = Counter(), {}, Counter(), [], {}
    started = time.perf_counter()
    for index in range(count):
        kind, blob = make(decoder.original, random.Random(f"{seed}/{name}/{index}"))
        outcome, seconds, detail = decoder.decode(blob)
        outcomes[outcome] += 1
        by_kind.setdefault(kind, Counter())[outcome] += 1
        if outcome == "value_error":
            messages[re.sub(r"\d+(\.\d+)?", "N", detail.split(":")[0])] += 1  # numbers aside: one key per message
        if seconds == seconds:  # not NaN
            slowest[kind] = max(slowest.get(kind, 0.0), seconds)
            outcomes["over_deadline"] += seconds > deadline
        if outcome in ("crash", "hang", "other_exception") and len(failures) < 20:
            failures.append({"index": index, "kind": kind, "outcome": outcome, "detail": detail})
    return {
        "inputs": count,
        "value_error": outcomes["value_error"],
        "decoded_exact": outcomes["exact"],
        "decoded_different": outcomes["different"],
        "crashes": outcomes["crash"] + outcomes["other_exception"],
        "hangs": outcomes["hang"],
        "over_deadline": outcomes["over_deadline"],
        "slowest_seconds": round(max(slowest.values(), default=0.0), 4),
        "slowest_seconds_by_kind": {k: round(v, 4) for k, v in sorted(slowest.items())},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "value_error_messages": dict(messages.most_common(_SHOWN_MESSAGES)),
        "failures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000, help="damaged files")
    parser.add_argument("--resealed", type=int, default=1_000, help="forged files with a damaged payload")
    parser.add_argument("--forged", type=int, default=2_000, help="files with one forged header field")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deadline", type=float, default=1.0, help="seconds a damaged file may take to refuse")
    parser.add_argument("--hang-timeout", type=float, default=30.0, help="seconds before a worker counts as hung")
    parser.add_argument("-o", "--output", default="fuzz_codec.json")
    args = parser.parse_args()

    decoder = Decoder(args.hang_timeout)
    report = {
        "description": "lit_hpcm.codec fuzz campaign (benchmarks/fuzz_codec.py): tiny preset, 64x64 image",
        "provenance": provenance(),
        "settings": {"seed": args.seed, "deadline_s": args.deadline, "hang_timeout_s": args.hang_timeout,
                     "reference_bytes": len(decoder.original)},
    }
    try:
        damaged_run = campaign("damaged", args.count, damaged, decoder, args.seed, args.deadline)
        report["damaged"] = damaged_run
        report["damaged"]["contract_holds"] = (
            damaged_run["value_error"] + damaged_run["decoded_exact"] == damaged_run["inputs"]
            and damaged_run["over_deadline"] == 0
        )
        write_json(args.output, report)
        report["resealed"] = campaign("resealed", args.resealed, resealed, decoder, args.seed, args.deadline)
        write_json(args.output, report)
        forged = campaign("forged", args.forged, forged_header, decoder, args.seed, args.deadline)
        over_bound = forged["by_kind"].get("size_over_bound", {})
        forged["sizes_over_bound_refused"] = over_bound.get("value_error", 0) == sum(over_bound.values())
        forged["contract_holds"] = (forged["crashes"] == forged["hangs"] == 0 and forged["sizes_over_bound_refused"]
                                    and forged["slowest_seconds_by_kind"].get("size_over_bound", 0) <= args.deadline)
        report["forged"] = forged
        write_json(args.output, report)
    finally:
        decoder.close()
    for name in ("damaged", "resealed", "forged"):
        run = report[name]
        print(f"{name}: {run['inputs']} inputs, {run['value_error']} ValueError, {run['decoded_exact']} exact, "
              f"{run['decoded_different']} different, {run['crashes']} crashes, {run['hangs']} hangs, "
              f"{run['over_deadline']} over {args.deadline} s (slowest {run['slowest_seconds']} s)")
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()

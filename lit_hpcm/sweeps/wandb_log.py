"""Reading an offline W&B run's ``run-*.wandb`` transaction log: all an offline run of the current W&B client
leaves on disk (no ``config.yaml`` or ``wandb-summary.json``). The config and summary are replayed from it."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any, Iterator

_LOG_MAGIC = b":W&B"
_LOG_HEADER = 7  # ":W&B", 2-byte magic number, 1-byte format version
_BLOCK = 32768  # records never straddle a block boundary; a record split across blocks is chunked
_CHUNK_HEADER = struct.Struct("<IHB")  # crc32 of (type byte + payload), payload length, chunk type
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _log_payloads(data: bytes) -> Iterator[bytes]:
    """Payloads of a W&B transaction log (LevelDB-style log: 32 KiB blocks of checksummed chunks).

    Stops at the first truncated or corrupt chunk, which is where a crashed run's log ends.
    """
    pos, pending = _LOG_HEADER, b""
    while pos + _CHUNK_HEADER.size <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _CHUNK_HEADER.size:  # block trailer padding
            pos += room
            continue
        checksum, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        payload = data[pos + _CHUNK_HEADER.size : pos + _CHUNK_HEADER.size + length]
        if len(payload) < length or zlib.crc32(bytes([kind]) + payload) != checksum:
            return
        pos += _CHUNK_HEADER.size + length
        if kind == _FULL:
            yield payload
        elif kind == _FIRST:
            pending = payload
        elif kind == _MIDDLE:
            pending += payload
        elif kind == _LAST:
            yield pending + payload
            pending = b""


def _apply(state: dict, record: Any) -> None:
    """Apply a W&B config or summary record's updates and removals to ``state``."""
    for item in record.update:
        state[item.key or ".".join(item.nested_key)] = json.loads(item.value_json)
    for item in record.remove:
        state.pop(item.key or ".".join(item.nested_key), None)


def read_transaction_log(path: Path) -> tuple[dict, dict]:
    """Config and summary replayed from a ``run-*.wandb`` file."""
    # Imported here: wandb is slow to import and only offline W&B runs need its record definitions.
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if not data.startswith(_LOG_MAGIC):
        raise ValueError(f"{path}: not a W&B transaction log")
    config: dict = {}
    summary: dict = {}
    for payload in _log_payloads(data):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            _apply(config, record.run.config)
        elif kind == "config":
            _apply(config, record.config)
        elif kind == "summary":
            _apply(summary, record.summary)
    return config, summary

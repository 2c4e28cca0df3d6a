"""Images to file bytes and back (`bitstream`: the versioned, checked file format) on top of HPCM's coding, and
the import of CompressAI's coding core alone (`compressai_core`).

The names load `bitstream` (and with it torch, HPCM and CompressAI's entropy models) on first use, so the CLI can
import `compressai_core` and register the core-only CompressAI package before anything imports CompressAI.
"""

from __future__ import annotations

from .. import lazy_exports

_WHERE = {name: "bitstream" for name in (
    "DEFAULT_MAX_PIXELS", "FORMAT_VERSION", "MAGIC", "READABLE_VERSIONS", "Header", "arithmetic_of", "check_size",
    "coded_bytes", "decode", "decode_tensor", "encode", "read_header")}
__all__ = sorted(_WHERE)
__getattr__ = lazy_exports(__name__, _WHERE)

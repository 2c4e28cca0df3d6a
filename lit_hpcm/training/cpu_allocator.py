"""Keep freed CPU memory in the process for reuse, instead of handing it back to the kernel at every free.

PyTorch's CPU allocator asks the C library for each tensor and frees it when the tensor dies. glibc serves large
blocks (above 128 KiB, growing to at most 32 MiB) with a fresh `mmap` and unmaps them on `free`, so every step of
HPCM — whose activations are tens to hundreds of MiB each — page-faults all of its memory in again, each fault a
trip into the kernel. With the mmap threshold raised to 1 GiB and trimming off, freed blocks stay in the heap and
the next step reuses them already mapped (see docs/PERFORMANCE.md). The price: the process keeps the memory of
its peak until it exits.

Applied where it pays: by `lit-hpcm`'s tool commands (compress, decompress, eval, ...) at start, and by
`LitHPCM.setup` when the trainer runs on the CPU; not in GPU ranks, where each process would only keep its
host-memory peak. Set `LIT_HPCM_KEEP_FREED_MEMORY=0` to leave the C library's defaults.
"""

from __future__ import annotations

import ctypes
import os

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 1 << 30
_TRIM_THRESHOLD_BYTES = (1 << 31) - 1
OPT_OUT_VARIABLE = "LIT_HPCM_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Apply the setting to this process (and the processes it forks later). Returns whether it was applied:
    False under `LIT_HPCM_KEEP_FREED_MEMORY=0` or when the C library is not glibc (macOS, musl, Windows)."""
    if os.environ.get(OPT_OUT_VARIABLE, "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # only glibc has it, and only glibc takes these mallopt parameters
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mmap_set = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
    return bool(mmap_set) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))

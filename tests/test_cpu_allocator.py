"""The CPU allocator setting of `lit-hpcm`: large tensors come from the heap and stay there once freed.

Each check runs in a fresh interpreter, so this test process keeps the C library's defaults.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from lit_hpcm.training import cpu_allocator

# Allocates a 64 MiB tensor and reports glibc's own accounting (mallinfo2) while it lives and after it is freed.
PROBE = """
import ctypes, json, sys, torch
from lit_hpcm.training.cpu_allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
applied = keep_freed_memory()
tensor = torch.ones(16 << 20)  # 64 MiB
alive = mallinfo2()
del tensor
freed = mallinfo2()
print(json.dumps({"applied": applied, "mmapped_alive": alive.hblkhd, "heap_freed": freed.arena}))
"""
MIB_64 = 64 << 20
needs_glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                                 reason="the setting is glibc's; other C libraries keep their own policy")


def _probe(opt_out: bool) -> dict:
    env = {cpu_allocator.OPT_OUT_VARIABLE: "0"} if opt_out else {}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@needs_glibc
def test_large_tensors_come_from_the_heap_and_stay_there_after_free():
    kept = _probe(opt_out=False)
    assert kept["applied"] is True
    assert kept["mmapped_alive"] < MIB_64  # served from the heap, not a fresh mapping
    assert kept["heap_freed"] >= MIB_64  # freed, but kept mapped for the next step


@needs_glibc
def test_opt_out_leaves_the_c_library_defaults():
    default = _probe(opt_out=True)
    assert default["applied"] is False
    assert default["mmapped_alive"] >= MIB_64  # glibc's default: a block this large gets its own mapping


def test_the_command_line_applies_it_first(monkeypatch):
    from lit_hpcm import cli

    calls = []
    monkeypatch.setattr(cpu_allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert calls == [1]

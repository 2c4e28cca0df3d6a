"""Files encoded with one CPU arithmetic and decoded with another: exact, or refused — never a wrong image.

oneDNN picks its convolution kernels by the CPU's vector ISA and by the intra-op thread count, and their float sums
differ in the last bits. A learned entropy decoder that rebuilds a scale slightly differently can pick the
neighbouring CDF and decode other symbols, without any error. This script encodes photos here, then decodes each
file in fresh processes under other arithmetic — oneDNN and ATen held to AVX2 (ONEDNN_MAX_CPU_ISA,
ATEN_CPU_CAPABILITY), one thread (OMP_NUM_THREADS=1) — twice: through `lit_hpcm.codec.decode_tensor`, which adopts
the file's thread count and checks its symbol CRC (expected: exact, or a ValueError), and through the bare
`model.decompress` with the process's own settings (what a format without those guards hands back).

Untrained weights rarely show the failure (their scales sit far from the CDF bucket edges); pass a trained
checkpoint, for example the demo trained with Adam:

    lit-hpcm fit -c configs/demo.yaml --model.optimizer adam --model.balancing none --model.lmbda 0.0483 \\
        --trainer.default_root_dir adam_demo
    python benchmarks/cpu_arithmetic.py --ckpt adam_demo/checkpoints/last.ckpt -o cpu_arithmetic.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from cross_device import bare_decode, compared, photo, to_8bit

from _common import provenance, write_json
from lit_hpcm import codec
from lit_hpcm.models.weights import load_model

PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")
VARIANTS = {
    "same": {},
    "one_thread": {"OMP_NUM_THREADS": "1"},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
}


def outcome(decoded: torch.Tensor, right: torch.Tensor) -> str:
    """8-bit decode against the encoder-side one: exact, float rounding (no pixel off by more than one level, what
    the synthesis transform's own arithmetic gives once the symbols are the same), or a wrong image."""
    worst = (decoded.int() - right.int()).abs().max().item()
    if worst > 1:
        return f"WRONG IMAGE (off by {worst})"
    return "exact" if worst == 0 else "rounding: pixels within 1 level"


def decode_all(ckpt: str, folder: Path) -> dict:
    """Decode every <photo>.hpcm in `folder` against <photo>.pt (the encoder-side 8-bit decode): one row each."""
    model = load_model(ckpt)
    rows = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    for name in PHOTOS:
        data, right = (folder / f"{name}.hpcm").read_bytes(), torch.load(folder / f"{name}.pt")
        try:
            guarded = outcome(to_8bit(codec.decode_tensor(data, model)[0]), right)
        except ValueError as error:
            guarded = f"refused: {error}"
        bare = to_8bit(bare_decode(model, data))
        rows[name] = {"codec_decode": guarded, "bare_decode": outcome(bare, right), **compared(bare, right)}
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="trained weights (any file `lit-hpcm compress --ckpt` takes)")
    parser.add_argument("-o", "--output", default="cpu_arithmetic.json")
    parser.add_argument("--decode-folder", type=Path, help=argparse.SUPPRESS)  # a worker: decode, print JSON
    args = parser.parse_args(argv)
    if args.decode_folder:
        print(json.dumps(decode_all(args.ckpt, args.decode_folder)))
        return
    model = load_model(args.ckpt)
    report = {"benchmark": "cpu_arithmetic", "provenance": provenance(), "ckpt": args.ckpt, "files": {}, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in PHOTOS:
            data = codec.encode(model, photo(name))
            (folder / f"{name}.hpcm").write_bytes(data)
            torch.save(to_8bit(codec.decode_tensor(data, model)[0]), folder / f"{name}.pt")
            report["files"][name] = {"bytes": len(data), "encoder": codec.read_header(data)[0].arithmetic}
        for variant, env in VARIANTS.items():
            worker = subprocess.run(
                [sys.executable, __file__, "--ckpt", args.ckpt, "--decode-folder", tmp],
                env=os.environ | env, capture_output=True, text=True, check=True,
            )
            report["variants"][variant] = {"env": env, **json.loads(worker.stdout.splitlines()[-1])}
            write_json(args.output, report)
            print(variant, json.dumps(report["variants"][variant])[:2000], flush=True)
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()

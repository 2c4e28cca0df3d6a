"""Start-up time of the `lit-hpcm` command line: `--help` of the top level and of two tools, and a whole
`lit-hpcm compress` of a 64×64 image with tiny-preset weights (nearly all of it imports and loading).

Each command runs in a fresh process (what a user waits for), `--repeats` times, alternating; median and
all times are written as JSON.

    python benchmarks/cli_startup.py -o benchmarks/results/cli_startup.json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import median, provenance, write_json

HELP_COMMANDS = {
    "lit-hpcm --help": ["--help"],
    "lit-hpcm compress --help": ["compress", "--help"],
    "lit-hpcm rd-plot --help": ["rd-plot", "--help"],
}


def compress_command(folder: Path) -> list[str]:
    """Arguments of a tiny-preset compress of a 64×64 image, its inputs written into `folder`."""
    import torch
    from PIL import Image

    from lit_hpcm.models import HPCM
    from lit_hpcm.models.weights import save_weights

    torch.manual_seed(0)
    weights = save_weights(HPCM("tiny").state_dict(), "tiny", folder / "tiny.pt")
    Image.new("RGB", (64, 64), (120, 60, 200)).save(folder / "image.png")
    return ["compress", str(folder / "image.png"), "-o", str(folder / "image.hpcm"), "--force", "--ckpt", str(weights)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("-o", "--output", default="cli_startup.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cli_startup_") as folder:
        commands = {**HELP_COMMANDS, "lit-hpcm compress (tiny, 64×64)": compress_command(Path(folder))}
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, argv in commands.items():
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "lit_hpcm.cli", *argv], check=True, capture_output=True)
                times[name].append(time.perf_counter() - start)
    payload = {"benchmark": "cli_startup", "provenance": provenance(),
               "results": {name: {"median_s": median(values), "times_s": values} for name, values in times.items()}}
    write_json(args.output, payload)
    for name, row in payload["results"].items():
        print(f"{name:32s} {row['median_s']:.2f} s")


if __name__ == "__main__":
    main()

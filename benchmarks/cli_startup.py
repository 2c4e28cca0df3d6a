"""Start-up time of the `lit-hpcm` command line: how long `--help` of the top level and of a tool takes.

Each command runs in a fresh process (what a user waits for), `--repeats` times, alternating; median and
all times are written as JSON.

    python benchmarks/cli_startup.py -o benchmarks/results/cli_startup.json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from _common import median, provenance, write_json

COMMANDS = {
    "lit-hpcm --help": ["--help"],
    "lit-hpcm compress --help": ["compress", "--help"],
    "lit-hpcm rd-plot --help": ["rd-plot", "--help"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("-o", "--output", default="cli_startup.json")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, argv in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "lit_hpcm.cli", *argv], check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    payload = {"benchmark": "cli_startup", "provenance": provenance(),
               "results": {name: {"median_s": median(values), "times_s": values} for name, values in times.items()}}
    write_json(args.output, payload)
    for name, row in payload["results"].items():
        print(f"{name:28s} {row['median_s']:.2f} s")


if __name__ == "__main__":
    main()

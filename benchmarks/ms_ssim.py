"""MS-SSIM per image as `test` and `eval` compute it: float64 (before, 8948f10) against float32 (now).

For each photo (the bundled evaluation photos chelsea 451×300 and rocket 640×427, and coffee 600×400) the
reconstruction is the photo's JPEG at quality 30, so the value is a realistic one; both dtypes see the
same 8-bit images. Reports the median seconds per image over --repeats calls (after one warm-up call; the
two dtypes alternate) and the difference of the two values.

    python benchmarks/ms_ssim.py --threads 1 --repeats 5 -o benchmarks/results/ms_ssim.json
"""

from __future__ import annotations

import argparse
import io

import numpy as np
import torch
from PIL import Image
from skimage import data as samples

from _common import median, provenance, time_call, write_json
from lit_hpcm.evaluation.measure import ms_ssim_8bit

PHOTOS = ("chelsea", "rocket", "coffee")
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def photo_pair(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A scikit-image photo and its JPEG (quality 30) reconstruction, both uint8 [3, H, W]."""
    photo = Image.fromarray(getattr(samples, name)()).convert("RGB")
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=30)
    to_tensor = lambda image: torch.from_numpy(np.array(image)).permute(2, 0, 1)  # noqa: E731
    return to_tensor(photo), to_tensor(Image.open(buffer).convert("RGB"))


def measure(name: str, repeats: int) -> dict:
    """One row: the photo's size, and per dtype its MS-SSIM and median seconds per call.

    The dtypes alternate within each repeat (after one warm-up call each), so a load that changes during the
    run slows both alike.
    """
    original, recon = photo_pair(name)
    row = {"photo": name, "height": original.shape[1], "width": original.shape[2]}
    times = {label: [] for label in DTYPES}
    for repeat in range(repeats):
        for label, dtype in DTYPES.items():
            times[label] += time_call(lambda dtype=dtype: ms_ssim_8bit(original, recon, dtype), torch.device("cpu"), 1,
                                      warmup=1 if repeat == 0 else 0)
    for label, dtype in DTYPES.items():
        row[label] = {"ms_ssim": ms_ssim_8bit(original, recon, dtype), "median_s": median(times[label]),
                      "times_s": times[label]}
    row["abs_difference"] = abs(row["float32"]["ms_ssim"] - row["float64"]["ms_ssim"])
    row["speedup"] = row["float64"]["median_s"] / row["float32"]["median_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1, as the tests run)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--note", default="", help="free text stored with the result (e.g. the machine's load)")
    parser.add_argument("-o", "--output", default="ms_ssim.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = {"benchmark": "ms_ssim", "provenance": provenance(), "repeats": args.repeats, "note": args.note,
              "rows": []}
    for name in PHOTOS:
        row = measure(name, args.repeats)
        report["rows"].append(row)
        write_json(args.output, report)
        print(f"{name} {row['width']}x{row['height']}: float64 {row['float64']['median_s']:.3f} s, "
              f"float32 {row['float32']['median_s']:.3f} s ({row['speedup']:.1f}x), |diff| {row['abs_difference']:.2e}")


if __name__ == "__main__":
    main()

"""The one table of measurement names: what each image's row holds (CompressAI's results-file names), which of
them `lit-hpcm test` logs and under what name, and which ones hold a curve's quality metric."""

from __future__ import annotations

# Row key -> the name `test` logs it under (None: in the results JSON only). `summarize` averages every one.
MEASURES: dict[str, str | None] = {
    "bpp": "test/bpp",             # entropy-coded strings: the literature's rate
    "bpp-file": None,              # the whole .hpcm file, header and CRC included
    "psnr-rgb": "test/psnr",
    "ms-ssim-rgb": None,
    "ms-ssim-db-rgb": None,
    "encoding_time": "test/encode_s",
    "decoding_time": "test/decode_s",
}

# Curve metric (`RDCurve.metric`) -> the row key that holds it.
QUALITY_KEYS: dict[str, str] = {"psnr": "psnr-rgb", "ms-ssim-db": "ms-ssim-db-rgb"}

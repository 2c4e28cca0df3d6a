"""R-D curves as values, and the published reference curves shipped with the package.

:class:`RDCurve` is the one curve type the evaluation tools pass around: a name, a quality metric and
matching bpp / value lists. The built-in references live in ``reference_curves.json`` next to this
module (package data); each entry records the file and commit its numbers were read from, so a
number in a BD table can always be traced back to its publication.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

METRICS = ("psnr", "ms-ssim-db")
METRIC_LABELS = {"psnr": "PSNR (dB)", "ms-ssim-db": "MS-SSIM (dB)"}

_DATA_FILE = "reference_curves.json"


@dataclass(frozen=True)
class RDCurve:
    """One rate-distortion curve: ``values[i]`` (in ``metric``) was reached at ``bpp[i]``.

    ``metric`` is ``"psnr"`` (dB) or ``"ms-ssim-db"`` (-10·log10(1 − MS-SSIM)). ``dataset`` and
    ``source`` are set for published curves and optional otherwise.
    """

    name: str
    metric: str
    bpp: tuple[float, ...]
    values: tuple[float, ...]
    dataset: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"curve {self.name!r}: unknown metric {self.metric!r}; expected one of {METRICS}")
        object.__setattr__(self, "bpp", tuple(float(b) for b in self.bpp))
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        if len(self.bpp) != len(self.values):
            raise ValueError(
                f"curve {self.name!r} has {len(self.bpp)} bpp values but {len(self.values)} {self.metric} values"
            )


@lru_cache(maxsize=1)
def _references() -> dict[str, RDCurve]:
    text = resources.files(__package__).joinpath(_DATA_FILE).read_text(encoding="utf-8")
    return {
        entry["name"]: RDCurve(
            name=entry["name"],
            metric=entry["metric"],
            bpp=entry["bpp"],
            values=entry["values"],
            dataset=entry["dataset"],
            source=entry["source"],
        )
        for entry in json.loads(text)["curves"]
    }


def list_references() -> list[str]:
    """Names of the built-in reference curves, sorted (e.g. ``hpcm-base-kodak``, ``vtm-kodak-msssim``)."""
    return sorted(_references())


def get_reference(name: str) -> RDCurve:
    """The built-in reference curve called ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return _references()[name]
    except KeyError:
        raise ValueError(
            f"unknown reference curve {name!r}; available: {', '.join(list_references())}"
        ) from None

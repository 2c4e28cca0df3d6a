"""Rate-distortion results files in the JSON layout of CompressAI's ``compressai.utils.eval_model``.

Layout (one entry per rate point in every ``results`` list)::

    {
      "name": "hpcm-base",
      "description": "...",
      "meta": {...},                        # optional, free-form (dataset, checkpoint, ...)
      "results": {
        "bpp": [...],
        "psnr-rgb": [...],                  # dB
        "ms-ssim-rgb": [...],               # linear MS-SSIM in [0, 1]
        "ms-ssim-db-rgb": [...],            # optional, -10*log10(1 - MS-SSIM)
        "encoding_time": [...], "decoding_time": [...]
      },
      "per_image": [{"point": 0, "image": "kodim01.png", "bpp": ..., ...}, ...]   # ours, optional
    }

Keeping CompressAI's key names means CompressAI's own plotting tool and its published result files
interoperate with ours. Older CompressAI files use ``psnr`` / ``ms-ssim`` without the ``-rgb`` suffix;
those are read too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from ..files import write_atomically
from .keys import QUALITY_KEYS
from .reference import METRICS, RDCurve, get_reference, list_references

# Keys holding a metric directly, in order of preference: ours, then the bare metric name other tools write.
_DIRECT_KEYS = {metric: (key, metric) for metric, key in QUALITY_KEYS.items()}
# Keys holding linear MS-SSIM, converted to dB when no direct dB key is present.
_LINEAR_MSSSIM_KEYS = ("ms-ssim-rgb", "ms-ssim")


def _validated(data: Any, origin: str) -> dict:
    """Check ``data`` has the results layout; return it unchanged. ``origin`` names it in errors."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{origin}: expected a JSON object with 'name' and 'results', got {type(data).__name__}")
    if not isinstance(data.get("name"), str):
        raise ValueError(f"{origin}: missing string field 'name'")
    results = data.get("results")
    if not isinstance(results, Mapping) or "bpp" not in results:
        raise ValueError(f"{origin}: missing object 'results' with a 'bpp' list")
    n_points = len(results["bpp"])
    for key, values in results.items():
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
            raise ValueError(f"{origin}: results[{key!r}] must be a list of numbers")
        if len(values) != n_points:
            raise ValueError(f"{origin}: results[{key!r}] has {len(values)} entries, 'bpp' has {n_points}")
    per_image = data.get("per_image", [])
    if not isinstance(per_image, list) or not all(isinstance(row, Mapping) for row in per_image):
        raise ValueError(f"{origin}: 'per_image' must be a list of objects")
    return dict(data)


def _curve_document(curve: RDCurve) -> dict:
    meta = {key: value for key, value in (("dataset", curve.dataset), ("source", curve.source)) if value}
    document = {"name": curve.name, "description": "", "results": {"bpp": list(curve.bpp)}}
    document["results"][_DIRECT_KEYS[curve.metric][0]] = list(curve.values)
    if meta:
        document["meta"] = meta
    return document


def write_results(path: str | Path, curve: RDCurve | Mapping[str, Any]) -> Path:
    """Write ``curve`` to ``path`` as a results JSON file and return the path.

    ``curve`` is either an :class:`RDCurve` (written with CompressAI's key for its metric) or a full
    results mapping in the layout above, which is validated before anything is written.
    """
    document = _curve_document(curve) if isinstance(curve, RDCurve) else _validated(curve, str(path))
    text = json.dumps(document, indent=2) + "\n"
    return write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def read_results(path: str | Path) -> dict:
    """Load and validate a results JSON file (``FileNotFoundError`` / ``ValueError`` with the path)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    return _validated(data, str(path))


def _metric_values(results: Mapping[str, list], metric: str, origin: str) -> list[float]:
    for key in _DIRECT_KEYS[metric]:
        if key in results:
            return results[key]
    if metric == "ms-ssim-db":
        for key in _LINEAR_MSSSIM_KEYS:
            if key in results:
                return [-10.0 * math.log10(1.0 - v) if v < 1.0 else math.inf for v in results[key]]
    raise ValueError(f"{origin}: no {metric} values; results has keys {', '.join(results)}")


def read_curve(source: str | Path, metric: str) -> RDCurve:
    """The ``metric`` curve of a results file, or of a built-in reference when ``source`` names one.

    ``source`` is tried as a file path first; a string that is not an existing file but is a reference
    name (see :func:`~lit_hpcm.evaluation.reference.list_references`) loads that reference, which must be
    of the requested metric. The curve is named after the file's ``name`` field.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    if not Path(source).is_file():
        if str(source) not in list_references():
            raise FileNotFoundError(
                f"{source}: no such results file, and not a reference curve name "
                f"(available: {', '.join(list_references())})"
            )
        curve = get_reference(str(source))
        if curve.metric != metric:
            raise ValueError(f"reference {curve.name!r} holds {curve.metric}, not {metric}")
        return curve
    data = read_results(source)
    meta = data.get("meta") or {}
    return RDCurve(
        name=data["name"],
        metric=metric,
        bpp=data["results"]["bpp"],
        values=_metric_values(data["results"], metric, str(source)),
        dataset=meta.get("dataset"),
        source=str(source),
    )

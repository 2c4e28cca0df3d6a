"""Bjøntegaard deltas (BD-rate, BD-PSNR) with the input checks the `bjontegaard` package leaves out.

The arithmetic is delegated to the `bjontegaard` package (same argument order: anchor rate, anchor
distortion, test rate, test distortion). What this module adds is refusing inputs for which that
arithmetic silently returns garbage or NaN: too few points, non-finite or non-positive rates, curves
whose quality does not rise with rate, and curves that do not overlap on the integration axis. Each
refusal is a ``ValueError`` that names the curve and the problem.

Integration axes: BD-rate averages the log-rate gap over the *distortion* range both curves cover;
BD-PSNR averages the quality gap over the *log-rate* range both curves cover. :func:`overlap` reports
that shared range so tables can show how much of the curves a number is based on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

METHODS = ("pchip", "cubic")

# The "cubic" method fits one degree-3 polynomial per curve, which needs at least 4 points to be
# determined; the classic Bjøntegaard setup also uses 4 rate points. The same floor applies to
# "pchip" so both methods accept and refuse the same inputs.
MIN_POINTS = 4


@dataclass(frozen=True)
class Overlap:
    """Shared interval ``[low, high]`` of two value ranges and its length relative to their union."""

    low: float
    high: float
    fraction: float


def overlap(anchor: Sequence[float], test: Sequence[float]) -> Overlap:
    """Overlap of the ranges spanned by ``anchor`` and ``test`` (fraction 0 when they are disjoint).

    The fraction is measured as the `bjontegaard` package measures it: shared length over the length
    of the union of both ranges.
    """
    a_lo, a_hi = float(np.min(anchor)), float(np.max(anchor))
    t_lo, t_hi = float(np.min(test)), float(np.max(test))
    low, high = max(a_lo, t_lo), min(a_hi, t_hi)
    union = max(a_hi, t_hi) - min(a_lo, t_lo)
    fraction = max(high - low, 0.0) / union if union > 0 else 0.0
    return Overlap(low=low, high=high, fraction=fraction)


def _checked_curve(label: str, rate: Sequence[float], dist: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Validate one R-D curve and return it sorted by rate (both arrays float64)."""
    rate_arr = np.asarray(rate, dtype=np.float64).ravel()
    dist_arr = np.asarray(dist, dtype=np.float64).ravel()
    if rate_arr.size != dist_arr.size:
        raise ValueError(f"{label} curve has {rate_arr.size} rates but {dist_arr.size} distortion values")
    if rate_arr.size < MIN_POINTS:
        raise ValueError(
            f"{label} curve has {rate_arr.size} R-D points; BD metrics need at least {MIN_POINTS} "
            "(the cubic Bjøntegaard fit is a degree-3 polynomial)"
        )
    if not np.all(np.isfinite(rate_arr)) or not np.all(rate_arr > 0):
        raise ValueError(f"{label} curve rates must be finite and positive, got {rate_arr.tolist()}")
    if not np.all(np.isfinite(dist_arr)):
        raise ValueError(f"{label} curve distortion values must be finite, got {dist_arr.tolist()}")
    order = np.argsort(rate_arr, kind="stable")
    rate_arr, dist_arr = rate_arr[order], dist_arr[order]
    for i in range(1, rate_arr.size):
        if rate_arr[i] <= rate_arr[i - 1] or dist_arr[i] <= dist_arr[i - 1]:
            raise ValueError(
                f"{label} curve is not strictly monotone: ({rate_arr[i - 1]:g}, {dist_arr[i - 1]:g}) is "
                f"followed by ({rate_arr[i]:g}, {dist_arr[i]:g}); quality must rise strictly with rate"
            )
    return rate_arr, dist_arr


def _checked_pair(anchor_rate, anchor_dist, test_rate, test_dist, method: str):
    if method not in METHODS:
        raise ValueError(f"unknown BD interpolation method {method!r}; choose one of {', '.join(METHODS)}")
    return (*_checked_curve("anchor", anchor_rate, anchor_dist), *_checked_curve("test", test_rate, test_dist))


def _require_overlap(shared: Overlap, axis: str, anchor: np.ndarray, test: np.ndarray) -> None:
    if shared.fraction <= 0:
        raise ValueError(
            f"the curves do not overlap in {axis}: anchor spans [{anchor.min():g}, {anchor.max():g}], "
            f"test spans [{test.min():g}, {test.max():g}]"
        )


def bd_rate(anchor_rate, anchor_dist, test_rate, test_dist, method: str = "pchip") -> float:
    """Average rate difference of test vs anchor at equal quality, in percent (negative: test needs fewer bits).

    Integrates over the distortion range both curves cover; raises ``ValueError`` for inputs the
    Bjøntegaard computation cannot handle (see the module docstring).
    """
    import bjontegaard  # here, not at the top: `lit-hpcm --help` reads METHODS without loading it

    a_rate, a_dist, t_rate, t_dist = _checked_pair(anchor_rate, anchor_dist, test_rate, test_dist, method)
    _require_overlap(overlap(a_dist, t_dist), "distortion", a_dist, t_dist)
    return float(
        bjontegaard.bd_rate(a_rate, a_dist, t_rate, t_dist, method, require_matching_points=False, min_overlap=0)
    )


def bd_psnr(anchor_rate, anchor_dist, test_rate, test_dist, method: str = "pchip") -> float:
    """Average quality difference of test vs anchor at equal rate, in the distortion's unit (dB for PSNR).

    Positive means the test curve is better. Integrates over the log-rate range both curves cover;
    raises ``ValueError`` like :func:`bd_rate`.
    """
    import bjontegaard

    a_rate, a_dist, t_rate, t_dist = _checked_pair(anchor_rate, anchor_dist, test_rate, test_dist, method)
    _require_overlap(overlap(np.log10(a_rate), np.log10(t_rate)), "rate", a_rate, t_rate)
    return float(
        bjontegaard.bd_psnr(a_rate, a_dist, t_rate, t_dist, method, require_matching_points=False, min_overlap=0)
    )

"""The HPCM coding schedule, as data.

y is coded in 11 steps over three scales. Each scale is a grid embedded in the full-resolution
latent: s1 = y subsampled 4×, s2 = 2×, s3 = y itself. A scale's grid is split into `parts`
interleaved cell sets (checkerboard-like patterns permuted across channel groups); the cells of a
coarser scale come first, so a scale codes only the parts the coarser scales did not cover.

Every step after the first predicts its entropy parameters with the scale's spatial prior from
[context state, y_hat so far], through its own 1×1 adaptor and channel multiplier, then folds its
prediction into the context state with the scale's attention cell. The first step uses the
hyperprior's parameters directly.

`forward`, `compress` and `decompress` all iterate over `STEPS`; nothing else encodes the order.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """One coding step.

    scale: "s1" | "s2" | "s3"; part: index of the cell set in that scale's mask list;
    context: index of the step's adaptor and channel multiplier, None for the hyperprior-only step.
    """

    scale: str
    part: int
    context: int | None


SCALES: tuple[str, ...] = ("s1", "s2", "s3")

STEPS: tuple[Step, ...] = (
    Step("s1", part=0, context=None),
    Step("s1", part=1, context=0),
    Step("s2", part=1, context=1),
    Step("s2", part=2, context=2),
    Step("s2", part=3, context=3),
    Step("s3", part=2, context=4),
    Step("s3", part=3, context=5),
    Step("s3", part=4, context=6),
    Step("s3", part=5, context=7),
    Step("s3", part=6, context=8),
    Step("s3", part=7, context=9),
)

NUM_CONTEXT_STEPS = sum(step.context is not None for step in STEPS)

# Which spatial prior serves each scale (s1 and s2 share one network, as in the official code).
PRIOR_OF_SCALE: dict[str, str] = {"s1": "s1_s2", "s2": "s1_s2", "s3": "s3"}

# Official adaptor placement: step k of a scale (counted from 0 among its context steps) uses
# official adaptor index (k - 1) mod n of that scale's list; our adaptors are stored in step order.
OFFICIAL_ADAPTOR_LISTS: dict[str, int] = {"s1": 1, "s2": 3, "s3": 6}


def official_adaptor_name(context_index: int) -> str:
    """Official state_dict prefix of the adaptor used by our context step `context_index`."""
    context_steps = [s for s in STEPS if s.context is not None]
    scale = context_steps[context_index].scale
    k = [s.context for s in context_steps if s.scale == scale].index(context_index)
    n = OFFICIAL_ADAPTOR_LISTS[scale]
    return f"y_spatial_prior_adaptor_list_{scale}.{(k - 1) % n}"

"""Import of official HPCM checkpoints (lyq133/LIC-HPCM) into our parameter names.

The official networks are the same as ours; only names differ. The mapping is written as a few
rules from our names to the official ones, so every one of our tensors names exactly one official
tensor. Official quirks stay visible here: the adaptor a step uses is the official list entry
(k − 1) mod n (see `schedule.official_adaptor_name`), and releases before `adaptive_params_list`
was registered have no channel multipliers (they were constant ones then).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch

from ..errors import CheckpointError
from ..files import problem_list, read_checkpoint
from .hpcm import HPCM
from .schedule import official_adaptor_name

# Our block member names -> the official Sequential indices inside PConvRB / DWConvRB.
_BLOCK_MEMBERS = (("spatial.conv.", "branch.0.pconv."), ("spatial.", "branch.0."), ("expand.", "branch.1."), ("project.", "branch.3."))
_ATTENTION = {"query": "conv_q", "key": "conv_k", "value": "conv_v", "out": "conv_out"}
# Official buffers we rebuild ourselves (`update()`), checked for value where it matters.
_OFFICIAL_REBUILT = ("scale_table", "quantized_cdf_z", "cdf_length_z", "offset_z", "quantized_cdf_y", "cdf_length_y", "offset_y")
_OFFICIAL_CONSTANTS = {
    "entropy_estimation.beta": 1.5,
    "entropy_estimation.scale_lower_bound.bound": 0.12,
    "entropy_estimation.likelihood_lower_bound.bound": 1e-9,
}


def _block(rest: str) -> str:
    for ours, theirs in _BLOCK_MEMBERS:
        if rest.startswith(ours):
            return theirs + rest[len(ours):]
    return rest


def official_name(name: str) -> str | None:
    """The official state_dict key of our parameter `name` (None for our entropy-model buffers)."""
    if name.startswith(("y_entropy.", "hyperprior.entropy.")):
        return None
    rules = (
        (r"(g_a|g_s|h_a|h_s)\.(\d+)\.(.+)", lambda m: f"{m[1]}.branch.{m[2]}.{_block(m[3])}"),
        (
            r"context\.priors\.(s1_s2|s3)\.(before|after)\.(\d+)\.(.+)",
            lambda m: f"y_spatial_prior_{m[1]}.branch_{1 if m[2] == 'before' else 2}.{m[3]}.{_block(m[4])}",
        ),
        (r"context\.adaptors\.(\d+)\.(.+)", lambda m: f"{official_adaptor_name(int(m[1]))}.{m[2]}"),
        (r"context\.multipliers\.(\d+)", lambda m: f"adaptive_params_list.{m[1]}"),
        (r"context\.attention\.(s\d)\.(\w+)\.(.+)", lambda m: f"attn_{m[1]}.{_ATTENTION[m[2]]}.{m[3]}"),
        (r"context\.scale_fusion\.(\d+)\.(.+)", lambda m: f"context_net.{m[1]}.{m[2]}"),
        (r"hyperprior\.(means|scales)", lambda m: f"{m[1]}_hyper"),
    )
    for pattern, build in rules:
        match = re.fullmatch(pattern, name)
        if match:
            return build(match)
    raise KeyError(f"no official name rule for {name!r}")


def _unwrap(obj) -> Mapping[str, torch.Tensor]:
    """The tensor mapping inside an official file: a bare state_dict, or under 'state_dict'/'model'."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "net"):
            if key in obj and isinstance(obj[key], Mapping):
                return obj[key]
        return obj
    raise CheckpointError(f"expected a state_dict (a mapping of names to tensors), got {type(obj).__name__}")


def _strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def import_official(state_dict: Mapping[str, torch.Tensor], preset: str = "base") -> dict[str, torch.Tensor]:
    """Official state_dict (optionally wrapped, optionally with `module.` prefixes) -> ours.

    Missing `adaptive_params_list.*` are filled with ones (older releases). Missing or unknown keys,
    shape mismatches and unexpected constants raise one `CheckpointError` that lists them all.
    """
    official = _strip_prefix(_unwrap(state_dict))
    reference = HPCM(preset).state_dict()
    ours: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    problems: list[str] = []
    for name, target in reference.items():
        theirs = official_name(name)
        if theirs is None:
            continue
        if theirs not in official:
            if theirs.startswith("adaptive_params_list."):
                ours[name] = torch.ones_like(target)
            else:
                problems.append(f"missing {theirs}")
            continue
        used.add(theirs)
        value = official[theirs]
        if not isinstance(value, torch.Tensor) or value.shape != target.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            problems.append(f"shape of {theirs}: {shape}, expected {tuple(target.shape)}")
            continue
        ours[name] = value.detach().to(target.dtype).clone()
    for key, expected in _OFFICIAL_CONSTANTS.items():
        if key in official:
            used.add(key)
            if not torch.allclose(official[key].float(), torch.tensor([expected])):
                problems.append(f"{key} = {official[key].tolist()}, this network needs {expected}")
    unknown = sorted(set(official) - used - set(_OFFICIAL_REBUILT))
    problems += [f"unknown key {k}" for k in unknown]
    if problems:
        raise CheckpointError(f"official checkpoint does not match HPCM preset {preset!r}: {problem_list(problems, 20)}")
    return ours


def load_official(path_or_state_dict, preset: str = "base") -> HPCM:
    """An HPCM with official weights, CDF tables built (`update()` done), in eval mode."""
    state = read_checkpoint(path_or_state_dict) if isinstance(path_or_state_dict, (str, Path)) else path_or_state_dict
    model = HPCM(preset)
    model.load_state_dict(import_official(state, preset), strict=False)
    model.update()
    return model.eval()

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

from .checkpoint_io import CheckpointError, read_checkpoint, write_atomically
from .models import HPCM
from .models.schedule import official_adaptor_name

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
        raise CheckpointError(f"official checkpoint does not match HPCM preset {preset!r}: {_shown(problems, 20)}")
    return ours


WEIGHTS_FORMAT = "lit-hpcm-weights"


def save_weights(state_dict: Mapping[str, torch.Tensor], preset: str, path: str | Path) -> Path:
    """Write our HPCM weights as a small self-describing file (what `import-official` produces)."""
    content = {"format": WEIGHTS_FORMAT, "preset": preset, "state_dict": dict(state_dict)}
    return write_atomically(path, lambda handle: torch.save(content, handle))


def load_weights(path: str | Path, preset: str) -> dict[str, torch.Tensor]:
    """Our HPCM state_dict from any weights file: a lit-hpcm weights file, a Lightning checkpoint of
    LitHPCM, or an official HPCM file. A file made for another preset is a `CheckpointError`."""
    return _weights_from(read_checkpoint(path), preset, path)[0]


def _weights_from(obj, preset: str | None, source) -> tuple[dict[str, torch.Tensor], str]:
    """(our HPCM state_dict, its preset) from a loaded weights file ``obj``. The preset is the file's own where
    it says (lit-hpcm files, Lightning checkpoints) and must equal ``preset`` if that is given; official files
    are read as ``preset`` (default "base"). Errors name ``source``."""
    if isinstance(obj, Mapping) and obj.get("format") == WEIGHTS_FORMAT:
        found, state = obj.get("preset"), obj["state_dict"]
    elif isinstance(obj, Mapping) and "state_dict" in obj and "pytorch-lightning_version" in obj:
        found = obj.get("hyper_parameters", {}).get("preset")
        state = {k[len("model."):]: v for k, v in obj["state_dict"].items() if k.startswith("model.")}
    else:
        preset = preset or "base"
        try:
            return import_official(obj, preset), preset
        except CheckpointError as err:
            raise CheckpointError(f"{source}: {err}") from None
    wanted = preset or found or "base"
    if found != wanted:
        raise CheckpointError(f"{source}: weights of preset {found!r}, but preset {wanted!r} was asked for")
    return state, found


# Entropy-model buffers (CDF tables) that `update()` rebuilds: files may lack them or hold other sizes.
_REBUILT_PREFIXES = ("y_entropy.", "hyperprior.entropy.")


def _shown(problems: list[str], limit: int = 8) -> str:
    more = f"; … and {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


def _mismatches(found: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], skip=()) -> list[str]:
    """Missing, unknown and misshapen tensors of ``found`` against ``expected`` (names in ``skip`` aside)."""
    problems = [f"missing {k}" for k in expected if k not in found and not k.startswith(skip)]
    problems += [f"unknown key {k}" for k in found if k not in expected]
    for key, value in found.items():
        target = expected.get(key)
        if not isinstance(target, torch.Tensor) or key.startswith(skip):
            continue
        if not isinstance(value, torch.Tensor) or value.shape != target.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            problems.append(f"shape of {key}: {shape}, expected {tuple(target.shape)}")
    return problems


def load_into(model: HPCM, state: Mapping[str, torch.Tensor], source) -> None:
    """Load our weights ``state`` into ``model``; anything that does not fit is one `CheckpointError`
    naming ``source`` (CDF tables aside: ``update()`` rebuilds them)."""
    expected = model.state_dict()
    problems = _mismatches(state, expected, skip=_REBUILT_PREFIXES)
    if problems:
        raise CheckpointError(f"{source}: weights do not fit HPCM preset {model.preset!r}: {_shown(problems)}")
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith(_REBUILT_PREFIXES)}, strict=False)


def check_lightning_checkpoint(checkpoint: Mapping, expected: Mapping[str, torch.Tensor], preset: str, source) -> None:
    """Refuse, with one `CheckpointError` naming ``source``, a Lightning checkpoint that cannot restore a
    LitHPCM whose ``state_dict()`` is ``expected``: not a LitHPCM checkpoint, another preset, or tensors
    that are missing, unknown or of another shape (e.g. another task set or balancing)."""
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise CheckpointError(f"{source}: not a lit-hpcm Lightning checkpoint (no state_dict)")
    found = checkpoint.get("hyper_parameters", {}).get("preset")
    if found is not None and found != preset:
        raise CheckpointError(f"{source}: a checkpoint of preset {found!r}; this model is preset {preset!r}")
    problems = _mismatches(checkpoint["state_dict"], expected, skip=tuple(f"model.{p}" for p in _REBUILT_PREFIXES))
    if problems:
        saved = checkpoint.get("hyper_parameters", {})
        recipe = {k: saved[k] for k in ("balancing", "task_set", "task_priors") if k in saved}
        hint = f"; it was trained with {recipe}: give the same settings (or the run's config)" if recipe else ""
        raise CheckpointError(
            f"{source}: checkpoint does not fit this model (preset {preset!r}): {_shown(problems)}{hint}")


def checkpoint_differences(a, b, where: str = "") -> list[str]:
    """Where two checkpoint trees differ, as paths like ``/optimizer_states[0]/state/3/exp_avg`` (tensors
    compared bit for bit). ModelCheckpoint states are skipped: they hold the run's own file paths. Used to
    show that a resumed run ends exactly where an uninterrupted one does."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [where]
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if set(a) != set(b):
            return [f"{where} keys {sorted(map(str, set(a) ^ set(b)))}"]
        keys = [k for k in a if not str(k).startswith("ModelCheckpoint")]
        return [d for k in keys for d in checkpoint_differences(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in checkpoint_differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [where]


def load_model(path: str | Path, preset: str | None = None, device: torch.device | str = "cpu") -> HPCM:
    """An HPCM ready to code (eval mode, CDF tables built) from any weights file.

    The preset comes from the file where it says (lit-hpcm files, Lightning checkpoints); official
    files need `preset` (default "base").
    """
    state, preset = _weights_from(read_checkpoint(path), preset, path)
    model = HPCM(preset)
    load_into(model, state, path)
    model.update()
    return model.to(device).eval()


def load_official(path_or_state_dict, preset: str = "base") -> HPCM:
    """An HPCM with official weights, CDF tables built (`update()` done), in eval mode."""
    state = read_checkpoint(path_or_state_dict) if isinstance(path_or_state_dict, (str, Path)) else path_or_state_dict
    model = HPCM(preset)
    model.load_state_dict(import_official(state, preset), strict=False)
    model.update()
    return model.eval()

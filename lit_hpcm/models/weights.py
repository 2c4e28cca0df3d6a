"""lit-hpcm weights files: writing them, reading weights from any file that holds them (ours, a Lightning
checkpoint's `model.*` tensors, or an official file through `lit_hpcm.models.official`), and loading them into an
HPCM with one clear error for anything that does not fit."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from ..errors import CheckpointError
from ..files import problem_list, read_checkpoint, write_atomically
from .hpcm import HPCM
from .official import import_official

WEIGHTS_FORMAT = "lit-hpcm-weights"

SAFETENSORS_SUFFIX = ".safetensors"
"""A weights file with this suffix is written and read as safetensors (tensors and text metadata, no pickle)."""


def save_weights(state_dict: Mapping[str, torch.Tensor], preset: str, path: str | Path) -> Path:
    """Write our HPCM weights as a small self-describing file (what `import-official` and `export` produce):
    safetensors for a ``.safetensors`` path (metadata ``format`` and ``preset``), else a torch file."""
    if Path(path).suffix == SAFETENSORS_SUFFIX:
        from safetensors.torch import save

        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}  # no shared storage
        data = save(tensors, metadata={"format": WEIGHTS_FORMAT, "preset": preset})
        return write_atomically(path, lambda handle: handle.write(data))
    content = {"format": WEIGHTS_FORMAT, "preset": preset, "state_dict": dict(state_dict)}
    return write_atomically(path, lambda handle: torch.save(content, handle))


def _read_safetensors(path: Path) -> dict:
    """A ``.safetensors`` weights file as the content `save_weights` gives torch files; `CheckpointError` if
    it is unreadable or not ours."""
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as err:  # noqa: BLE001 (safetensors raises its own error types for corrupt or foreign files)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "no details"
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(err).__name__}: {reason})") from None
    if metadata.get("format") != WEIGHTS_FORMAT or "preset" not in metadata:
        raise CheckpointError(f"{path}: a safetensors file without lit-hpcm metadata (format, preset): "
                              "write it with lit-hpcm export")
    return {"format": WEIGHTS_FORMAT, "preset": metadata["preset"], "state_dict": state}


def read_weights(path: str | Path, preset: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """(our HPCM state_dict, its preset) from any weights file: a lit-hpcm weights file (torch or safetensors),
    a Lightning checkpoint of LitHPCM, or an official HPCM file (see `_weights_from` for the preset)."""
    path = Path(path)
    content = _read_safetensors(path) if path.suffix == SAFETENSORS_SUFFIX else read_checkpoint(path)
    return _weights_from(content, preset, path)


def load_weights(path: str | Path, preset: str) -> dict[str, torch.Tensor]:
    """Our HPCM state_dict from any weights file (`read_weights`). A file made for another preset is a
    `CheckpointError`."""
    return read_weights(path, preset)[0]


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
REBUILT_PREFIXES = ("y_entropy.", "hyperprior.entropy.")


def state_mismatches(found: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], skip=()) -> list[str]:
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
    problems = state_mismatches(state, expected, skip=REBUILT_PREFIXES)
    if problems:
        raise CheckpointError(f"{source}: weights do not fit HPCM preset {model.preset!r}: {problem_list(problems)}")
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith(REBUILT_PREFIXES)}, strict=False)


def load_model(path: str | Path, preset: str | None = None, device: torch.device | str = "cpu") -> HPCM:
    """An HPCM ready to code (eval mode, CDF tables built) from any weights file.

    The preset comes from the file where it says (lit-hpcm files, Lightning checkpoints); official
    files need `preset` (default "base").
    """
    state, preset = read_weights(path, preset)
    model = HPCM(preset)
    load_into(model, state, path)
    model.update()
    return model.to(device).eval()

"""lit-hpcm weights files and Lightning checkpoints: writing and reading weights (ours, a Lightning checkpoint's or
an official file's, through `lit_hpcm.official`), and the checks that a checkpoint fits the model it is loaded into.
Atomic file writing is `lit_hpcm.checkpoint_io`'s."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from .checkpoint_io import CheckpointError, problem_list, read_checkpoint, write_atomically
from .models import HPCM
from .official import import_official
from .optim.famo import adopt_adam_extra_state

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
_REBUILT_PREFIXES = ("y_entropy.", "hyperprior.entropy.")


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
        raise CheckpointError(f"{source}: weights do not fit HPCM preset {model.preset!r}: {problem_list(problems)}")
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith(_REBUILT_PREFIXES)}, strict=False)


def check_lightning_checkpoint(checkpoint: Mapping, expected: Mapping[str, torch.Tensor], preset: str, source) -> None:
    """Refuse, with one `CheckpointError` naming ``source``, a Lightning checkpoint that cannot restore a
    LitHPCM whose ``state_dict()`` is ``expected``: not a LitHPCM checkpoint, another preset, or tensors
    that are missing, unknown or of another shape (e.g. another task set or balancing)."""
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise CheckpointError(f"{source}: not a lit-hpcm Lightning checkpoint (no state_dict)")
    _adopt_old_famo_state(checkpoint["state_dict"])
    found = checkpoint.get("hyper_parameters", {}).get("preset")
    if found is not None and found != preset:
        raise CheckpointError(f"{source}: a checkpoint of preset {found!r}; this model is preset {preset!r}")
    problems = _mismatches(checkpoint["state_dict"], expected, skip=tuple(f"model.{p}" for p in _REBUILT_PREFIXES))
    if problems:
        saved = checkpoint.get("hyper_parameters", {})
        recipe = {k: saved[k] for k in ("balancing", "task_set", "task_priors") if k in saved}
        hint = f"; it was trained with {recipe}: give the same settings (or the run's config)" if recipe else ""
        raise CheckpointError(
            f"{source}: checkpoint does not fit this model (preset {preset!r}): {problem_list(problems)}{hint}")


def _adopt_old_famo_state(state_dict: dict) -> None:
    """Map, in place, FAMO's inner Adam state of a checkpoint written before it became buffers (``famo._extra_state``,
    a dict) to the buffer keys this model has, so the checkpoint fits and loads."""
    for key in [k for k in state_dict if k.endswith("famo._extra_state")]:
        adopt_adam_extra_state(state_dict, key[: -len("_extra_state")])


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
    state, preset = read_weights(path, preset)
    model = HPCM(preset)
    load_into(model, state, path)
    model.update()
    return model.to(device).eval()

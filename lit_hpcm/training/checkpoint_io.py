"""Lightning checkpoints of LitHPCM: the plugin that writes them atomically, and the check that one fits the module.

`AtomicCheckpointIO` saves local files through `lit_hpcm.files.write_atomically` (the `lit-hpcm` CLI adds it
unless a config names another ``CheckpointIO``) and turns an unreadable file into one `CheckpointError` line.
`check_lightning_checkpoint` refuses a checkpoint that cannot restore the module, after mapping the state keys of
older releases to the current ones (`adopt_older_keys`), so their checkpoints still resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, MutableMapping, Optional

import fsspec
import torch
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO

from ..errors import CheckpointError
from ..files import problem_list, unreadable_checkpoint, write_atomically
from ..models.weights import REBUILT_PREFIXES, state_mismatches
from ..optim.famo import adopt_adam_extra_state

__all__ = ["AtomicCheckpointIO", "adopt_older_keys", "check_lightning_checkpoint", "with_atomic_checkpoints"]

# 0.1.0 registered the Balancer's parts on LitHPCM itself; they now live under the Balancer module.
RELEASE_0_1_PREFIXES = {"famo.": "balancer.famo.", "bit_share.": "balancer.bit_share.",
                        "loss_scale.": "balancer.loss_scale."}


def is_local_path(path) -> bool:
    """Whether `path` names a local file (no ``s3://``-like protocol), as fsspec, Lightning's file layer, sees it."""
    return fsspec.utils.get_protocol(str(path)) == "file"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that saves local files with :func:`write_atomically` and names bad files.

    Remote paths (``s3://`` and the like) go through Lightning's own writer: object stores publish an
    upload only once it is complete.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or not is_local_path(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        write_atomically(path, lambda handle: torch.save(checkpoint, handle))
        return None

    def load_checkpoint(self, path, map_location: Optional[Callable] = lambda storage, loc: storage, **kwargs):
        if is_local_path(path) and not Path(path).is_file():
            raise CheckpointError(f"{path}: no such checkpoint file")
        try:
            return super().load_checkpoint(path, map_location=map_location, **kwargs)
        except Exception as err:  # torch.load raises many types for corrupt, truncated or foreign files
            raise unreadable_checkpoint(path, err) from None


def with_atomic_checkpoints(plugins) -> list:
    """Trainer ``plugins`` plus an :class:`AtomicCheckpointIO`, unless they already hold a ``CheckpointIO``."""
    plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if any(isinstance(plugin, CheckpointIO) for plugin in plugins):
        return plugins
    return [*plugins, AtomicCheckpointIO()]


def adopt_older_keys(state_dict: MutableMapping[str, Any]) -> None:
    """Rename, in place, the state keys older releases wrote to the ones LitHPCM has now: 0.1.0's ``famo.*``,
    ``bit_share.*`` and ``loss_scale.*`` to ``balancer.*``, and FAMO's inner Adam saved as one ``_extra_state``
    dict (before it became buffers) to its buffers. Keys of the current release are left as they are."""
    for key in list(state_dict):
        for old, new in RELEASE_0_1_PREFIXES.items():
            if key.startswith(old):
                state_dict[new + key[len(old):]] = state_dict.pop(key)
    for key in [k for k in state_dict if k.endswith("famo._extra_state")]:
        adopt_adam_extra_state(state_dict, key[: -len("_extra_state")])


def check_lightning_checkpoint(checkpoint: Mapping, expected: Mapping[str, torch.Tensor], preset: str, source) -> None:
    """Refuse, with one `CheckpointError` naming ``source``, a Lightning checkpoint that cannot restore a
    LitHPCM whose ``state_dict()`` is ``expected``: not a LitHPCM checkpoint, another preset, or tensors
    that are missing, unknown or of another shape (e.g. another task set or balancing). Older releases' keys
    are mapped first (:func:`adopt_older_keys`), in the checkpoint itself, so that it then loads."""
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise CheckpointError(f"{source}: not a lit-hpcm Lightning checkpoint (no state_dict)")
    adopt_older_keys(checkpoint["state_dict"])
    found = checkpoint.get("hyper_parameters", {}).get("preset")
    if found is not None and found != preset:
        raise CheckpointError(f"{source}: a checkpoint of preset {found!r}; this model is preset {preset!r}")
    problems = state_mismatches(checkpoint["state_dict"], expected, skip=tuple(f"model.{p}" for p in REBUILT_PREFIXES))
    if problems:
        saved = checkpoint.get("hyper_parameters", {})
        recipe = {k: saved[k] for k in ("balancing", "task_set", "task_priors") if k in saved}
        hint = f"; it was trained with {recipe}: give the same settings (or the run's config)" if recipe else ""
        raise CheckpointError(
            f"{source}: checkpoint does not fit this model (preset {preset!r}): {problem_list(problems)}{hint}")

"""The random-number states that drive training noise, kept per DDP rank in a checkpoint.

Every rank draws its own quantization noise from its own generators (its CPU generator and its device's, cuda:k
for rank k). A resume is exact only if each rank gets back the states it had, so the checkpoint holds all ranks'
states (gathered when it is written) and each rank restores its own::

    checkpoint["lit_hpcm"]["rng"] = {"ranks": [{"cpu": ByteTensor, "device": ByteTensor | None}, ...]}

Checkpoints of the older layout hold rank 0's states only ({"cpu": ..., "cuda": [one per visible GPU]}); they
load too: every rank takes rank 0's CPU state and its device's entry of that list.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch


class DeviceGenerator(NamedTuple):
    """Read and write the state of this process's accelerator generator (e.g. cuda:k's)."""

    get: Callable[[], torch.Tensor]
    set: Callable[[torch.Tensor], None]
    index: int  # the device's index, to read checkpoints of the older layout


def device_generator(device: torch.device) -> Optional[DeviceGenerator]:
    """The generator of `device` when it is a CUDA device, else None (the CPU's is saved apart)."""
    if device.type != "cuda":
        return None
    return DeviceGenerator(lambda: torch.cuda.get_rng_state(device),
                           lambda state: torch.cuda.set_rng_state(state, device), device.index or 0)


def own_states(generator: Optional[DeviceGenerator]) -> dict:
    """This process's states: {"cpu": ByteTensor, "device": ByteTensor or None}."""
    return {"cpu": torch.get_rng_state(), "device": generator.get() if generator else None}


def gather_states(own: dict, all_gather: Callable[[dict], list]) -> dict:
    """The checkpoint entry: every rank's `own_states`, in rank order (`all_gather` returns one per rank)."""
    return {"ranks": list(all_gather(own))}


def restore_states(saved: dict, rank: int, generator: Optional[DeviceGenerator]) -> None:
    """Put back this rank's states from a checkpoint entry (`gather_states`, or the older rank-0-only layout).

    A rank the checkpoint has no states for (a resume on more processes) keeps its seeded states."""
    if "ranks" in saved:
        if rank >= len(saved["ranks"]):
            return
        cpu, device = saved["ranks"][rank]["cpu"], saved["ranks"][rank]["device"]
    else:
        cuda = saved.get("cuda") or []
        cpu = saved.get("cpu")
        device = cuda[generator.index] if generator and generator.index < len(cuda) else None
    if cpu is not None:
        torch.set_rng_state(cpu)
    if device is not None and generator is not None:
        generator.set(device)

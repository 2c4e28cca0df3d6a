"""Training: LitHPCM (the step, in `module`), the task losses (`tasks`), the Balancer that owns FAMO/QP state
(`balancer`), resume state (`epoch_means`, `rng_states`), the CUDA-graph fast path (`cuda_graphs`), the Lightning
checkpoint plugin (`checkpoint_io`), CPU memory set-up (`cpu_allocator`) and the one adapter for Lightning's
private API (`lightning_private`).

The names load their module on first use: the CLI's codec tools use `cpu_allocator` without loading Lightning.
"""

from __future__ import annotations

from .. import lazy_exports

_WHERE = {"LitHPCM": "module", "AtomicCheckpointIO": "checkpoint_io", "Balancer": "balancer"}
__all__ = sorted(_WHERE)
__getattr__ = lazy_exports(__name__, _WHERE)

"""The fast-path options of LitHPCM on the CPU: compile, CUDA graphs, channels_last.

The speed itself is measured on the GPU by benchmarks/ (docs/PERFORMANCE.md); here we check that each
option trains the same model: dynamo's trace of the whole forward (no graph breaks, with the eager
backend so no code is generated) gives bit-identical steps, `cuda_graphs` passes CPU batches through,
and NHWC weights train to the same numbers up to float reordering.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lit_hpcm.training.module import LitHPCM


def _fit(tmp_path, steps: int = 2, **options) -> LitHPCM:
    """Train the tiny preset for `steps` seeded steps, single-threaded (thread count changes float sums)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_seeded(tmp_path, steps, **options)
    finally:
        torch.set_num_threads(threads)


def _fit_seeded(tmp_path, steps: int, **options) -> LitHPCM:
    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", lr=1e-3, **options)
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(2, 3, 64, 64, generator=g) for _ in range(steps)]
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(batches, batch_size=None))
    return module


def _weights(module: LitHPCM) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in module.model.state_dict().items()}


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    return _weights(_fit(tmp_path_factory.mktemp("eager")))


def test_compiled_training_forward_traces_as_one_graph_and_trains_identically(tmp_path, eager):
    module = _fit(tmp_path, compile_model={"backend": "eager", "fullgraph": True})
    assert module._compiled_forward is not None
    for name, value in _weights(module).items():
        assert torch.equal(value, eager[name]), name


def test_cuda_graphs_leave_cpu_training_unchanged(tmp_path, eager):
    module = _fit(tmp_path, cuda_graphs=True)
    for name, value in _weights(module).items():
        assert torch.equal(value, eager[name]), name


def test_channels_last_trains_the_same_model_in_nhwc(tmp_path, eager):
    module = _fit(tmp_path, channels_last=True)
    assert module.model.g_a[0].weight.is_contiguous(memory_format=torch.channels_last)
    for name, value in _weights(module).items():
        torch.testing.assert_close(value, eager[name], rtol=1e-4, atol=1e-5, msg=name)


def test_two_fast_paths_at_once_are_refused(tmp_path):
    with pytest.raises(ValueError, match="one fast path"):
        _fit(tmp_path, compile_model=True, cuda_graphs=True)

"""CUDA-graph replay of the HPCM forward: the GPU fast path.

On a GPU, HPCM's step is bound by kernel launches, not arithmetic: the progressive context runs
11 coding steps of small convolutions at 1/16–1/64 of the image resolution, so the host spends more
time issuing thousands of small kernels than the GPU spends running them (see docs/PERFORMANCE.md). Recording
the forward and its backward once as CUDA graphs and replaying them costs one launch each, and leaves the GPU's
own time as the bound.

- `GraphedTrainingForward`: the training forward + backward (`torch.cuda.make_graphed_callables`),
  for one input shape; any other shape (a last, smaller batch) runs eagerly.
- `capture_inference`: an eval-mode forward under `no_grad` for one input shape.

Graphs replay the exact kernels recorded, with the parameters read in place, so optimizer updates are
seen by the next replay; random noise comes from the CUDA generator's graph-safe offsets.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class _Forward(nn.Module):
    """A holder whose forward is `model.forward`, so graphing replaces the holder's forward, not the model's."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model(x)


def _capture_autocast() -> torch.autocast:
    """The surrounding CUDA autocast state, with the weight-cast cache off (graph capture needs that)."""
    return torch.autocast(
        "cuda", dtype=torch.get_autocast_dtype("cuda"), enabled=torch.is_autocast_enabled("cuda"), cache_enabled=False
    )


class GraphedTrainingForward:
    """Calls `model(x)` for training batches x [B, 3, H, W] on a CUDA device through recorded graphs.

    The graphs are recorded on the first call (three warm-up passes, then capture; this consumes random
    numbers, so a run with graphs is reproducible but not bit-identical to an eager run) under the
    autocast state of that call. Outputs are the model's outputs (the graph's own buffers: they are
    overwritten by the next call, so anything kept across steps must be copied).
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self._graphed: nn.Module | None = None
        self._signature: tuple | None = None

    def __call__(self, x: torch.Tensor):
        if not x.is_cuda or not self.model.training:
            return self.model(x)
        signature = (tuple(x.shape), x.dtype, x.device)
        if self._graphed is None:
            with _capture_autocast():
                self._graphed = torch.cuda.make_graphed_callables(
                    _Forward(self.model), (x.detach().clone(),), allow_unused_input=True
                )
            self._signature = signature
        if signature != self._signature:
            return self.model(x)
        return self._graphed(x)


def capture_inference(model: nn.Module, example: torch.Tensor, warmup: int = 3) -> Callable[[torch.Tensor], object]:
    """Record `model(example)` under `no_grad` (current autocast state) as a CUDA graph.

    Returns a function of x (same shape, dtype and device as `example`) that copies x into the graph's
    input buffer, replays, and returns the graph's outputs (overwritten by the next replay).
    """
    static_input = example.detach().clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), _capture_autocast():
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                model(static_input)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = model(static_input)

    def replay(x: torch.Tensor):
        static_input.copy_(x)
        graph.replay()
        return static_output

    return replay

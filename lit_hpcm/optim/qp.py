"""Task weights of Balanced R-D's second strategy (for fine-tuning): an equality-constrained quadratic program.

The paper (Zhang et al., CVPR 2025, arXiv 2502.20161) names it in its abstract: the reformulated R-D problem
"as a quadratic programming problem with an equality constraint", solved analytically. Its method section could
not be read for this implementation, so the program below is derived from that sentence and from the first
strategy's log-losses, not transcribed (docs/TRAINING.md says so). With per-task gradients ``g_i = d log(L_i - m_i)/d
theta`` (the offsets ``m`` of FAMO, -1 by default) and their Gram matrix ``G_ij = <g_i, g_j>``::

    minimise_w  || sum_i w_i g_i ||^2 = w^T G w     subject to  sum_i w_i = 1

Lagrange: ``2 G w = mu 1`` and ``1^T w = 1`` give ``w = G^-1 1 / (1^T G^-1 1)``: the affine combination of the
task gradients of least norm. The weights sum to 1 but are not clipped to [0, 1] (the constraint set is the
plane, not the simplex). A tiny ridge on the diagonal keeps a rank-deficient ``G`` (parallel gradients) solvable.
"""

from __future__ import annotations

import torch
from torch import Tensor

RIDGE = 1e-10
"""Diagonal added to the Gram matrix, relative to its mean diagonal entry."""


def gram_matrix(rows: Tensor) -> Tensor:
    """Gram matrix ``G_ij = <g_i, g_j>`` [n, n] in float64 of task gradients ``rows`` [n, P].

    Each entry is a float64 dot product: not a float32 matmul, which a GPU runs in TF32 when training allows it
    (10-bit mantissas: near-parallel gradients would then give a Gram matrix, and weights, of noise).
    n (n + 1) / 2 dot products, two rows in float64 at a time (no [n, P] float64 copy).
    """
    n = rows.shape[0]
    gram = rows.new_zeros((n, n), dtype=torch.float64)
    for i in range(n):
        row = rows[i].double()
        for j in range(i, n):
            gram[i, j] = gram[j, i] = torch.dot(row, rows[j].double())
    return gram


def qp_weights(gram: Tensor) -> Tensor:
    """Weights ``w`` [n] (summing to 1) minimising ``w^T G w`` over the plane ``sum w = 1``, for ``G`` [n, n].

    Solved in float64 (the Gram entries of large models span many orders of magnitude); returned in
    ``gram``'s dtype. Never reads the device: `solve_ex` without its error check (a singular ``G`` gives
    non-finite weights, hence non-finite gradients, which the training step's one check skips).
    """
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"the Gram matrix must be square, got shape {tuple(gram.shape)}")
    g = gram.double()
    n = g.shape[0]
    scale = g.diagonal().mean().clamp_min(torch.finfo(torch.float64).tiny)
    eye = torch.eye(n, dtype=g.dtype, device=g.device)
    ones = torch.ones(n, 1, dtype=g.dtype, device=g.device)
    solution, _ = torch.linalg.solve_ex(g + RIDGE * scale * eye, ones, check_errors=False)
    weights = solution.squeeze(1) / solution.sum()
    return weights.to(gram.dtype)

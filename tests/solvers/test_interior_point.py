"""The interior-point method's Schur complement: the entry-mask fast path against the dense formula."""

from __future__ import annotations

import torch

from flatminima.problems import MatrixCompletion
from flatminima.solvers.convex.formulation import formulate
from flatminima.solvers.convex.interior_point import _schur_complement_function


def _spd(n: int, generator: torch.Generator) -> torch.Tensor:
    A = torch.randn(n, n, generator=generator, dtype=torch.float64)
    return A @ A.T + n * torch.eye(n, dtype=torch.float64)


def test_entry_mask_schur_complement_matches_the_dense_formula() -> None:
    generator = torch.Generator().manual_seed(5)
    instance = MatrixCompletion(shape=(7, 9), rank=2, probability=0.6).sample(generator=generator)
    bmap = formulate(instance, "flat", eps=None).bmap
    assert bmap is not None and bmap.entry_mask
    m, (d1, d2) = bmap.num_measurements, bmap.shape
    rows = bmap.dense_rows().reshape(m, d1, d2)
    X, T = _spd(d1 + d2, generator), _spd(d1 + d2, generator)
    masked = _schur_complement_function(bmap, rows)(X, T)
    bmap.operator = object()  # type: ignore[assignment]  # hides the mask: the dense, batched path
    dense = _schur_complement_function(bmap, rows)(X, T)
    assert torch.allclose(masked, dense, rtol=1e-12, atol=1e-12)

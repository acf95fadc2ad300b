"""The one Lanczos kernel (flatminima.numerics.lanczos): single vector and block, against eigvalsh."""

from __future__ import annotations

import doctest
from collections.abc import Callable

import pytest
import torch

from flatminima.errors import ConfigurationError, InputDataError
from flatminima.numerics import ROUND_OFF_FACTOR, block_lanczos, extreme_eigenpairs, ritz_pairs

F64 = torch.float64


def _symmetric(n: int, seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    A = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return ((A + A.T) / 2).to(dtype)


def _start(n: int, b: int, seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(n, b, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype).squeeze(1)


@pytest.mark.parametrize("block", [1, 3])
@pytest.mark.parametrize("which", ["largest", "smallest"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_extreme_eigenvalues_match_eigvalsh(block: int, which: str, seed: int) -> None:
    H = _symmetric(60, seed)
    exact = torch.linalg.eigvalsh(H)
    wanted = exact.flip(0)[:3] if which == "largest" else exact[:3]
    state, pairs = extreme_eigenpairs(
        lambda X: H @ X, _start(60, block, seed + 10), 3, which=which, tol=1e-12, max_blocks=60
    )
    scale = float(exact.abs().max())
    assert pairs.converged(1e-12)
    torch.testing.assert_close(pairs.values, wanted, rtol=0, atol=1e-9 * scale)
    # the reported bounds hold: every wanted eigenvalue lies within its residual of the Ritz value
    assert bool(((pairs.values - wanted).abs() <= pairs.residuals + 1e-12 * scale).all())
    # Ritz vectors are orthonormal, and their residuals are what the kernel reports
    V = pairs.vectors(state)
    torch.testing.assert_close(V.T @ V, torch.eye(3, dtype=F64), rtol=0, atol=1e-12)
    true_residuals = torch.linalg.vector_norm(H @ V - V * pairs.values, dim=0)
    torch.testing.assert_close(true_residuals, pairs.residuals, rtol=0, atol=1e-10 * scale)
    assert state.basis.shape[1] == state.num_matvecs <= 60


@pytest.mark.parametrize("n", [40, 150])
@pytest.mark.parametrize("block", [1, 4])
def test_full_run_reproduces_the_whole_spectrum(block: int, n: int) -> None:
    """Run to n columns: T is similar to H (full reorthogonalization keeps Q orthonormal to round-off)."""
    H = _symmetric(n, 3)
    state = block_lanczos(lambda X: H @ X, _start(n, block, 4), n)
    Q = state.basis
    assert Q.shape == (n, n)
    torch.testing.assert_close(Q.T @ Q, torch.eye(n, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        torch.linalg.eigvalsh(state.matrix()), torch.linalg.eigvalsh(H), rtol=0, atol=1e-11
    )
    torch.testing.assert_close(state.matrix(), Q.T @ H @ Q, rtol=0, atol=1e-11)
    assert state.next_beta == 0.0


def test_block_tridiagonal_structure_and_three_term_recurrence() -> None:
    H = _symmetric(30, 5)
    block = block_lanczos(lambda X: H @ X, _start(30, 2, 6), 5)
    T = block.matrix()
    assert T.shape == (10, 10) and block.num_blocks == 5 and block.num_matvecs == 10
    mask = (torch.arange(10)[:, None] // 2 - torch.arange(10)[None, :] // 2).abs() > 1
    assert bool((T[mask] == 0).all())  # nothing beyond the first block off-diagonal
    single = block_lanczos(lambda X: H @ X, _start(30, 1, 6), 6)
    assert len(single.alphas) == 6 and len(single.betas) == 6  # the last beta couples to the next vector
    torch.testing.assert_close(single.matrix(), single.basis.T @ H @ single.basis, rtol=0, atol=1e-12)


@pytest.mark.parametrize("block", [1, 2])
def test_invariant_subspace_breakdown_is_exact(block: int) -> None:
    """A start inside a 3-dimensional invariant subspace stops there with no residual."""
    eigenvalues = torch.arange(1.0, 21.0, dtype=F64)
    H = torch.diag(eigenvalues)
    start = torch.zeros(20, block, dtype=F64)
    start[:3] = torch.randn(3, block, generator=torch.Generator().manual_seed(0), dtype=F64)
    state = block_lanczos(lambda X: H @ X, start.squeeze(1), 10)
    assert state.basis.shape[1] == 3 and state.next_beta == 0.0
    pairs = ritz_pairs(state, 3)
    torch.testing.assert_close(pairs.values, torch.tensor([3.0, 2.0, 1.0], dtype=F64))
    assert float(pairs.residuals.max()) == 0.0


def test_rank_deficient_blocks_deflate() -> None:
    """A start block with a repeated column and a matrix of rank 5 with a block wider than the rest."""
    H = _symmetric(12, 7)
    start = _start(12, 2, 8)
    start = torch.cat([start, start[:, :1]], dim=1)  # rank 2, three columns
    state = block_lanczos(lambda X: H @ X, start, 12)
    Q = state.basis
    assert Q.shape[1] == 12
    torch.testing.assert_close(Q.T @ Q, torch.eye(12, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        torch.linalg.eigvalsh(state.matrix()), torch.linalg.eigvalsh(H), rtol=0, atol=1e-11
    )
    # 7 columns and a block of 4: the second block can hold only 3 new directions
    W = torch.randn(9, 7, generator=torch.Generator().manual_seed(9), dtype=F64)
    state = block_lanczos(lambda X: W.T @ (W @ X), _start(7, 4, 10), 5)
    assert state.basis.shape[1] == 7
    pairs = ritz_pairs(state, 1)
    assert float(pairs.values[0]) ** 0.5 == pytest.approx(
        float(torch.linalg.matrix_norm(W, ord=2)), rel=1e-12
    )


def test_float32_bounds_are_floored_at_round_off() -> None:
    H = _symmetric(50, 11, torch.float32)
    _, pairs = extreme_eigenpairs(
        lambda X: H @ X, _start(50, 1, 12, torch.float32), 2, tol=1e-12, max_blocks=50
    )
    floor = ROUND_OFF_FACTOR * torch.finfo(torch.float32).eps * pairs.scale
    assert bool((pairs.error_bounds >= floor * (1 - 1e-6)).all())
    exact = torch.linalg.eigvalsh(H.double()).flip(0)[:2]
    assert bool(((pairs.values - exact).abs() <= pairs.error_bounds).all())


def test_stop_callback_and_errors() -> None:
    H = _symmetric(20, 13)
    calls: list[int] = []
    state = block_lanczos(
        lambda X: H @ X, _start(20, 1, 14), 15, stop=lambda s: calls.append(s.num_matvecs) or len(calls) == 4
    )
    assert state.num_matvecs == 4 and calls == [1, 2, 3, 4]
    with pytest.raises(InputDataError, match="start must not be zero"):
        block_lanczos(lambda X: H @ X, torch.zeros(20, dtype=F64), 3)
    with pytest.raises(InputDataError, match="max_blocks must be >= 1"):
        block_lanczos(lambda X: H @ X, _start(20, 1, 0), 0)
    with pytest.raises(ConfigurationError, match="which must be"):
        ritz_pairs(state, 1, which="both")


def test_docstring_examples(docstring_examples: Callable[[str], doctest.TestResults]) -> None:
    result = docstring_examples("flatminima.numerics.lanczos")
    assert result.attempted > 0 and result.failed == 0


def test_block_norm_estimate_of_the_solvers_is_exact_when_the_block_overfills_the_space() -> None:
    """Regression: with 7 columns and blocks of 4 the second block was not orthogonal to the first (the
    old loop kept 8 basis vectors in R^7), and the Ritz value overestimated ||W|| (8.46 for 7.28)."""
    from flatminima.solvers.convex.lanczos import block_lanczos_norm

    W = torch.randn(30, 7, generator=torch.Generator().manual_seed(1), dtype=F64)
    estimate = block_lanczos_norm(
        lambda X: W @ X,
        lambda Y: W.T @ Y,
        7,
        dtype=F64,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(2),
    )
    norm = float(torch.linalg.matrix_norm(W, ord=2))
    assert estimate.sigma == pytest.approx(norm, rel=1e-12)
    assert norm <= estimate.sigma_bound <= norm * (1 + 1e-12)


def test_the_kernels_import_no_other_layer() -> None:
    """flatminima.numerics is a leaf: importing it loads flatminima.errors and nothing else of the package."""
    import subprocess
    import sys

    code = (
        "import sys, flatminima.numerics; print(sorted(m for m in sys.modules if m.startswith('flatminima')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == str(
        [
            "flatminima",
            "flatminima.errors",
            "flatminima.numerics",
            "flatminima.numerics.lanczos",
            "flatminima.numerics.lbfgs",
        ]
    )

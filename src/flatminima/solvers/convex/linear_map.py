"""The rescaled measurement map B(Z) = A(D1^{-1} Z D2^{-1}) of the flat relaxation, structure-aware.

P_flat of Ding et al. is min ||Z||_* s.t. B(Z) = b with B_l = D1^{-1} A_l D2^{-1}; NNM is the case
D1 = D2 = I. :class:`ScaledMap` applies B and B^* on dense and factored inputs through the operator's
structured products (never forming an (m, d1, d2) tensor for rank-one or mask operators), builds the
Gram matrix B B^* (m x m) for the exact affine projection, and the tangent-space rows (B_l V, B_l^T U)
used by the Gauss-Newton polish. :func:`rescaling_inverses` computes D1^{-1}, D2^{-1} and refuses
singular rescalings with the offending rows/columns named.

References:
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024 (Section 3, eq. (19)).
"""

from __future__ import annotations

import typing
from collections.abc import Callable

import torch

from flatminima.errors import SingularRescalingError
from flatminima.operators import (
    BilinearOperator,
    DenseOperator,
    EntryMask,
    MeasurementOperator,
    SymmetricRankOneOperator,
)

#: relative eigenvalue floor below which a rescaling matrix counts as singular.
SINGULAR_THRESHOLD = 1e-12

#: measurements per chunk in the generic (dense-slice) fallbacks.
_CHUNK = 512
#: entries of a dense sensing tensor up to which the Gram matrix is built from one scaled copy (400 MB).
_GRAM_COPY_LIMIT = 50_000_000


def _mul(inverse: torch.Tensor | None, P: torch.Tensor) -> torch.Tensor:
    """D^{-1} P with D^{-1} None (identity), a diagonal vector, or a symmetric matrix."""
    if inverse is None:
        return P
    if inverse.ndim == 1:
        return inverse.unsqueeze(-1) * P
    return inverse @ P


def rescaling_inverses(
    operator: MeasurementOperator,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Return (D1^{-1}, D2^{-1}, kappa) for an operator: diagonal vectors for diagonal kinds, else matrices.

    kappa = alpha2 / alpha1 for the tightest alpha1 I <= D1, D2 <= alpha2 I (Theorem 3.3).

    Raises:
        SingularRescalingError: if D1 or D2 is singular; for entry masks the message lists the empty rows
            and columns.
    """
    if isinstance(operator, EntryMask):
        rows, cols = operator.empty_rows(), operator.empty_columns()
        if rows or cols:
            raise SingularRescalingError(
                "the rescaling matrices D1, D2 are singular: matrix completion with empty rows "
                f"{_short(rows)} and empty columns {_short(cols)}; the flat relaxation needs every row "
                "and column observed (increase probability or draw another mask)."
            )
    if operator.diagonal_rescaling:
        D1, D2 = operator.rescaling_diagonals()
        values = torch.cat([D1, D2])
        low, high = float(values.min()), float(values.max())
        if low <= SINGULAR_THRESHOLD * high:
            raise SingularRescalingError(
                f"the rescaling matrices D1, D2 are singular (smallest diagonal entry {low:.3g}, largest "
                f"{high:.3g}); the flat relaxation is undefined."
            )
        return 1.0 / D1, 1.0 / D2, high / low
    D1_sq, D2_sq = operator.rescaling_squares()
    inverses = []
    extremes = []
    for name, S in (("D1", D1_sq), ("D2", D2_sq)):
        eigenvalues, Q = torch.linalg.eigh(S)
        low, high = float(eigenvalues[0]), float(eigenvalues[-1])
        if low <= SINGULAR_THRESHOLD * max(high, 0.0) or high <= 0.0:
            count = int((eigenvalues <= SINGULAR_THRESHOLD * max(high, 0.0)).sum())
            raise SingularRescalingError(
                f"the rescaling matrix {name} is singular ({count} zero eigenvalue(s) of {name}^2, "
                f"smallest {low:.3g}, largest {high:.3g}); the flat relaxation is undefined. Use more "
                "measurements (e.g. m >= d for rank-one designs) or solve_nuclear_norm."
            )
        inverses.append((Q * eigenvalues.rsqrt()) @ Q.mT)
        extremes.extend([low, high])
    kappa = (max(extremes) / min(extremes)) ** 0.5
    return inverses[0], inverses[1], kappa


def symmetric_gram(H: torch.Tensor, blocks: int = 4) -> torch.Tensor:
    """H H^T from the blocks on and below the diagonal, mirrored (5/8 of the products for 4 blocks)."""
    n = H.shape[0]
    step = -(-n // blocks)
    G = H.new_empty(n, n)
    for i in range(0, n, step):
        for j in range(0, i + 1, step):
            block = H[i : i + step] @ H[j : j + step].mT
            G[i : i + step, j : j + step] = block
            if j != i:
                G[j : j + step, i : i + step] = block.mT
    return G


def _short(indices: list[int], limit: int = 10) -> str:
    """A bracketed list of indices, elided after ``limit`` entries."""
    shown = ", ".join(str(i) for i in indices[:limit])
    more = f", ... ({len(indices)} in all)" if len(indices) > limit else ""
    return f"[{shown}{more}]"


class ScaledMap:
    """B(Z) = A(D1^{-1} Z D2^{-1}): the constraint map of P_flat (or of NNM with both inverses None).

    Args:
        operator: the measurement operator A.
        left_inverse: D1^{-1} as a symmetric matrix, a diagonal vector, or None (identity).
        right_inverse: D2^{-1} likewise.

    Example:
        >>> from flatminima.problems import MatrixSensing
        >>> inst = MatrixSensing(shape=(5, 5), rank=1, num_measurements=20).sample(
        ...     generator=torch.Generator().manual_seed(0))
        >>> B = ScaledMap(inst.operator, None, None)
        >>> bool(torch.allclose(B.apply(inst.ground_truth), inst.observations))
        True
    """

    def __init__(
        self,
        operator: MeasurementOperator,
        left_inverse: torch.Tensor | None,
        right_inverse: torch.Tensor | None,
    ) -> None:
        self.operator = operator
        self.left_inverse = left_inverse
        self.right_inverse = right_inverse
        self.shape = operator.shape_in
        self.num_measurements = operator.num_measurements
        # dense sensing matrices are kept unscaled (no copy): D1^{-1}, D2^{-1} act on the d1 x d2 or thin
        # inputs, which costs O(d^3) per product instead of O(m d^3) once and a second (m, d1, d2) tensor
        self._dense: torch.Tensor | None = None
        if isinstance(operator, DenseOperator):
            self._dense = operator.matrices
        self._rank_one: tuple[torch.Tensor, torch.Tensor] | None = None
        if isinstance(operator, BilinearOperator):
            self._rank_one = (operator.left, operator.right)
        elif isinstance(operator, SymmetricRankOneOperator):
            self._rank_one = (operator.vectors, operator.vectors)

    @property
    def entry_mask(self) -> bool:
        """True for matrix completion (B_l = w_l e_i e_j^T): every product costs O(m k)."""
        return isinstance(self.operator, EntryMask)

    @property
    def rank_one(self) -> bool:
        """True for rank-one designs B_l = a'_l c'_l^T (bilinear, symmetric rank-one)."""
        return self._rank_one is not None

    # B_l = a'_l c'_l^T with a'_l = D1^{-1} a_l, c'_l = D2^{-1} c_l; the scaled vectors are never stored:
    # products go through the thin matrices, e.g. a'^T-rows times P = a (D1^{-1} P).
    def _left_project(self, P: torch.Tensor) -> torch.Tensor:
        """(a'_l^T P)_l = a (D1^{-1} P), shape (m, k)."""
        return typing.cast(tuple[torch.Tensor, torch.Tensor], self._rank_one)[0] @ _mul(self.left_inverse, P)

    def _right_project(self, Q: torch.Tensor) -> torch.Tensor:
        """(c'_l^T Q)_l = c (D2^{-1} Q), shape (m, k)."""
        return typing.cast(tuple[torch.Tensor, torch.Tensor], self._rank_one)[1] @ _mul(self.right_inverse, Q)

    def _left_back(self, Y: torch.Tensor) -> torch.Tensor:
        """sum_l a'_l Y_l = D1^{-1} a^T Y for Y (m, k), computed as (Y^T a)^T.

        (torch's ``a.mT @ Y`` for a tall (m, d) matrix is several times slower than ``Y.mT @ a``.)
        """
        left = typing.cast(tuple[torch.Tensor, torch.Tensor], self._rank_one)[0]
        return _mul(self.left_inverse, (Y.mT @ left).mT)

    def _right_back(self, Y: torch.Tensor) -> torch.Tensor:
        """sum_l c'_l Y_l = D2^{-1} c^T Y for Y (m, k), computed as (Y^T c)^T."""
        right = typing.cast(tuple[torch.Tensor, torch.Tensor], self._rank_one)[1]
        return _mul(self.right_inverse, (Y.mT @ right).mT)

    def _scaled_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(a', c') as (m, d1), (m, d2) matrices (small problems only)."""
        left, right = typing.cast(tuple[torch.Tensor, torch.Tensor], self._rank_one)
        a = _mul(self.left_inverse, left.mT).mT if self.left_inverse is not None else left
        c = _mul(self.right_inverse, right.mT).mT if self.right_inverse is not None else right
        return a, c

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the operator."""
        return self.operator.dtype

    @property
    def device(self) -> torch.device:
        """Device of the operator."""
        return self.operator.device

    # ---- the map --------------------------------------------------------------------------------
    def _scale(self, Z: torch.Tensor) -> torch.Tensor:
        """D1^{-1} Z D2^{-1} for Z (..., d1, d2), in the layout of Z (D2^{-1} is symmetric: no transposes)."""
        X = _mul(self.left_inverse, Z)
        right = self.right_inverse
        if right is None:
            return X
        return X * right if right.ndim == 1 else X @ right

    def apply(self, Z: torch.Tensor) -> torch.Tensor:
        """B(Z) for Z of shape (..., d1, d2)."""
        X = self._scale(Z)
        if self._dense is not None:
            return X.reshape(*X.shape[:-2], -1) @ self._dense.reshape(self.num_measurements, -1).T
        return self.operator.apply(X)

    def apply_factored(self, P: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
        """B(P Q^T) for P (d1, k), Q (d2, k) without forming P Q^T for structured operators."""
        if self._rank_one is not None:
            return (self._left_project(P) * self._right_project(Q)).sum(-1)
        if self._dense is not None:
            return self.apply(P @ Q.mT)
        return self.operator.apply_factored(_mul(self.left_inverse, P), _mul(self.right_inverse, Q))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """B^*(y) = D1^{-1} A^*(y) D2^{-1} for y of shape (..., m)."""
        if self._dense is not None:
            flat = y @ self._dense.reshape(self.num_measurements, -1)
            return self._scale(flat.reshape(*y.shape[:-1], *self.shape))
        return self._scale(self.operator.adjoint(y))

    def adjoint_matmul(self, y: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """B^*(y) V for V (d2, k) (structured: O(m (d1 + d2) k) for rank-one operators)."""
        if self._rank_one is not None:
            return self._left_back(y.unsqueeze(-1) * self._right_project(V))
        if self._dense is not None:
            return self.adjoint(y) @ V
        return _mul(self.left_inverse, self.operator.adjoint_matmul(y, _mul(self.right_inverse, V)))

    def adjoint_t_matmul(self, y: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
        """B^*(y)^T U for U (d1, k)."""
        if self._rank_one is not None:
            return self._right_back(y.unsqueeze(-1) * self._left_project(U))
        if self._dense is not None:
            return self.adjoint(y).mT @ U
        return _mul(self.right_inverse, self.operator.adjoint_t_matmul(y, _mul(self.left_inverse, U)))

    def factored_with_adjoint(
        self, P: torch.Tensor, Q: torch.Tensor, residual: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One fused pass: v = B(P Q^T), y = residual(v), and (B^*(y) Q, B^*(y)^T P).

        For rank-one operators the projections a' P and c' Q are computed once and reused by the
        adjoint products (two passes over the data instead of four). A blocked single pass that keeps
        each block of rows in cache was measured no faster on 2 cores: these products are compute-bound.
        """
        if self._rank_one is not None:
            left = self._left_project(P)
            right = self._right_project(Q)
            value = (left * right).sum(-1)
            y = residual(value)
            yc = y.unsqueeze(-1)
            return value, y, self._left_back(yc * right), self._right_back(yc * left)
        value = self.apply_factored(P, Q)
        y = residual(value)
        if self._dense is not None:  # one dense adjoint serves both products
            G = self.adjoint(y)
            return value, y, G @ Q, G.mT @ P
        return value, y, self.adjoint_matmul(y, Q), self.adjoint_t_matmul(y, P)

    # ---- derived matrices -----------------------------------------------------------------------
    def gram(self) -> torch.Tensor:
        """B B^* as an (m, m) matrix: (B B^*)_{lk} = <B_l, B_k>."""
        m = self.num_measurements
        if self._dense is not None and self._dense.numel() <= _GRAM_COPY_LIMIT:
            # (B B^*)_{lk} = <H_l, H_k> with H_l = D1^{-1} A_l D2^{-1}: one scaled copy, then H H^T
            return symmetric_gram(self._scale(self._dense).reshape(m, -1))
        if self._dense is not None:
            # (B B^*)_{lk} = <A_l, D1^{-2} A_k D2^{-2}>: no full copy of A, the transform built in chunks
            flat = self._dense.reshape(m, -1)
            blocks = []
            for start in range(0, m, _CHUNK):
                chunk = self._scale(self._scale(self._dense[start : start + _CHUNK]))
                blocks.append(chunk.reshape(chunk.shape[0], -1) @ flat.T)
            return torch.cat(blocks, dim=0)
        if self._rank_one is not None:
            a, c = self._scaled_vectors()
            return (a @ a.T) * (c @ c.T)
        op = self.operator
        if isinstance(op, EntryMask) and (self.left_inverse is None or self.left_inverse.ndim == 1):
            w = self._mask_weights(op)
            return torch.diag(w.square())
        blocks = []
        eye = torch.eye(m, dtype=self.dtype, device=self.device)
        for start in range(0, m, _CHUNK):
            blocks.append(self.apply(self.adjoint(eye[start : start + _CHUNK])))
        return torch.cat(blocks, dim=0)

    def _mask_weights(self, op: EntryMask) -> torch.Tensor:
        """w_l = D1^{-1}[i_l] D2^{-1}[j_l], so B_l = w_l e_{i_l} e_{j_l}^T."""
        m = self.num_measurements
        ones = torch.ones(m, dtype=self.dtype, device=self.device)
        left = ones if self.left_inverse is None else self.left_inverse[op.rows]
        right = ones if self.right_inverse is None else self.right_inverse[op.cols]
        return left * right

    def tangent_rows(self, U: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (B_l^T U)_l of shape (m, d2, r) and (B_l V)_l of shape (m, d1, r)."""
        if self._dense is not None:
            # B_l^T U = D2^{-1} A_l^T (D1^{-1} U) and B_l V = D1^{-1} A_l (D2^{-1} V)
            left = _mul(self.right_inverse, self._dense.mT @ _mul(self.left_inverse, U))
            right = _mul(self.left_inverse, self._dense @ _mul(self.right_inverse, V))
            return left, right
        if self._rank_one is not None:
            a, c = self._scaled_vectors()
            left = c.unsqueeze(-1) * (a @ U).unsqueeze(-2)
            right = a.unsqueeze(-1) * (c @ V).unsqueeze(-2)
            return left, right
        m = self.num_measurements
        eye = torch.eye(m, dtype=self.dtype, device=self.device)
        lefts, rights = [], []
        for start in range(0, m, _CHUNK):
            slices = self.adjoint(eye[start : start + _CHUNK])
            lefts.append(slices.mT @ U)
            rights.append(slices @ V)
        return torch.cat(lefts), torch.cat(rights)

    def dense_rows(self) -> torch.Tensor:
        """The sensing matrices B_l as an (m, d1 * d2) matrix (row-major vec; small problems only)."""
        m = self.num_measurements
        if self._dense is not None:
            return self._scale(self._dense).reshape(m, -1)
        eye = torch.eye(m, dtype=self.dtype, device=self.device)
        return torch.cat(
            [
                self.adjoint(eye[s : s + _CHUNK]).reshape(-1, self.shape[0] * self.shape[1])
                for s in range(0, m, _CHUNK)
            ]
        )

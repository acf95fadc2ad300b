"""Deep matrix factorization f(W_1, ..., W_N) = (1/m) ||A(W_N ... W_1) - b||^2 with exact curvature."""

from __future__ import annotations

import typing
from collections.abc import Sequence

import torch

from flatminima._checks import check_int_in_range, check_tensor
from flatminima.errors import InputDataError, InputTypeError
from flatminima.objectives.base import (
    Objective,
    Params,
    adjoint_actions,
    check_instance,
    forms_dense_apply,
    rescaling_weights,
    weighted_square_norm,
)
from flatminima.problems import Instance

#: an optional matrix; None stands for an identity of the right size (the empty product).
_Maybe = torch.Tensor | None


def _check_widths(depth: int, widths: object) -> tuple[int, ...]:
    if depth == 1 and widths is None:
        return ()
    if isinstance(widths, int) and not isinstance(widths, bool):
        widths = (widths,) * (depth - 1)
    if isinstance(widths, str) or not isinstance(widths, Sequence):
        raise InputTypeError(
            f"widths must be an integer or a sequence of depth - 1 = {depth - 1} integers; "
            f"got widths={widths!r}."
        )
    if len(widths) != depth - 1:
        raise InputDataError(
            f"widths must list the depth - 1 = {depth - 1} inner sizes; got {len(widths)} "
            f"(widths={tuple(widths)!r})."
        )
    return tuple(check_int_in_range(f"widths[{i}]", w, low=1) for i, w in enumerate(widths))


def _matmul(A: _Maybe, B: _Maybe) -> _Maybe:
    if A is None:
        return B
    if B is None:
        return A
    return A @ B


@typing.final
class DeepFactorization(Objective):
    r"""f(W_1, ..., W_N) = (1/m) ||A(E) - b||^2 with the end-to-end matrix E = W_N ... W_1.

    W_l has shape (d_l, d_{l-1}) with d_0 = d2 (W_1 has d2 columns), d_N = d1 (W_N has d1 rows) and
    ``widths`` = (d_1, ..., d_{N-1}). Write P_l = W_N ... W_{l+1} (d1, d_l) and Q_l = W_{l-1} ... W_1
    (d_{l-1}, d2) (empty products are identities), res = A(E) - b and G = A^*(res). Then

    * grad_{W_l} f = (2/m) P_l^T G Q_l^T;
    * the HVP is the derivative of the gradient along the direction (V_1, ..., V_N):
      (H V)_l = (2/m) (dP_l^T G Q_l^T + P_l^T A^*(A(dE)) Q_l^T + P_l^T G dQ_l^T), where dP_l, dQ_l
      and dE = sum_l P_l V_l Q_l are the first-order changes of P_l, Q_l and E (product rule);
    * the exact trace **at every point**: E is affine in each single block, so along a coordinate
      direction of W_l the second derivative is (2/m) ||A(P_l e_i e_j^T Q_l)||^2 and no residual term
      reaches the diagonal. Summing, the W_l-block trace is

      tr_l = (2/m) sum_s ||P_l^T A_s Q_l^T||_F^2   (``operator.sandwich_norms(P_l, Q_l)``),

      which for the outer blocks reduces to tr_N = 2 d1 ||D2 Q_N^T||_F^2 and tr_1 = 2 d2 ||D1 P_1||_F^2.
      For A = identity (m = d1 d2) this is tr_l = (2/m) ||P_l||_F^2 ||Q_l||_F^2 (Gatmiry et al. 2023).

    **Scaled trace (our generalization).** The bilinear scaled trace averages the L-block over its d1
    rows and the R-block over its d2 rows: each block is divided by the ambient dimension it touches.
    We keep exactly that rule: W_N is weighted 1/d1 (its rows are the output dimension), W_1 is weighted
    1/d2 (its columns are the input dimension), inner layers, which touch neither, have weight 1, and a
    single layer (N = 1) has weight 1/(d1 d2). At N = 2 this equals
    :class:`~flatminima.objectives.BilinearFactorization`'s scaled trace with L = W_2, R = W_1^T,
    str = 2 (||D1 W_2||^2 + ||D2 W_1^T||^2); for A = identity every term of the scaled trace becomes
    (2/(d1 d2)) ||P_l||^2 ||Q_l||^2 with the identity factors' sizes removed.

    Cost: the outer blocks use the cached D1^2, D2^2; inner blocks (N >= 3) call ``sandwich_norms``,
    which is O(m (d1 + d2) width) for rank-one and mask operators and O(m d1 d2 width) for dense ones.

    Args:
        instance: a matrix instance, b = observations.
        depth: the number of layers N >= 1.
        widths: the inner sizes (d_1, ..., d_{N-1}), each >= 1; an integer repeats one size. May be
            omitted for N = 1.

    Raises:
        InputTypeError: if ``depth`` or ``widths`` has the wrong type.
        InputDataError: if ``depth < 1``, ``len(widths) != depth - 1`` or a width is < 1.

    Example:
        >>> from flatminima.problems import MatrixSensing
        >>> g = torch.Generator().manual_seed(0)
        >>> inst = MatrixSensing(shape=(5, 4), rank=2, num_measurements=30).sample(generator=g)
        >>> obj = DeepFactorization(inst, depth=3, widths=(3, 3))
        >>> [tuple(s) for s in obj.shapes]
        [(3, 4), (3, 3), (5, 3)]

    References:
        K. Gatmiry, Z. Li, C.-Y. Chuang, S. Reddi, T. Ma, S. Jegelka. The inductive bias of flatness
        regularization for deep matrix factorization. NeurIPS 2023 (arXiv:2306.13239).
        L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
        recovery. Information and Inference 13(2), 2024 (arXiv:2203.03756).
    """

    def __init__(self, instance: Instance, *, depth: int, widths: Sequence[int] | int | None = None) -> None:
        self.instance = check_instance(instance)
        self.depth = check_int_in_range("depth", depth, low=1)
        self.widths = _check_widths(depth, widths)
        self.operator = instance.operator
        d1, d2 = self.operator.shape_in
        self.d1, self.d2 = d1, d2
        self.num_measurements = self.operator.num_measurements
        dims = (d2, *self.widths, d1)
        shapes = [(dims[l + 1], dims[l]) for l in range(depth)]
        # Scaled-trace weights: each block divided by the ambient dimension it touches.
        weights = [1.0 / (d1 * d2)] if depth == 1 else [1.0 / d2, *[1.0] * (depth - 2), 1.0 / d1]
        super().__init__(
            names=tuple(f"W_{l + 1}" for l in range(depth)),
            shapes=shapes,
            block_weights=weights,
            dtype=instance.dtype,
            device=instance.device,
        )
        self._weights: tuple[torch.Tensor, torch.Tensor] | None = None

    def rescaling_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (D1^2, D2^2) (vectors for diagonal kinds), built once and cached."""
        if self._weights is None:
            self._weights = rescaling_weights(self.instance)
        return self._weights

    def end_to_end(self, params: Params) -> torch.Tensor:
        """Return E = W_N ... W_1 (d1, d2)."""
        return typing.cast(torch.Tensor, self._chain(self.check_params(params))[0][-1])

    def residual(self, params: Params) -> torch.Tensor:
        """Return res = A(W_N ... W_1) - b, shape (m,)."""
        return self._residual(self.check_params(params))

    # ---- products ---------------------------------------------------------------------------------
    @staticmethod
    def _chain(params: Params) -> tuple[list[_Maybe], list[_Maybe]]:
        """Q[l] = W_l ... W_1 (Q[0] = None) and P[l] = W_N ... W_{l+1} (P[N] = None), 0-based.

        In the notation of the docstring (1-based), Q_l = Q[l - 1] and P_l = P[l].
        """
        N = len(params)
        Q: list[_Maybe] = [None]
        for W in params:
            Q.append(_matmul(W, Q[-1]))
        P: list[_Maybe] = [None] * (N + 1)
        for l in range(N - 1, -1, -1):
            P[l] = _matmul(P[l + 1], params[l])
        return Q, P

    def _residual(self, params: Params) -> torch.Tensor:
        Q, _ = self._chain(params)
        return self._apply_end_to_end(params, Q) - self.instance.observations

    def _apply_end_to_end(self, params: Params, Q: list[_Maybe]) -> torch.Tensor:
        if len(params) == 1:
            return self.operator.apply(params[0])
        # E = W_N (W_{N-1} ... W_1) = W_N Q[N-1]: a factored application.
        return self.operator.apply_factored(params[-1], typing.cast(torch.Tensor, Q[-2]).mT)

    # ---- objective --------------------------------------------------------------------------------
    def _value(self, params: Params) -> torch.Tensor:
        return self._residual(params).square().sum() / self.num_measurements

    def _grad(self, params: Params) -> Params:
        Q, P = self._chain(params)
        (G,) = adjoint_actions(self.operator, self._apply_end_to_end(params, Q) - self.instance.observations)
        scale = 2.0 / self.num_measurements
        return tuple(scale * G.sandwich(P[l + 1], Q[l]) for l in range(len(params)))

    def _hvp(self, params: Params, direction: Params) -> Params:
        N = len(params)
        Q, P = self._chain(params)
        res = self._apply_end_to_end(params, Q) - self.instance.observations
        # First-order changes dQ[l] of Q[l] = W_l ... W_1 and dP[l] of P[l] = W_N ... W_{l+1}.
        dQ: list[_Maybe] = [None]
        for l in range(N):
            terms = [_matmul(direction[l], Q[l]), _matmul(params[l], dQ[l]) if dQ[l] is not None else None]
            dQ.append(_sum(terms))
        dP: list[_Maybe] = [None] * (N + 1)
        for l in range(N - 1, -1, -1):
            terms = [
                _matmul(P[l + 1], direction[l]),
                _matmul(dP[l + 1], params[l]) if dP[l + 1] is not None else None,
            ]
            dP[l] = _sum(terms)
        y = self._apply_direction(P, Q, direction)
        Y, G = adjoint_actions(self.operator, y, res)
        scale = 2.0 / self.num_measurements
        out = []
        for l in range(N):
            term = Y.sandwich(P[l + 1], Q[l])
            if dP[l + 1] is not None:
                term = term + G.sandwich(dP[l + 1], Q[l])
            if dQ[l] is not None:
                term = term + G.sandwich(P[l + 1], dQ[l])
            out.append(scale * term)
        return tuple(out)

    def _apply_direction(self, P: list[_Maybe], Q: list[_Maybe], direction: Params) -> torch.Tensor:
        """A(dE) with dE = sum_l P_l V_l Q_l: one pass for dense kinds, factored blocks otherwise."""
        N = len(direction)
        if forms_dense_apply(self.operator):
            # The operator forms L R^T anyway: build dE once and apply A once.
            blocks = [_matmul(_matmul(P[l + 1], direction[l]), Q[l]) for l in range(N)]
            return self.operator.apply(typing.cast(torch.Tensor, _sum(blocks)))
        return sum(
            (self._apply_block(P[l + 1], direction[l], Q[l]) for l in range(N)),
            start=self.instance.observations.new_zeros(self.num_measurements),
        )

    def _apply_block(self, P: _Maybe, V: torch.Tensor, Q: _Maybe) -> torch.Tensor:
        """A(P V Q) (None = identity) with a factored application where possible."""
        op = self.operator
        if Q is not None:
            return op.apply_factored(V if P is None else P @ V, Q.mT)
        if P is not None:
            return op.apply_factored(P, V.mT)
        return op.apply(V)

    def _block_traces(self, params: Params) -> Params:
        N = len(params)
        Q, P = self._chain(params)
        scale = 2.0 / self.num_measurements
        D1_sq, D2_sq = self.rescaling_weights()
        traces = []
        for l in range(N):
            left, right = P[l + 1], Q[l]
            if left is None and right is None:
                # N = 1: sum_s ||A_s||_F^2 = m d2 tr(D1^2).
                diagonal = D1_sq if D1_sq.ndim == 1 else D1_sq.diagonal()
                traces.append(2.0 * self.d2 * diagonal.sum())
            elif left is None:
                traces.append(
                    2.0 * self.d1 * weighted_square_norm(D2_sq, typing.cast(torch.Tensor, right).mT)
                )
            elif right is None:
                traces.append(2.0 * self.d2 * weighted_square_norm(D1_sq, left))
            else:
                traces.append(scale * self.operator.sandwich_norms(left, right))
        return tuple(traces)


def _sum(terms: Sequence[_Maybe]) -> _Maybe:
    present = [t for t in terms if t is not None]
    if not present:
        return None
    total = present[0]
    for t in present[1:]:
        total = total + t
    return total


def deep_trace_lower_bound(E: torch.Tensor, depth: int) -> torch.Tensor:
    r"""Return N (d_0 d_N)^{1/N} ||E||_*^{2(N-1)/N}, the Gatmiry et al. (2023) bound for depth N.

    For every factorization E = W_N ... W_1 of a (d_N, d_0) matrix E,

        sum_{l=1}^N ||W_N ... W_{l+1}||_F^2 ||W_{l-1} ... W_1||_F^2 >= N (d_0 d_N)^{1/N} ||E||_*^{2(N-1)/N}.

    Proof: the l = N and l = 1 terms carry ||I_{d_N}||_F^2 = d_N and ||I_{d_0}||_F^2 = d_0; AM-GM over the
    N terms and ||P_l||_F ||Q_{l+1}||_F >= ||P_l Q_{l+1}||_* = ||E||_* give the bound. It is the minimum:
    :func:`deep_flat_factors` attains it for every E and every depth (all N terms equal, and each pair
    (P_l, Q_{l+1}) a balanced factorization of E). The optimal inner layers are scaled partial isometries,
    so the optimum is not the "balanced" factorization with S^{1/N} in every layer for N >= 3.

    For :class:`DeepFactorization` with the identity operator (m = d_0 d_N and the (1/m) normalization),
    the left-hand side times 2/m is exactly ``hessian_trace``, so hessian_trace >= (2/m) times this bound.

    Args:
        E: the end-to-end matrix, shape (d_N, d_0).
        depth: N >= 1.

    Returns:
        The bound as a 0-dim tensor (dtype and device of E).

    Raises:
        InputTypeError: if ``E`` is not a floating tensor or ``depth`` not an integer.
        InputDataError: if ``E`` is not 2-D or not finite, or ``depth < 1``.

    Example:
        >>> E = torch.diag(torch.tensor([3.0, 0.0], dtype=torch.float64))
        >>> float(deep_trace_lower_bound(E, 2))  # 2 sqrt(2 * 2) * 3
        12.0

    References:
        K. Gatmiry, Z. Li, C.-Y. Chuang, S. Reddi, T. Ma, S. Jegelka. The inductive bias of flatness
        regularization for deep matrix factorization. NeurIPS 2023 (arXiv:2306.13239).
    """
    check_tensor("E", E, shape=(None, None))
    N = check_int_in_range("depth", depth, low=1)
    d_N, d_0 = E.shape
    nuclear = torch.linalg.matrix_norm(E, ord="nuc")
    return N * float(d_0 * d_N) ** (1.0 / N) * nuclear ** (2.0 * (N - 1) / N)


def deep_flat_factors(E: torch.Tensor, depth: int, widths: Sequence[int] | int | None = None) -> Params:
    r"""Return the factorization of E that minimizes sum_l ||P_l||_F^2 ||Q_l||_F^2 (Gatmiry et al. 2023).

    With the compact SVD E = U S V^T of rank r, c = ||E||_* = tr S and beta = (c / sqrt(d_0 d_N))^{1/N}:
    W_N = beta sqrt(d_N / c) U S^{1/2}, inner layers beta I_r, W_1 = beta sqrt(d_0 / c) S^{1/2} V^T, each
    zero-padded to the widths. Every term of the sum then equals (d_0 d_N)^{1/N} c^{2(N-1)/N}, so the sum
    equals :func:`deep_trace_lower_bound`: for the identity operator these are the flattest (minimal
    Hessian trace) zero-loss parameters of :class:`DeepFactorization`.

    Args:
        E: the (d_N, d_0) matrix to factor.
        depth: N >= 1.
        widths: the inner sizes (each >= rank E), or one integer; default rank E.

    Returns:
        (W_1, ..., W_N) with W_N ... W_1 = E (dtype and device of E).

    Raises:
        InputDataError: if a width is smaller than rank E, or as :class:`DeepFactorization` for bad
            ``depth`` / ``widths``.

    Example:
        >>> E = torch.diag(torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64))
        >>> W = deep_flat_factors(E, 3)
        >>> bool(torch.allclose(W[2] @ W[1] @ W[0], E))
        True
    """
    check_tensor("E", E, shape=(None, None))
    N = check_int_in_range("depth", depth, low=1)
    U, S, Vh = torch.linalg.svd(E, full_matrices=False)
    tolerance = float(S.max()) * max(E.shape) * torch.finfo(E.dtype).eps if S.numel() else 0.0
    rank = int(S.gt(tolerance).sum())
    inner = _check_widths(N, max(rank, 1) if widths is None else widths)
    if any(w < rank for w in inner):
        raise InputDataError(f"widths must be >= rank E = {rank}; got widths={inner}.")
    if N == 1:
        return (E.clone(),)
    d_N, d_0 = E.shape
    U, S, Vh = U[:, :rank], S[:rank], Vh[:rank]
    nuclear = S.sum()
    if rank == 0:
        dims = (d_0, *inner, d_N)
        return tuple(E.new_zeros(dims[l + 1], dims[l]) for l in range(N))
    beta = (nuclear / (d_0 * d_N) ** 0.5) ** (1.0 / N)
    root = S.sqrt()
    W_last = E.new_zeros(d_N, inner[-1])
    W_last[:, :rank] = beta * (d_N / nuclear).sqrt() * U * root
    W_first = E.new_zeros(inner[0], d_0)
    W_first[:rank] = beta * (d_0 / nuclear).sqrt() * root.unsqueeze(-1) * Vh
    middle = []
    for l in range(1, N - 1):
        W = E.new_zeros(inner[l], inner[l - 1])
        W[:rank, :rank] = beta * torch.eye(rank, dtype=E.dtype, device=E.device)
        middle.append(W)
    return (W_first, *middle, W_last)

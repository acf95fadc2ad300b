"""Hadamard (diagonal) factorization x = v_1 ⊙ ... ⊙ v_k for sparse recovery: the depth study."""

from __future__ import annotations

import typing

import torch

from flatminima._checks import check_int_in_range, check_tensor
from flatminima.errors import InputDataError
from flatminima.objectives.base import Objective, Params, check_instance
from flatminima.operators import VectorOperator
from flatminima.problems import Instance


def leave_one_out_products(factors: Params) -> list[torch.Tensor]:
    """Return [⊙_{i != l} v_i for l = 1..k] by prefix and suffix products (no division, zeros allowed)."""
    k = len(factors)
    ones = torch.ones_like(factors[0])
    prefix = [ones]
    for v in factors[:-1]:
        prefix.append(prefix[-1] * v)
    suffix = [ones] * k
    for l in range(k - 2, -1, -1):
        suffix[l] = suffix[l + 1] * factors[l + 1]
    return [prefix[l] * suffix[l] for l in range(k)]


def hadamard_flat_penalty(x: torch.Tensor, *, depth: int, scales: torch.Tensor) -> torch.Tensor:
    r"""Return 2 k sum_j D_jj^2 |x_j|^{2 - 2/k}: the smallest Hessian trace over factorizations of x.

    For f = (1/m)||A(v_1 ⊙ ... ⊙ v_k) - b||^2 the trace is 2 sum_l ||D p_l||^2 with
    p_l = ⊙_{i != l} v_i (see :class:`HadamardFactorization`). For each coordinate, AM-GM gives
    sum_l p_{lj}^2 >= k (prod_l p_{lj}^2)^{1/k} = k |x_j|^{2(k-1)/k}, with equality iff all |v_{ij}| are
    equal to |x_j|^{1/k} (:func:`balanced_hadamard_factors`). So the flattest factorization of x has
    trace 2 k sum_j D_jj^2 |x_j|^p with p = 2 - 2/k, and flat interpolating solutions solve
    min_x sum_j D_jj^2 |x_j|^p s.t. A x = b: a weighted l1 norm for k = 2 (sparse, recovers under RIP),
    a strictly convex l_p penalty with 1 < p < 2 for k >= 3 (generically dense; fails to recover).
    For k = 1 the value is 2 sum_j D_jj^2 (x^0 = 1), the constant trace of a linear model.

    Args:
        x: the vector, shape (d,).
        depth: k >= 1.
        scales: the diagonal of D, shape (d,) (``VectorOperator.column_scales()``).

    Returns:
        A 0-dim tensor.

    Raises:
        InputTypeError, InputDataError: on a non-tensor, wrong shapes, non-finite entries, k < 1.

    Example:
        >>> x = torch.tensor([4.0, 0.0, -1.0], dtype=torch.float64)
        >>> float(hadamard_flat_penalty(x, depth=2, scales=torch.ones(3, dtype=torch.float64)))
        20.0

    References:
        L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
        recovery. Information and Inference 13(2), 2024, Section 9 (arXiv:2203.03756).
    """
    check_tensor("x", x, shape=(None,))
    check_tensor("scales", scales, shape=(x.shape[0],))
    k = check_int_in_range("depth", depth, low=1)
    return 2.0 * k * (scales.square() * x.abs().pow(2.0 - 2.0 / k)).sum()


def balanced_hadamard_factors(x: torch.Tensor, *, depth: int) -> Params:
    """Return the balanced factorization v_1 = sign(x) |x|^{1/k}, v_i = |x|^{1/k} (i >= 2) of x (d,).

    It attains :func:`hadamard_flat_penalty` (the minimal trace over factorizations of x).
    """
    check_tensor("x", x, shape=(None,))
    k = check_int_in_range("depth", depth, low=1)
    root = x.abs().pow(1.0 / k)
    return (torch.sign(x) * root, *[root.clone() for _ in range(k - 1)])


@typing.final
class HadamardFactorization(Objective):
    r"""f(v_1, ..., v_k) = (1/m) ||A x - b||^2 with x = v_1 ⊙ ... ⊙ v_k, each v_l of shape (d,).

    With res = A x - b, g = A^T res and the leave-one-out products p_l = ⊙_{i != l} v_i:

    * grad_{v_l} f = (2/m) g ⊙ p_l;
    * along a direction (u_1, ..., u_k), dx = sum_l u_l ⊙ p_l and the HVP is
      (H u)_l = (2/m) [ (A^T A dx) ⊙ p_l + g ⊙ sum_{i != l} u_i ⊙ p_{l i} ],
      p_{l i} = ⊙_{j not in {l, i}} v_j;
    * the exact trace **at every point** (x is linear in each single factor, so no residual term
      reaches the diagonal): tr grad^2 f = 2 sum_l ||D p_l||^2, the v_l-block trace being
      2 ||D p_l||^2, with D = diag(||a_j||) / sqrt(m) (``VectorOperator.column_scales()``);
    * the scaled trace averages each block over its d rows: str = tr / d.

    :meth:`flat_penalty` gives the minimum of the trace over the factorizations of a given x.

    Args:
        instance: a vector instance (``SparseRecovery``): operator with shape_in (d, 1).
        depth: the number of factors k >= 1.

    Raises:
        InputDataError: if the operator does not measure vectors (shape_in[1] != 1), or ``depth < 1``.

    Example:
        >>> from flatminima.problems import SparseRecovery
        >>> g = torch.Generator().manual_seed(0)
        >>> inst = SparseRecovery(dim=6, sparsity=2, num_measurements=4).sample(generator=g)
        >>> obj = HadamardFactorization(inst, depth=3)
        >>> v = balanced_hadamard_factors(inst.ground_truth[:, 0], depth=3)
        >>> bool(torch.isclose(obj.hessian_trace(v), obj.flat_penalty(inst.ground_truth[:, 0])))
        True

    References:
        L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
        recovery. Information and Inference 13(2), 2024, Section 9 (arXiv:2203.03756).
        B. Woodworth et al. Kernel and rich regimes in overparametrized models. COLT 2020.
    """

    def __init__(self, instance: Instance, *, depth: int) -> None:
        self.instance = check_instance(instance)
        self.depth = check_int_in_range("depth", depth, low=1)
        self.operator = instance.operator
        d, columns = self.operator.shape_in
        if columns != 1:
            raise InputDataError(
                "HadamardFactorization needs an operator on vectors (shape_in (d, 1), e.g. "
                f"SparseRecovery); got shape_in=({d}, {columns}). Use a matrix objective instead."
            )
        self.dim = d
        self.num_measurements = self.operator.num_measurements
        super().__init__(
            names=tuple(f"v_{l + 1}" for l in range(depth)),
            shapes=[(d,)] * depth,
            block_weights=[1.0 / d] * depth,
            dtype=instance.dtype,
            device=instance.device,
        )
        self._scales_sq: torch.Tensor | None = None

    def scales_squared(self) -> torch.Tensor:
        """Return the diagonal of D^2, (1/m) ||A e_j||^2, shape (d,); built once and cached."""
        if self._scales_sq is None:
            operator = self.operator
            if isinstance(operator, VectorOperator):
                self._scales_sq = operator.column_scales().square()
            else:
                # D1^2 = (1/(m * 1)) sum_l A_l A_l^T has diagonal (1/m) ||A e_j||^2 when d2 = 1.
                self._scales_sq = operator.rescaling_squares()[0].diagonal().clone()
        return self._scales_sq

    def flat_penalty(self, x: torch.Tensor) -> torch.Tensor:
        """Return the minimal Hessian trace over factorizations of x (:func:`hadamard_flat_penalty`)."""
        return hadamard_flat_penalty(x, depth=self.depth, scales=self.scales_squared().sqrt())

    def end_to_end(self, params: Params) -> torch.Tensor:
        """Return x = v_1 ⊙ ... ⊙ v_k as a (d, 1) matrix (the shape of ``instance.ground_truth``)."""
        return self._product(self.check_params(params)).unsqueeze(-1)

    @staticmethod
    def _product(params: Params) -> torch.Tensor:
        x = params[0]
        for v in params[1:]:
            x = x * v
        return x

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.operator.apply(x.unsqueeze(-1))

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.operator.adjoint(y).squeeze(-1)

    def _value(self, params: Params) -> torch.Tensor:
        res = self._apply(self._product(params)) - self.instance.observations
        return res.square().sum() / self.num_measurements

    def _grad(self, params: Params) -> Params:
        res = self._apply(self._product(params)) - self.instance.observations
        g = (2.0 / self.num_measurements) * self._adjoint(res)
        return tuple(g * p for p in leave_one_out_products(params))

    def _hvp(self, params: Params, direction: Params) -> Params:
        k = len(params)
        res = self._apply(self._product(params)) - self.instance.observations
        g = self._adjoint(res)
        p = leave_one_out_products(params)
        dx = sum((u * q for u, q in zip(direction, p, strict=True)), start=torch.zeros_like(g))
        curvature = self._adjoint(self._apply(dx))
        out = []
        for l in range(k):
            term = curvature * p[l]
            if k > 1:
                others = params[:l] + params[l + 1 :]
                moves = direction[:l] + direction[l + 1 :]
                # sum_{i != l} u_i ⊙ p_{l i}: the leave-one-out products of the other factors.
                cross = sum(
                    (u * q for u, q in zip(moves, leave_one_out_products(others), strict=True)),
                    start=torch.zeros_like(g),
                )
                term = term + g * cross
            out.append((2.0 / self.num_measurements) * term)
        return tuple(out)

    def _block_traces(self, params: Params) -> Params:
        D_sq = self.scales_squared()
        return tuple(2.0 * (D_sq * q.square()).sum() for q in leave_one_out_products(params))

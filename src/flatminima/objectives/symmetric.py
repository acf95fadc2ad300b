"""Symmetric factorization f(U1, U2) = (1/m) ||A(U1 U1^T - U2 U2^T) - b||^2 (quadratic networks)."""

from __future__ import annotations

import typing
from collections.abc import Sequence

import torch

from flatminima._checks import check_int_in_range
from flatminima.errors import InputDataError, InputTypeError
from flatminima.objectives.base import (
    Objective,
    Params,
    adjoint_actions,
    check_instance,
    rescaling_weights,
    weighted_square_norm,
)
from flatminima.operators import DenseOperator, SymmetricRankOneOperator
from flatminima.problems import Instance


def _check_symmetric_operator(instance: Instance) -> None:
    operator = instance.operator
    d1, d2 = operator.shape_in
    if d1 != d2:
        raise InputDataError(f"SymmetricFactorization needs a square operator; got shape_in=({d1}, {d2}).")
    if isinstance(operator, SymmetricRankOneOperator):
        return
    if isinstance(operator, DenseOperator):
        A = operator.matrices
        if bool(torch.allclose(A, A.mT, rtol=1e-12, atol=1e-12 * float(A.abs().max()))):
            return
        raise InputDataError(
            "SymmetricFactorization needs symmetric sensing matrices A_i; the DenseOperator's "
            "matrices are not symmetric. Symmetrize them, (A_i + A_i^T) / 2, which measures "
            "U1 U1^T - U2 U2^T identically."
        )
    raise InputDataError(
        "SymmetricFactorization needs symmetric sensing matrices A_i: a SymmetricRankOneOperator or "
        f"a DenseOperator with symmetric matrices; got {type(operator).__name__}."
    )


def _check_widths(widths: object) -> tuple[int, int]:
    if isinstance(widths, str) or not isinstance(widths, Sequence) or len(widths) != 2:
        raise InputTypeError(f"widths must be a pair (k1, k2) of integers; got widths={widths!r}.")
    k1 = check_int_in_range("widths[0] (k1)", widths[0], low=0)
    k2 = check_int_in_range("widths[1] (k2)", widths[1], low=0)
    if k1 + k2 < 1:
        raise InputDataError(f"widths must satisfy k1 + k2 >= 1; got widths=({k1}, {k2}).")
    return k1, k2


@typing.final
class SymmetricFactorization(Objective):
    r"""f(U1, U2) = (1/m) sum_i (<A_i, U1 U1^T - U2 U2^T> - b_i)^2 with symmetric A_i.

    The student of a one-hidden-layer network with quadratic activation and output weights +1 on k1
    units, -1 on k2 units (k2 = 0: covariance estimation; k1 = 1, k2 = 0: phase retrieval). With
    X = U1 U1^T - U2 U2^T, res = A(X) - b and the symmetric G = A^*(res):

    * grad_U1 f = (4/m) G U1,  grad_U2 f = -(4/m) G U2;
    * D^2 f[(V1, V2)] = (2/m) ||A(dX)||^2 + (4/m) <G, V1 V1^T - V2 V2^T> with
      dX = V1 U1^T + U1 V1^T - V2 U2^T - U2 V2^T; so with Q = A^*(A(dX)),
      (H V)_U1 = (4/m)(Q U1 + G V1),  (H V)_U2 = -(4/m)(Q U2 + G V2);
    * the exact trace **at every point**: a coordinate direction V1 = e_a e_j^T gives
      (2/m) sum_i (2 (A_i U1)_{aj})^2 + (4/m) G_aa, so, with D^2 = (1/(m d)) sum_i A_i^2,

      tr grad^2 f = 8 d (||D U1||_F^2 + ||D U2||_F^2) + (4/m) (k1 - k2) sum_i res_i tr(A_i),

      with tr(A_i) = A(I)_i. On the zero-loss set the residual term vanishes and
      tr = 8 d (||D U1||^2 + ||D U2||^2) (Ding et al. 2024, Section 7). The U1-block trace is
      8 d ||D U1||^2 + (4/m) k1 <res, A(I)> and the U2-block trace 8 d ||D U2||^2 - (4/m) k2 <res, A(I)>.
    * scaled trace: both blocks have d rows, so str = tr / d.

    Cost: D^2 and A(I) are built once (cached); each trace then needs the residual (one factored
    application, O(m d (k1 + k2)) for x x^T sensing) plus O(d^2 (k1 + k2)).

    For the single-factor PSD model and f = (1/(2m)) sum (...)^2 the residual term is
    (1/m) sum_i 2 k res_i tr(A_i); with the 1/m normalization used here it doubles to (4/m) k res_i tr(A_i),
    and with the two signed factors it becomes (4/m)(k1 - k2) res_i tr(A_i).

    Args:
        instance: an instance with symmetric sensing matrices (``QuadraticNetwork``; a DenseOperator
            with symmetric matrices also works).
        widths: (k1, k2), the numbers of positive and negative units, k1, k2 >= 0, k1 + k2 >= 1.
            k2 = 0 gives U2 of shape (d, 0).

    Raises:
        InputTypeError: if ``widths`` is not a pair of integers.
        InputDataError: if a width is negative, both are zero, or the operator is not symmetric.

    Example:
        >>> from flatminima.problems import QuadraticNetwork
        >>> g = torch.Generator().manual_seed(0)
        >>> inst = QuadraticNetwork(dim=5, num_positive=2, num_measurements=40).sample(generator=g)
        >>> obj = SymmetricFactorization(inst, widths=(2, 0))
        >>> U = (inst.extras["teacher_positive"], torch.zeros(5, 0, dtype=torch.float64))
        >>> float(obj.value(U)) < 1e-20
        True

    References:
        L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
        recovery. Information and Inference 13(2), 2024, Section 7 (arXiv:2203.03756).
        Y. Chen, Y. Chi, A. Goldsmith. Exact and stable covariance estimation from quadratic sampling
        via convex programming. IEEE Trans. Inf. Theory 61(7), 2015.
    """

    def __init__(self, instance: Instance, *, widths: Sequence[int]) -> None:
        self.instance = check_instance(instance)
        self.widths = _check_widths(widths)
        _check_symmetric_operator(instance)
        self.operator = instance.operator
        d = self.operator.shape_in[0]
        self.dim = d
        self.num_measurements = self.operator.num_measurements
        k1, k2 = self.widths
        super().__init__(
            names=("U1", "U2"),
            shapes=((d, k1), (d, k2)),
            block_weights=(1.0 / d, 1.0 / d),
            dtype=instance.dtype,
            device=instance.device,
        )
        self._weights: tuple[torch.Tensor, torch.Tensor] | None = None

    def _trace_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(D^2, A(I)): the rescaling square and the traces tr(A_i), built once."""
        if self._weights is None:
            D_sq, _ = rescaling_weights(self.instance)
            eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
            self._weights = (D_sq, self.operator.apply(eye))
        return self._weights

    def end_to_end(self, params: Params) -> torch.Tensor:
        """Return the symmetric matrix X = U1 U1^T - U2 U2^T (d, d)."""
        U1, U2 = self.check_params(params)
        return U1 @ U1.mT - U2 @ U2.mT

    def residual(self, params: Params) -> torch.Tensor:
        """Return res = A(U1 U1^T - U2 U2^T) - b, shape (m,)."""
        U1, U2 = self.check_params(params)
        return self._residual(U1, U2)

    def _residual(self, U1: torch.Tensor, U2: torch.Tensor) -> torch.Tensor:
        op = self.operator
        # A(U1 U1^T - U2 U2^T) = A([U1, U2] [U1, -U2]^T): one factored application.
        left = torch.cat([U1, U2], dim=-1)
        right = torch.cat([U1, -U2], dim=-1)
        return op.apply_factored(left, right) - self.instance.observations

    def _value(self, params: Params) -> torch.Tensor:
        U1, U2 = params
        return self._residual(U1, U2).square().sum() / self.num_measurements

    def _grad(self, params: Params) -> Params:
        U1, U2 = params
        (G,) = adjoint_actions(self.operator, self._residual(U1, U2))
        scale = 4.0 / self.num_measurements
        return scale * G.matmul(U1), -scale * G.matmul(U2)

    def _hvp(self, params: Params, direction: Params) -> Params:
        U1, U2 = params
        V1, V2 = direction
        op = self.operator
        res = self._residual(U1, U2)
        # dX = V1 U1^T + U1 V1^T - V2 U2^T - U2 V2^T = [V1, U1, V2, U2] [U1, V1, -U2, -V2]^T.
        left = torch.cat([V1, U1, V2, U2], dim=-1)
        right = torch.cat([U1, V1, -U2, -V2], dim=-1)
        y = op.apply_factored(left, right)
        Q, G = adjoint_actions(op, y, res)
        scale = 4.0 / self.num_measurements
        return scale * (Q.matmul(U1) + G.matmul(V1)), -scale * (Q.matmul(U2) + G.matmul(V2))

    def _block_traces(self, params: Params) -> Params:
        U1, U2 = params
        D_sq, traces_A = self._trace_data()
        k1, k2 = self.widths
        residual_term = 4.0 / self.num_measurements * (self._residual(U1, U2) @ traces_A)
        trace_1 = 8.0 * self.dim * weighted_square_norm(D_sq, U1) + k1 * residual_term
        trace_2 = 8.0 * self.dim * weighted_square_norm(D_sq, U2) - k2 * residual_term
        return trace_1, trace_2

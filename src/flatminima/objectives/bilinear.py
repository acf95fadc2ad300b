"""The bilinear factorization f(L, R) = (1/m) ||A(L R^T) - b||^2 with its exact curvature."""

from __future__ import annotations

import typing

import torch

from flatminima._checks import check_int_in_range
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


@typing.final
class BilinearFactorization(Objective):
    r"""f(L, R) = (1/m) ||A(L R^T) - b||^2 over L (d1, k) and R (d2, k), with closed-form curvature.

    With the residual res = A(L R^T) - b and G = A^*(res) (Ding et al. 2024, Lemma 3.1):

    * grad_L f = (2/m) G R,  grad_R f = (2/m) G^T L;
    * D^2 f[(dL, dR)] = (2/m) ||A(dL R^T + L dR^T)||^2 + (4/m) <res, A(dL dR^T)>, so with
      Q = A^*(A(dL R^T + L dR^T)) the Hessian-vector product is
      (H d)_L = (2/m)(Q R + G dR),  (H d)_R = (2/m)(Q^T L + G^T dL);
    * **at every point** (a coordinate direction moves one block only, so dL dR^T = 0 on the diagonal
      and the residual term never reaches it), the L-block trace is 2 d1 ||D2 R||_F^2, the R-block
      trace is 2 d2 ||D1 L||_F^2, hence tr grad^2 f = 2 (d2 ||D1 L||_F^2 + d1 ||D2 R||_F^2) and the
      scaled trace (blocks averaged over their d1 and d2 rows) is str = 2 (||D1 L||_F^2 + ||D2 R||_F^2),

    where D1^2 = (1/(m d2)) sum_l A_l A_l^T and D2^2 = (1/(m d1)) sum_l A_l^T A_l are the operator's
    rescaling matrices. All products with G and Q go through the operator's factored routines
    (``apply_factored``, ``adjoint_matmul``, ``adjoint_t_matmul``), so nothing d1 x d2 is formed for
    structured operators. D1^2, D2^2 are built once (on the first trace; cached by the operator and
    here); each trace then costs O((d1^2 + d2^2) k), or O((d1 + d2) k) for diagonal kinds (entry
    masks, identity), independently of m.

    Args:
        instance: a matrix instance (sensing, bilinear sensing, completion, ...), b = observations.
        width: the factor width k >= 1.

    Raises:
        InputTypeError: if ``instance`` is not an Instance or ``width`` not an integer.
        InputDataError: if ``width < 1``.

    Example:
        >>> from flatminima.problems import MatrixSensing
        >>> g = torch.Generator().manual_seed(0)
        >>> inst = MatrixSensing(shape=(6, 5), rank=2, num_measurements=40).sample(generator=g)
        >>> obj = BilinearFactorization(inst, width=3)
        >>> L, R = obj.random_params(generator=g)
        >>> D1, D2 = inst.operator.rescaling()
        >>> s = 2 * (torch.linalg.matrix_norm(D1 @ L) ** 2 + torch.linalg.matrix_norm(D2 @ R) ** 2)
        >>> bool(torch.isclose(obj.scaled_trace((L, R)), s))
        True

    References:
        L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
        recovery. Information and Inference 13(2), 2024, Lemma 3.1 (arXiv:2203.03756).
    """

    def __init__(self, instance: Instance, *, width: int) -> None:
        self.instance = check_instance(instance)
        self.width = check_int_in_range("width", width, low=1)
        self.operator = instance.operator
        d1, d2 = self.operator.shape_in
        self.d1, self.d2 = d1, d2
        self.num_measurements = self.operator.num_measurements
        super().__init__(
            names=("L", "R"),
            shapes=((d1, width), (d2, width)),
            block_weights=(1.0 / d1, 1.0 / d2),
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
        """Return the matrix X = L R^T (d1, d2) that the factors represent."""
        L, R = self.check_params(params)
        return L @ R.mT

    def residual(self, params: Params) -> torch.Tensor:
        """Return res = A(L R^T) - b, shape (m,)."""
        L, R = self.check_params(params)
        return self._residual(L, R)

    def _residual(self, L: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        return self.operator.apply_factored(L, R) - self.instance.observations

    def _value(self, params: Params) -> torch.Tensor:
        L, R = params
        return self._residual(L, R).square().sum() / self.num_measurements

    def _grad(self, params: Params) -> Params:
        L, R = params
        (G,) = adjoint_actions(self.operator, self._residual(L, R))
        scale = 2.0 / self.num_measurements
        return scale * G.matmul(R), scale * G.t_matmul(L)

    def _hvp(self, params: Params, direction: Params) -> Params:
        L, R = params
        dL, dR = direction
        op = self.operator
        if forms_dense_apply(op):
            # The operator forms L R^T anyway: one batched pass gives A(L R^T) and A(dL R^T + L dR^T).
            both = op.apply(torch.stack([L @ R.mT, dL @ R.mT + L @ dR.mT]))
            res, y = both[0] - self.instance.observations, both[1]
        else:
            res = self._residual(L, R)
            # A(dL R^T + L dR^T) = A([dL, L] [R, dR]^T), one factored application.
            y = op.apply_factored(torch.cat([dL, L], dim=-1), torch.cat([R, dR], dim=-1))
        Q, G = adjoint_actions(op, y, res)
        scale = 2.0 / self.num_measurements
        return scale * (Q.matmul(R) + G.matmul(dR)), scale * (Q.t_matmul(L) + G.t_matmul(dL))

    def hessian_quadratic_forms(self, params: Params, directions: Params) -> torch.Tensor:
        """Return q_j = v_j^T (grad^2 f) v_j for a batch of directions v_j = (dL_j, dR_j), shape (b,).

        q = (2/m) ||A(dL R^T + L dR^T)||^2 + (4/m) <A^*(res), dL dR^T>: one application of A per direction
        (a Hessian-vector product needs A and A^*), with A^*(res) formed once for the batch. Hutchinson
        estimators need only these numbers, so they run at half the cost of Hessian-vector products.

        Args:
            params: the point (L, R).
            directions: (dL, dR) with a leading batch dimension b, shapes (b, d1, k) and (b, d2, k).

        Raises:
            InputTypeError: if a direction is not a floating tensor.
            InputDataError: if the directions' shapes, dtype or device do not match ``params``, or an entry
                is not finite (see :meth:`~flatminima.objectives.base.Objective.check_directions`).
        """
        L, R = self.check_params(params)
        dL, dR = self.check_directions(directions)
        op = self.operator
        res = self._residual(L, R)
        (G,) = adjoint_actions(op, res)
        if forms_dense_apply(op):  # one batched pass over the operator's data
            y = op.apply(dL @ R.mT + L @ dR.mT)
            cross = (dL * G.matmul(dR)).sum(dim=(-2, -1))
        else:  # factored applications, one direction at a time (O(m (d1 + d2) k) each)
            pairs = list(zip(dL, dR, strict=True))
            y = torch.stack(
                [op.apply_factored(torch.cat([a, L], -1), torch.cat([R, c], -1)) for a, c in pairs]
            )
            cross = torch.stack([(a * G.matmul(c)).sum() for a, c in pairs])
        return (2.0 / self.num_measurements) * (y.square().sum(dim=-1) + 2.0 * cross)

    def _block_traces(self, params: Params) -> Params:
        L, R = params
        D1_sq, D2_sq = self.rescaling_weights()
        trace_L = 2.0 * self.d1 * weighted_square_norm(D2_sq, R)
        trace_R = 2.0 * self.d2 * weighted_square_norm(D1_sq, L)
        return trace_L, trace_R

"""Robust PCA loss f(L, R) = dist^2(Y - L R^T, Omega) with Omega an l1 ball, and its local C^2 model."""

from __future__ import annotations

import typing

import torch

from flatminima._checks import check_int_in_range, check_real, check_tensor
from flatminima.errors import InputDataError
from flatminima.objectives.base import Objective, Params, ValueFunction, check_instance
from flatminima.operators import IdentityOperator
from flatminima.problems import Instance


def project_l1_ball(z: torch.Tensor, radius: float | torch.Tensor) -> torch.Tensor:
    r"""Return the Euclidean projection of z (any shape, all entries) onto {s : ||s||_1 <= radius}.

    Sort-and-threshold (Duchi et al. 2008): with u = |z| sorted decreasingly and c_j = u_1 + ... + u_j,
    rho = max{j : u_j > (c_j - radius) / j}, theta = max(0, (c_rho - radius) / rho) and
    P(z) = sign(z) max(|z| - theta, 0). Inside the ball theta = 0 and P(z) = z. The computation has no
    data-dependent Python branch, so it runs inside ``torch.func`` transforms, and autograd through it
    gives grad dist^2(z) = 2 (z - P(z)). Cost O(n log n) for n entries.

    Args:
        z: a floating tensor (flattened for the projection; the result has z's shape).
        radius: the l1 radius, >= 0.

    Returns:
        P(z), same shape, dtype and device as z.

    Raises:
        InputTypeError: if z is not a floating tensor or radius not a real number.
        InputDataError: if radius is negative or not finite.

    Example:
        >>> project_l1_ball(torch.tensor([3.0, -1.0, 0.5]), 2.0)
        tensor([2., -0., 0.])

    References:
        J. Duchi, S. Shalev-Shwartz, Y. Singer, T. Chandra. Efficient projections onto the l1-ball for
        learning in high dimensions. ICML 2008.
    """
    check_tensor("z", z, finite=False)
    if isinstance(radius, torch.Tensor):
        radius = float(radius)
    radius = check_real("radius", radius, low=0.0)
    flat = z.reshape(-1)
    if flat.numel() == 0:
        return z.clone()
    u = flat.abs().sort(descending=True).values
    cumulative = u.cumsum(0)
    index = torch.arange(1, u.numel() + 1, dtype=z.dtype, device=z.device)
    active = u * index > cumulative - radius
    rho = (active.to(torch.int64) * torch.arange(1, u.numel() + 1, device=z.device)).max().clamp_min(1)
    theta = ((cumulative.gather(0, (rho - 1).reshape(1)) - radius) / rho.to(z.dtype)).clamp_min(0.0)
    return (torch.sign(flat) * (flat.abs() - theta).clamp_min(0.0)).reshape(z.shape)


@typing.final
class RobustPCALoss(Objective):
    r"""f(L, R) = dist^2(Y - L R^T, Omega), Omega = {S : ||S||_{1,1} <= tau}, over L (d1, k), R (d2, k).

    Y is the observed matrix (``instance.observations`` reshaped to (d1, d2)) and tau the l1 radius
    (``instance.metadata["outlier_l1_norm"]`` = ||S_true||_{1,1}, or ``radius=``). With Z = Y - L R^T and
    the projection P onto Omega (:func:`project_l1_ball`), E = Z - P(Z):

    * value f = ||E||_F^2 (no 1/m; the paper's normalization), zero exactly on
      S = {(L, R) : Y - L R^T in Omega};
    * grad_L f = -2 E R, grad_R f = -2 E^T L (f is C^1 with grad dist^2(Z) = 2 (Z - P(Z)));
    * f is not C^2, so the curvature is defined by the **local C^2 model** centred at the point
      (L~, R~) itself (Ding et al. 2024, Section 6):

      f_{L~,R~}(L, R) = ||Y - L R^T - P(Y - L~ R~^T)||_F^2,

      which majorizes f, equals it at (L~, R~) and has the same gradient there. ``hvp``,
      ``hessian_trace`` and ``scaled_trace`` are those of the model at the point: with E as above,
      (H d)_L = 2 (Q R - E dR), (H d)_R = 2 (Q^T L - E^T dL) for Q = dL R^T + L dR^T;
      tr = 2 (d2 ||L||_F^2 + d1 ||R||_F^2) at every point (the L-block trace is 2 d1 ||R||^2) and
      str = 2 (||L||_F^2 + ||R||_F^2). On S, E = 0 and the model's Hessian is the A = identity
      Hessian 2 ||dL R^T + L dR^T||^2, so flat = norm-minimal = balanced.

    Args:
        instance: a robust PCA instance (identity operator, b = vec(Y)).
        width: the factor width k >= 1.
        radius: the l1 radius tau >= 0; defaults to ``instance.metadata["outlier_l1_norm"]``.

    Raises:
        InputDataError: if the operator is not the identity, the radius is missing or negative, or
            ``width < 1``.

    Example:
        >>> from flatminima.problems import RobustPCA
        >>> g = torch.Generator().manual_seed(0)
        >>> inst = RobustPCA(shape=(6, 5), rank=1, outliers_per_line=1).sample(generator=g)
        >>> obj = RobustPCALoss(inst, width=2)
        >>> L, R = obj.random_params(generator=g)
        >>> bool(torch.isclose(obj.scaled_trace((L, R)), 2 * (L.square().sum() + R.square().sum())))
        True

    References:
        L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
        recovery. Information and Inference 13(2), 2024, Section 6 (arXiv:2203.03756).
        Y. Chen, A. Jalali, S. Sanghavi, C. Caramanis. Low-rank matrix recovery from errors and
        erasures. IEEE Trans. Inf. Theory 59(7), 2013.
    """

    def __init__(self, instance: Instance, *, width: int, radius: float | None = None) -> None:
        self.instance = check_instance(instance)
        self.width = check_int_in_range("width", width, low=1)
        operator = instance.operator
        if not isinstance(operator, IdentityOperator):
            raise InputDataError(
                "RobustPCALoss needs an instance observed through the identity (e.g. RobustPCA); got "
                f"{type(operator).__name__}."
            )
        if radius is None:
            if "outlier_l1_norm" not in instance.metadata:
                raise InputDataError(
                    "RobustPCALoss needs the l1 radius: give radius=... or an instance whose metadata "
                    "has 'outlier_l1_norm'."
                )
            radius = instance.metadata["outlier_l1_norm"]
        self.radius = check_real("radius", radius, low=0.0)
        self.operator = operator
        d1, d2 = operator.shape_in
        self.d1, self.d2 = d1, d2
        self.observed = operator.adjoint(instance.observations)
        super().__init__(
            names=("L", "R"),
            shapes=((d1, width), (d2, width)),
            block_weights=(1.0 / d1, 1.0 / d2),
            dtype=instance.dtype,
            device=instance.device,
        )

    def end_to_end(self, params: Params) -> torch.Tensor:
        """Return the low-rank estimate X = L R^T (d1, d2)."""
        L, R = self.check_params(params)
        return L @ R.mT

    def outliers(self, params: Params) -> torch.Tensor:
        """Return the outlier estimate P(Y - L R^T) (d1, d2), the nearest point of Omega."""
        L, R = self.check_params(params)
        return project_l1_ball(self.observed - L @ R.mT, self.radius)

    def _excess(self, L: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        Z = self.observed - L @ R.mT
        return Z - project_l1_ball(Z, self.radius)

    def _value(self, params: Params) -> torch.Tensor:
        L, R = params
        return self._excess(L, R).square().sum()

    def _grad(self, params: Params) -> Params:
        L, R = params
        E = self._excess(L, R)
        return -2.0 * E @ R, -2.0 * E.mT @ L

    def _hvp(self, params: Params, direction: Params) -> Params:
        L, R = params
        dL, dR = direction
        E = self._excess(L, R)
        Q = dL @ R.mT + L @ dR.mT
        return 2.0 * (Q @ R - E @ dR), 2.0 * (Q.mT @ L - E.mT @ dL)

    def _block_traces(self, params: Params) -> Params:
        L, R = params
        return 2.0 * self.d1 * R.square().sum(), 2.0 * self.d2 * L.square().sum()

    def _curvature_model(self, params: Params) -> ValueFunction:
        L0, R0 = params
        target = (self.observed - project_l1_ball(self.observed - L0 @ R0.mT, self.radius)).detach()

        def model(point: Params) -> torch.Tensor:
            L, R = point
            return (target - L @ R.mT).square().sum()

        return model

"""From a problem instance to a convex relaxation min ||Z||_* s.t. Z in C (flat or norm-minimal).

* matrix_sensing, bilinear_sensing, matrix_completion: C = {B(Z) = b} (or {||B(Z) - b|| <= eps}),
  B = A(D1^{-1} . D2^{-1}) with the operator's rescaling matrices;
* quadratic_network: the same with Z symmetric and D1 = D2 = D;
* robust_pca: C = {||Y - Z||_{1,1} <= ||S_true||_{1,1}} without rescaling (flat = norm-minimal there,
  Ding et al. 2024, Section 7).

For ``relaxation="nuclear_norm"`` the rescaling is the identity (plain NNM). The recovered matrix is
X = D1^{-1} Z D2^{-1}.

References:
    Ding, Drusvyatskiy, Fazel, Harchaoui (2024): eq. (19) (P_flat), Section 5 (weighted trace norm),
    Section 6 (robust PCA), Section 7 (quadratic networks), Appendix A (noise).
"""

from __future__ import annotations

import dataclasses

import torch

from flatminima.errors import ConfigurationError, InputTypeError
from flatminima.problems import Instance
from flatminima.solvers.convex.linear_map import ScaledMap, rescaling_inverses

#: problem kinds with a linear constraint B(Z) = b.
LINEAR_KINDS = ("matrix_sensing", "bilinear_sensing", "matrix_completion", "quadratic_network")
#: every matrix kind the convex solvers accept.
MATRIX_KINDS = (*LINEAR_KINDS, "robust_pca")
#: the vector (depth) kind.
VECTOR_KIND = "sparse_recovery"
RELAXATIONS = ("flat", "nuclear_norm")


@dataclasses.dataclass(frozen=True, eq=False)
class Formulation:
    """A relaxation ready for a solver.

    Attributes:
        kind: the problem kind.
        relaxation: ``"flat"`` or ``"nuclear_norm"``.
        shape: (d1, d2).
        bmap: B = A(D1^{-1} . D2^{-1}) (None for robust PCA).
        b: observations (m,) (vec(Y) for robust PCA).
        left_inverse, right_inverse: D1^{-1}, D2^{-1} (matrix, diagonal vector, or None).
        kappa: condition number of (D1, D2) (1 without rescaling).
        symmetric: symmetric relaxation (quadratic network).
        eps: noise level of the ball constraint (None for equality).
        radius: the l1 radius ||S_true||_{1,1} for robust PCA.
    """

    kind: str
    relaxation: str
    shape: tuple[int, int]
    bmap: ScaledMap | None
    b: torch.Tensor
    left_inverse: torch.Tensor | None
    right_inverse: torch.Tensor | None
    kappa: float
    symmetric: bool
    eps: float | None
    radius: float | None

    @property
    def observations_matrix(self) -> torch.Tensor:
        """Y = b as a (d1, d2) matrix (robust PCA)."""
        return self.b.reshape(self.shape)


def check_instance(instance: object) -> Instance:
    """Return ``instance`` if it is a valid :class:`Instance` (:meth:`Instance.validate`); raise otherwise.

    Every public solver entry calls this first: observations finite and of length m, ground truth (if
    any) of the operator's input shape and finite, one dtype and device, what the kind needs.

    Raises:
        InputTypeError: not an Instance, or a field of the wrong type.
        InputDataError: a field that does not fit (named, with the requirement and the value).
    """
    if not isinstance(instance, Instance):
        raise InputTypeError(
            f"instance must be a flatminima.problems.Instance (from Problem.sample or Instance.from_data); "
            f"got {type(instance).__name__}."
        )
    return instance.validate()


def formulate(instance: Instance, relaxation: str, *, eps: float | None) -> Formulation:
    """Build the flat (P_flat) or norm-minimal (NNM) relaxation of a matrix instance.

    Raises:
        ConfigurationError: for an unsupported kind or an option the kind does not take.
        SingularRescalingError: for the flat relaxation when D1 or D2 is singular.
    """
    kind = instance.kind
    if kind not in MATRIX_KINDS:
        raise ConfigurationError(
            f"the convex relaxations support problem kinds {', '.join((*MATRIX_KINDS, VECTOR_KIND))}; "
            f"got kind={kind!r}."
        )
    operator = instance.operator
    shape = operator.shape_in
    if kind == "robust_pca":
        if eps is not None:
            raise ConfigurationError(
                "eps (noisy equality constraint) does not apply to robust_pca, whose relaxation is "
                "min ||X||_* s.t. ||Y - X||_{1,1} <= ||S||_{1,1}; got eps="
                f"{eps}."
            )
        radius = instance.metadata.get("outlier_l1_norm")
        if radius is None:
            raise ConfigurationError(
                "a robust_pca instance needs metadata['outlier_l1_norm'] (the l1 radius ||S_true||_1)."
            )
        return Formulation(
            kind,
            relaxation,
            shape,
            None,
            instance.observations,
            None,
            None,
            1.0,
            False,
            None,
            float(radius),
        )
    if relaxation == "flat":
        left, right, kappa = rescaling_inverses(operator)
    else:
        left, right, kappa = None, None, 1.0
    bmap = ScaledMap(operator, left, right)
    symmetric = kind == "quadratic_network"
    return Formulation(
        kind, relaxation, shape, bmap, instance.observations, left, right, kappa, symmetric, eps, None
    )

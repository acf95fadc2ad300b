"""Problems (statistical models) and the instances they draw.

``Problem.sample(generator=g)`` draws one :class:`Instance` on CPU in float64 from an explicit generator,
so a seed means the same instance on every device; move it with ``instance.to(device, dtype)``.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from flatminima._checks import check_finite_entries, check_generator, check_real, check_tensor
from flatminima.errors import InputDataError, InputTypeError, MissingGroundTruthError
from flatminima.operators import (
    BilinearOperator,
    DenseOperator,
    EntryMask,
    IdentityOperator,
    MeasurementOperator,
    SymmetricRankOneOperator,
    VectorOperator,
)


@dataclasses.dataclass(frozen=True)
class Instance:
    """One recovery problem b = A(M) + noise: drawn by ``Problem.sample`` or built from your own data.

    The ground truth is optional: an instance built from real data (a mask or measurement matrices and
    the observations, see :meth:`from_data`) has ``ground_truth=None``; everything that does not compare
    with M (solving, certifying, factoring, the rescaling matrices D1, D2, which depend only on the
    operator) works without it, and the recovery metrics (:meth:`recovery_error`, ``result.recovered``)
    raise :class:`~flatminima.errors.MissingGroundTruthError`.

    Construction checks every field on its own (types, ``observations`` a finite 1-D floating tensor,
    ``ground_truth`` None or a finite 2-D floating tensor; the first non-finite entry is named);
    :meth:`validate`, which every solver calls on entry (and :meth:`from_data` at once), also checks the
    fields against each other (length m, shape (d1, d2), one dtype and device, what the kind needs);
    construction leaves those to it so that ``dataclasses.replace`` can swap one field at a time.

    Attributes:
        ground_truth: the matrix M (d1, d2) (for sparse recovery, the vector x as a (d, 1) matrix), or
            None when it is unknown.
        operator: the measurement map A.
        observations: b, shape (m,).
        kind: the problem's registry name ("matrix_sensing", ...).
        extras: further tensors of the model (teacher factors, outliers, noise), moved by :meth:`to`.
        metadata: plain values (problem parameters, empty rows/columns, ...).
    """

    ground_truth: torch.Tensor | None
    operator: MeasurementOperator
    observations: torch.Tensor
    kind: str
    extras: Mapping[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_fields(self)

    @classmethod
    def from_data(
        cls,
        operator: MeasurementOperator,
        observations: torch.Tensor,
        *,
        kind: str | None = None,
        ground_truth: torch.Tensor | None = None,
        metadata: Mapping[str, Any] | None = None,
        extras: Mapping[str, torch.Tensor] | None = None,
    ) -> Instance:
        """An instance from your own measurement operator and observations (ground truth optional).

        Args:
            operator: A, e.g. ``EntryMask.from_mask(mask)`` (observations in the row-major order of the
                observed entries) or ``DenseOperator(matrices)`` with ``matrices`` of shape (m, d1, d2).
            observations: b, shape (m,), same dtype and device as the operator.
            kind: the problem kind; default from the operator: EntryMask -> "matrix_completion",
                DenseOperator -> "matrix_sensing", BilinearOperator -> "bilinear_sensing",
                SymmetricRankOneOperator -> "quadratic_network", VectorOperator -> "sparse_recovery",
                IdentityOperator -> "robust_pca" (which also needs ``metadata["outlier_l1_norm"]``).
            ground_truth: M if known (for the recovery metrics), else None.
            metadata: plain values kept with the instance; for an entry mask ``empty_rows`` and
                ``empty_columns`` are filled in.
            extras: further tensors.

        Returns:
            The validated instance (:meth:`validate`).

        Raises:
            InputTypeError, InputDataError: naming the field, the requirement and the value.

        Example:
            >>> from flatminima.operators import EntryMask
            >>> mask = torch.tensor([[True, False], [True, True]])
            >>> inst = Instance.from_data(EntryMask.from_mask(mask), torch.tensor([1.0, 2.0, 3.0],
            ...     dtype=torch.float64))
            >>> inst.kind, inst.num_measurements, inst.ground_truth is None
            ('matrix_completion', 3, True)
        """
        if not isinstance(operator, MeasurementOperator):
            raise InputTypeError(
                "operator must be a flatminima.operators.MeasurementOperator (e.g. EntryMask.from_mask(mask) "
                f"or DenseOperator(matrices)); got {type(operator).__name__}."
            )
        if kind is None:
            kind = _default_kind(operator)
        info: dict[str, Any] = dict(metadata or {})
        if isinstance(operator, EntryMask):
            info.setdefault("empty_rows", operator.empty_rows())
            info.setdefault("empty_columns", operator.empty_columns())
        return cls(ground_truth, operator, observations, kind, dict(extras or {}), info).validate()

    # ---- validation -------------------------------------------------------------------------------
    def validate(self) -> Instance:
        """Check the fields against each other; return ``self``. Every solver entry calls this.

        Checks (besides the per-field checks of construction, repeated here because tensors can be
        changed in place): ``observations`` has length m = ``operator.num_measurements`` and the
        operator's dtype and device; ``ground_truth`` (if given) has the operator's input shape (d1, d2)
        and the same dtype and device; entry-mask indices lie in range; the kind's needs
        (sparse_recovery: a VectorOperator; quadratic_network: a square operator; robust_pca: the
        IdentityOperator and a finite ``metadata["outlier_l1_norm"]`` >= 0 when given).

        Raises:
            InputTypeError, InputDataError: naming the field, the requirement and the value.
        """
        _check_fields(self)
        operator, b = self.operator, self.observations
        m = operator.num_measurements
        if m < 1:
            raise InputDataError(f"operator must have at least one measurement; got num_measurements={m}.")
        if b.numel() != m:
            raise InputDataError(
                f"observations must have length m = {m} (the operator's number of measurements); got "
                f"observations.shape={tuple(b.shape)}."
            )
        if b.dtype != operator.dtype:
            raise InputDataError(
                f"observations and operator must share one dtype; got observations {b.dtype}, operator "
                f"{operator.dtype}. Convert one of them (operator.to(dtype=...), observations.to(...))."
            )
        if b.device != operator.device:
            raise InputDataError(
                f"observations and operator must be on one device; got observations on {b.device}, "
                f"operator on {operator.device}. Use instance.to(device) or move both."
            )
        if self.ground_truth is not None:
            M = self.ground_truth
            if tuple(M.shape) != operator.shape_in:
                raise InputDataError(
                    f"ground_truth must have the operator's input shape (d1, d2) = {operator.shape_in}; "
                    f"got ground_truth.shape={tuple(M.shape)}."
                )
            if M.dtype != b.dtype or M.device != b.device:
                raise InputDataError(
                    "ground_truth must have the dtype and device of the observations "
                    f"({b.dtype} on {b.device}); got ground_truth {M.dtype} on {M.device}."
                )
        if isinstance(operator, EntryMask):
            d1, d2 = operator.shape_in
            for name, index, bound in (("rows", operator.rows, d1), ("cols", operator.cols, d2)):
                low, high = int(index.min()), int(index.max())
                if low < 0 or high >= bound:
                    raise InputDataError(
                        f"operator.{name} (entry-mask indices) must lie in [0, {bound}); got values in "
                        f"[{low}, {high}]."
                    )
        self._check_kind()
        return self

    def _check_kind(self) -> None:
        kind, operator = self.kind, self.operator
        if kind == "sparse_recovery" and not isinstance(operator, VectorOperator):
            raise InputDataError(
                "a sparse_recovery instance needs a VectorOperator (b = A x with A of shape (m, d)); got "
                f"operator={type(operator).__name__}."
            )
        if kind == "quadratic_network" and operator.shape_in[0] != operator.shape_in[1]:
            raise InputDataError(
                "a quadratic_network instance needs a square operator (symmetric d x d matrices); got "
                f"operator.shape_in={operator.shape_in}."
            )
        if kind == "robust_pca":
            if not isinstance(operator, IdentityOperator):
                raise InputDataError(
                    "a robust_pca instance observes every entry: it needs an IdentityOperator (b = vec(Y)); "
                    f"got operator={type(operator).__name__}."
                )
            radius = self.metadata.get("outlier_l1_norm")
            if radius is not None:
                check_real("metadata['outlier_l1_norm']", radius, low=0.0)

    # ---- properties -------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """(d1, d2), the operator's input shape."""
        return self.operator.shape_in

    @property
    def num_measurements(self) -> int:
        """M."""
        return self.operator.num_measurements

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the instance's tensors (that of the observations)."""
        return self.observations.dtype

    @property
    def device(self) -> torch.device:
        """Device of the instance's tensors (that of the observations)."""
        return self.observations.device

    @property
    def has_ground_truth(self) -> bool:
        """True when the ground truth M is known."""
        return self.ground_truth is not None

    def require_ground_truth(self, purpose: str = "this metric") -> torch.Tensor:
        """Return the ground truth M, or raise a clear error when the instance has none.

        Raises:
            MissingGroundTruthError: ``ground_truth`` is None (an instance built from data).
        """
        if self.ground_truth is None:
            raise MissingGroundTruthError(
                f"{purpose} needs the ground truth M; this Instance has ground_truth=None (built from data "
                "without a known M). Pass ground_truth=M when building the Instance to measure recovery."
            )
        return self.ground_truth

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Instance:
        """Return a copy with every tensor (and the operator) on ``device`` in ``dtype``."""
        return dataclasses.replace(
            self,
            ground_truth=None
            if self.ground_truth is None
            else self.ground_truth.to(device=device, dtype=dtype),
            operator=self.operator.to(device=device, dtype=dtype),
            observations=self.observations.to(device=device, dtype=dtype),
            extras={
                name: t.to(device=device, dtype=dtype if t.is_floating_point() else None)
                for name, t in self.extras.items()
            },
        )

    def recovery_error(self, X: torch.Tensor) -> float:
        """Frobenius distance ||X - M||_F to the ground truth.

        Raises:
            MissingGroundTruthError: the instance has no ground truth.
            InputDataError: ``X`` is not of the ground truth's shape.
        """
        M = self.require_ground_truth("recovery_error")
        check_tensor("X", X, shape=tuple(M.shape), finite=False)
        return float(torch.linalg.matrix_norm(X - M.to(X)))


def _check_fields(instance: Instance) -> None:
    """The per-field checks of an :class:`Instance` (types, dimensions, finite entries)."""
    if not isinstance(instance.operator, MeasurementOperator):
        raise InputTypeError(
            "operator must be a flatminima.operators.MeasurementOperator (e.g. EntryMask.from_mask(mask) or "
            f"DenseOperator(matrices)); got {type(instance.operator).__name__}."
        )
    if not isinstance(instance.kind, str) or not instance.kind:
        raise InputTypeError(
            f"kind must be a non-empty string (e.g. 'matrix_completion'); got {instance.kind!r}."
        )
    b = check_tensor("observations", instance.observations, finite=False)
    if b.ndim != 1:
        raise InputDataError(
            f"observations must be a 1-D tensor of shape (m,); got observations.shape={tuple(b.shape)}."
        )
    check_finite_entries("observations", b)
    if instance.ground_truth is not None:
        M = check_tensor("ground_truth", instance.ground_truth, finite=False)
        if M.ndim != 2:
            raise InputDataError(
                "ground_truth must be None or a matrix of shape (d1, d2) ((d, 1) for sparse recovery); got "
                f"ground_truth.shape={tuple(M.shape)}."
            )
        check_finite_entries("ground_truth", M)
    if not isinstance(instance.extras, Mapping) or not all(
        isinstance(t, torch.Tensor) for t in instance.extras.values()
    ):
        raise InputTypeError(
            f"extras must be a mapping of name -> torch.Tensor; got {instance.extras!r:.80}."
        )
    if not isinstance(instance.metadata, Mapping):
        raise InputTypeError(f"metadata must be a mapping; got {type(instance.metadata).__name__}.")


def _default_kind(operator: MeasurementOperator) -> str:
    """The problem kind an operator stands for (used by :meth:`Instance.from_data`)."""
    kinds: tuple[tuple[type[MeasurementOperator], str], ...] = (
        (EntryMask, "matrix_completion"),
        (DenseOperator, "matrix_sensing"),
        (BilinearOperator, "bilinear_sensing"),
        (SymmetricRankOneOperator, "quadratic_network"),
        (VectorOperator, "sparse_recovery"),
        (IdentityOperator, "robust_pca"),
    )
    for cls, kind in kinds:
        if isinstance(operator, cls):
            return kind
    raise InputDataError(
        f"cannot infer the problem kind of a {type(operator).__name__}; pass kind= (e.g. 'matrix_sensing')."
    )


class Problem(abc.ABC):
    """A statistical model; subclasses are frozen dataclasses validated in ``__post_init__``."""

    #: registry name used by sweeps and the CLI.
    name: ClassVar[str]

    @abc.abstractmethod
    def _sample(self, generator: torch.Generator) -> Instance:
        """Draw an instance on CPU in float64."""

    def sample(self, *, generator: torch.Generator) -> Instance:
        """Draw one instance on CPU in float64 from ``generator`` (a CPU ``torch.Generator``).

        Raises:
            InputTypeError: if ``generator`` is not a ``torch.Generator``.
        """
        check_generator("generator", generator)
        return self._sample(generator)


def gaussian(*shape: int, generator: torch.Generator) -> torch.Tensor:
    """i.i.d. N(0, 1) entries on CPU in float64."""
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def low_rank_ground_truth(
    d1: int, d2: int, rank: int, *, norm: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors (F1, F2) of M = F1 F2^T, the normalized G1 G2^T with G1 (d1, r), G2 (d2, r) Gaussian.

    M has rank r and ||M||_F = norm; the factors let structured operators measure M in O(m (d1 + d2) r).
    """
    G1 = gaussian(d1, rank, generator=generator)
    G2 = gaussian(d2, rank, generator=generator)
    # ||G1 G2^T||_F^2 = tr((G1^T G1)(G2^T G2)) without forming the d1 x d2 product.
    scale = norm / ((G1.T @ G1) * (G2.T @ G2)).sum().sqrt()
    return G1 * scale, G2


def add_noise(
    clean: torch.Tensor, noise_std: float, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (clean + noise_std * e, noise_std * e) with e ~ N(0, I); the noise is drawn even at 0."""
    noise = noise_std * gaussian(*clean.shape, generator=generator)
    return clean + noise, noise

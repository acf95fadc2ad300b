"""Matrix sensing models: Gaussian, bilinear (rank-one projections) and matrix completion."""

from __future__ import annotations

import dataclasses
import typing

import torch

from flatminima._checks import check_int_in_range, check_real, check_shape_pair
from flatminima.errors import InputDataError
from flatminima.operators import BilinearOperator, DenseOperator, EntryMask
from flatminima.problems.base import Instance, Problem, add_noise, gaussian, low_rank_ground_truth
from flatminima.problems.nonuniform import check_skew, power_law_mask


@dataclasses.dataclass(frozen=True, kw_only=True)
class _LowRankModel(Problem):
    """Shared fields and validation of the low-rank matrix models."""

    shape: tuple[int, int]
    rank: int
    noise_std: float = 0.0
    ground_truth_norm: float = 1.0

    def __post_init__(self) -> None:
        d1, d2 = check_shape_pair("shape", self.shape)
        object.__setattr__(self, "shape", (d1, d2))
        check_int_in_range("rank", self.rank, low=1, high=min(d1, d2), high_name="min(d1, d2)")
        check_real("noise_std", self.noise_std, low=0.0)
        check_real("ground_truth_norm", self.ground_truth_norm, low=0.0, low_open=True)

    def _truth_factors(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        d1, d2 = self.shape
        return low_rank_ground_truth(d1, d2, self.rank, norm=self.ground_truth_norm, generator=generator)

    def _truth(self, generator: torch.Generator) -> torch.Tensor:
        G1, G2 = self._truth_factors(generator)
        return G1 @ G2.T

    def _metadata(self) -> dict[str, typing.Any]:
        return {"problem": self.name, **dataclasses.asdict(self)}


@typing.final
@dataclasses.dataclass(frozen=True, kw_only=True)
class MatrixSensing(_LowRankModel):
    """b_l = <A_l, M> + noise_std e_l with Gaussian A_l (i.i.d. N(0, 1) entries) and rank-r M, ||M||_F = 1.

    Example:
        >>> inst = MatrixSensing(shape=(8, 8), rank=2, num_measurements=60).sample(
        ...     generator=torch.Generator().manual_seed(0))
        >>> inst.observations.shape
        torch.Size([60])

    References:
        Ding et al. (2024), Section 4 (Theorem 4.10); Recht, Fazel, Parrilo (2010).
    """

    name: typing.ClassVar[str] = "matrix_sensing"
    num_measurements: int

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int_in_range("num_measurements", self.num_measurements, low=1)

    def _sample(self, generator: torch.Generator) -> Instance:
        M = self._truth(generator)
        operator = DenseOperator(gaussian(self.num_measurements, *self.shape, generator=generator))
        b, noise = add_noise(operator.apply(M), self.noise_std, generator=generator)
        return Instance(M, operator, b, self.name, {"noise": noise}, self._metadata())


@typing.final
@dataclasses.dataclass(frozen=True, kw_only=True)
class BilinearSensing(_LowRankModel):
    """b_l = a_l^T M b_l + noise_std e_l with Gaussian a_l, b_l (rank-one projections); A never materialized.

    References:
        Ding et al. (2024), Section 4 (Theorem 4.11); Cai and Zhang (2015).
    """

    name: typing.ClassVar[str] = "bilinear_sensing"
    num_measurements: int

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int_in_range("num_measurements", self.num_measurements, low=1)

    def _sample(self, generator: torch.Generator) -> Instance:
        G1, G2 = self._truth_factors(generator)
        d1, d2 = self.shape
        a = gaussian(self.num_measurements, d1, generator=generator)
        b_vectors = gaussian(self.num_measurements, d2, generator=generator)
        operator = BilinearOperator(a, b_vectors)
        b, noise = add_noise(operator.apply_factored(G1, G2), self.noise_std, generator=generator)
        M = G1 @ G2.T
        return Instance(M, operator, b, self.name, {"noise": noise}, self._metadata())


@typing.final
@dataclasses.dataclass(frozen=True, kw_only=True)
class MatrixCompletion(_LowRankModel):
    """Observe each entry of M independently with probability p (Bernoulli mask), plus optional noise.

    With the default skews 0 every entry has probability p (the paper's model). With ``row_skew`` a > 0
    or ``column_skew`` b > 0 the sampling is non-uniform: entry (i, j) (1-based) is observed with
    probability P_ij = min(1, c i^{-a} j^{-b}), c set so that the mean of P is exactly p (expected
    observations p d1 d2; row and column marginals follow the power laws i^{-a}, j^{-b} where nothing is
    clipped; see :mod:`flatminima.problems.nonuniform`). Skews 0 draw the very same masks as before.

    The instance's metadata lists ``empty_rows`` and ``empty_columns`` (unobserved lines make D1 or D2
    singular; they are reported, never dropped). The operator is an :class:`EntryMask` whose m is the
    number of observed entries.

    Args:
        probability: p in (0, 1], the (mean) observation probability.
        row_skew: a in [0, 10], the row power-law exponent (default 0: uniform).
        column_skew: b in [0, 10], the column power-law exponent (default 0: uniform).

    Example:
        >>> inst = MatrixCompletion(shape=(30, 30), rank=2, probability=0.3, row_skew=1.0,
        ...     column_skew=1.0).sample(generator=torch.Generator().manual_seed(0))
        >>> counts = inst.operator.row_counts()
        >>> bool(counts[:5].sum() > counts[-5:].sum())
        True

    References:
        Ding et al. (2024), Section 5; Candès and Recht (2009); Srebro and Salakhutdinov (NeurIPS 2010)
        and Foygel, Salakhutdinov, Shamir, Srebro (NeurIPS 2011) for power-law sampling.
    """

    name: typing.ClassVar[str] = "matrix_completion"
    probability: float
    row_skew: float = 0.0
    column_skew: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_real("probability", self.probability, low=0.0, high=1.0, low_open=True)
        check_skew("row_skew", self.row_skew)
        check_skew("column_skew", self.column_skew)

    def _sample(self, generator: torch.Generator) -> Instance:
        M = self._truth(generator)
        if self.row_skew == 0 and self.column_skew == 0:  # the uniform model, unchanged
            mask = torch.rand(*self.shape, generator=generator, dtype=torch.float64) < self.probability
        else:
            mask = power_law_mask(
                self.shape,
                row_skew=self.row_skew,
                column_skew=self.column_skew,
                mean=self.probability,
                generator=generator,
            )
        if not bool(mask.any()):
            raise InputDataError(
                f"the Bernoulli mask observed no entry at probability={self.probability} and shape="
                f"{self.shape}; increase probability."
            )
        operator = EntryMask.from_mask(mask)
        b, noise = add_noise(operator.apply(M), self.noise_std, generator=generator)
        metadata = {
            **self._metadata(),
            "empty_rows": operator.empty_rows(),
            "empty_columns": operator.empty_columns(),
        }
        return Instance(M, operator, b, self.name, {"noise": noise}, metadata)

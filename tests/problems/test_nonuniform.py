"""Power-law sampling for matrix completion: normalization, marginals, the uniform limit, errors."""

from __future__ import annotations

import doctest
import math
from collections.abc import Callable

import pytest
import torch

from flatminima.errors import ConfigurationError, InputDataError, InputTypeError
from flatminima.experiments import parse_spec
from flatminima.operators import EntryMask
from flatminima.problems import MatrixCompletion, power_law_mask, power_law_probabilities


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("skew", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("mean", [0.02, 0.3, 0.9])
def test_mean_probability_is_exact(skew: float, mean: float) -> None:
    P = power_law_probabilities((37, 23), row_skew=skew, column_skew=skew / 2, mean=mean)
    assert P.dtype == torch.float64 and P.shape == (37, 23)
    assert abs(float(P.mean()) - mean) <= 1e-13
    assert float(P.max()) <= 1.0 and float(P.min()) > 0.0
    # non-increasing along rows and columns
    assert bool((P[1:] <= P[:-1] + 1e-15).all()) and bool((P[:, 1:] <= P[:, :-1] + 1e-15).all())


def test_unclipped_probabilities_are_the_product_power_law() -> None:
    P = power_law_probabilities((40, 30), row_skew=1.0, column_skew=0.5, mean=0.02)
    assert float(P.max()) < 1.0  # nothing clipped at this mean
    i = torch.arange(1, 41, dtype=torch.float64)
    j = torch.arange(1, 31, dtype=torch.float64)
    expected = torch.outer(i.pow(-1.0), j.pow(-0.5))
    torch.testing.assert_close(P, expected * (0.02 * 1200 / float(expected.sum())), rtol=1e-13, atol=0)
    # marginals: row sums proportional to i^-a, column sums to j^-b
    torch.testing.assert_close(P.sum(1) / P.sum(1)[0], i.pow(-1.0), rtol=1e-13, atol=0)
    torch.testing.assert_close(P.sum(0) / P.sum(0)[0], j.pow(-0.5), rtol=1e-13, atol=0)


def test_clipping_keeps_the_mean_and_saturates_the_head() -> None:
    P = power_law_probabilities((30, 30), row_skew=2.0, column_skew=2.0, mean=0.5)
    assert abs(float(P.mean()) - 0.5) < 1e-13
    assert float(P[0, 0]) == 1.0 and int((P == 1.0).sum()) > 1
    unclipped = P < 1.0
    line = torch.arange(1, 31, dtype=torch.float64).pow(-2.0)
    ratio = P / torch.outer(line, line)  # c on every unclipped entry
    assert float(ratio[unclipped].max() - ratio[unclipped].min()) < 1e-9 * float(ratio[unclipped].max())
    assert torch.equal(
        power_law_probabilities((3, 4), row_skew=1.0, column_skew=1.0, mean=1.0), torch.ones(3, 4)
    )


def test_skew_zero_is_uniform_sampling() -> None:
    P = power_law_probabilities((9, 11), row_skew=0.0, column_skew=0.0, mean=0.35)
    torch.testing.assert_close(P, torch.full((9, 11), 0.35, dtype=torch.float64), rtol=1e-15, atol=0)
    uniform = torch.rand(50, 40, generator=gen(3), dtype=torch.float64) < 0.35
    assert torch.equal(
        power_law_mask((50, 40), row_skew=0.0, column_skew=0.0, mean=0.35, generator=gen(3)), uniform
    )
    # the model: explicit skews 0 draw the same instance as the default (the paper's Bernoulli model)
    default = MatrixCompletion(shape=(20, 18), rank=2, probability=0.4).sample(generator=gen(5))
    zero = MatrixCompletion(shape=(20, 18), rank=2, probability=0.4, row_skew=0.0, column_skew=0).sample(
        generator=gen(5)
    )
    assert torch.equal(default.ground_truth, zero.ground_truth)
    assert torch.equal(default.observations, zero.observations)
    assert isinstance(default.operator, EntryMask) and isinstance(zero.operator, EntryMask)
    assert torch.equal(default.operator.rows, zero.operator.rows)
    assert torch.equal(default.operator.cols, zero.operator.cols)


def test_marginals_follow_the_model_chi_square() -> None:
    """Row and column counts of 40 masks against their Poisson-binomial means and variances."""
    shape, draws = (60, 50), 40
    P = power_law_probabilities(shape, row_skew=1.0, column_skew=0.5, mean=0.1)
    masks = torch.stack(
        [
            power_law_mask(shape, row_skew=1.0, column_skew=0.5, mean=0.1, generator=gen(s))
            for s in range(draws)
        ]
    ).double()
    for axis, lines in ((2, shape[0]), (1, shape[1])):
        counts = masks.sum(axis).sum(0)  # total observations per row (axis 2) or column (axis 1)
        mean = draws * P.sum(axis - 1)
        variance = draws * (P * (1 - P)).sum(axis - 1)
        statistic = float(((counts - mean) ** 2 / variance).sum())
        # chi^2 with `lines` degrees of freedom: mean lines, sd sqrt(2 lines); 5 sd is far in the tail
        assert abs(statistic - lines) < 5 * math.sqrt(2 * lines), (axis, statistic)
    # and a wrong model is caught: uniform marginals are far off
    uniform_rows = torch.full((shape[0],), draws * 0.1 * shape[1], dtype=torch.float64)
    counts = masks.sum(2).sum(0)
    wrong = float(((counts - uniform_rows) ** 2 / uniform_rows).sum())
    assert wrong > shape[0] + 10 * math.sqrt(2 * shape[0])
    # total count: mean p d1 d2 per mask
    total = float(masks.sum()) / draws
    assert abs(total - 0.1 * 3000) < 5 * math.sqrt(float((P * (1 - P)).sum()) / draws)


def test_skewed_completion_reports_but_does_not_fill_empty_lines() -> None:
    inst = MatrixCompletion(shape=(40, 40), rank=2, probability=0.1, row_skew=1.5, column_skew=1.5).sample(
        generator=gen(0)
    )
    assert isinstance(inst.operator, EntryMask)
    assert inst.metadata["empty_rows"] == inst.operator.empty_rows() != []
    assert inst.metadata["row_skew"] == 1.5 and inst.metadata["column_skew"] == 1.5
    counts = inst.operator.row_counts()
    assert int(counts[:10].sum()) > 3 * int(counts[-10:].sum())


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"row_skew": -0.5},
            InputDataError,
            r"row_skew must satisfy 0.0 <= row_skew <= 10.0; got row_skew=-0.5",
        ),
        ({"column_skew": 11}, InputDataError, r"column_skew must satisfy 0.0 <= column_skew <= 10.0; got"),
        ({"row_skew": float("nan")}, InputDataError, r"row_skew must be finite; got row_skew=nan"),
        ({"column_skew": "1"}, InputTypeError, r"column_skew must be a real number; got '1' of type str"),
        ({"row_skew": True}, InputTypeError, r"row_skew must be a real number; got True"),
    ],
)
def test_bad_skews_raise_one_line_errors(kwargs: dict[str, object], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        MatrixCompletion(shape=(5, 5), rank=1, probability=0.5, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        power_law_probabilities((5, 5), **{"row_skew": 0.0, "column_skew": 0.0, "mean": 0.5, **kwargs})  # type: ignore[arg-type]


def test_bad_mean_shape_and_generator() -> None:
    with pytest.raises(InputDataError, match=r"mean must satisfy 0.0 < mean <= 1.0; got mean=0.0"):
        power_law_probabilities((5, 5), row_skew=1.0, column_skew=1.0, mean=0.0)
    with pytest.raises(InputDataError, match=r"shape\[0\] must be >= 1; got shape\[0\]=0"):
        power_law_probabilities((0, 5), row_skew=1.0, column_skew=1.0, mean=0.5)
    with pytest.raises(InputTypeError, match="generator must be a torch.Generator"):
        power_law_mask((5, 5), row_skew=1.0, column_skew=1.0, mean=0.5, generator=0)  # type: ignore[arg-type]


def test_sweep_specs_accept_and_check_skews() -> None:
    base = {"name": "s", "problem": {"name": "matrix_completion", "rank": 1, "dim": 6}, "solvers": ["flat"]}
    spec = parse_spec({**base, "grid": {"probability": [0.5], "row_skew": [0.0, 1.0]}})
    assert [c["row_skew"] for c in spec.cells()] == [0.0, 1.0]
    with pytest.raises(
        ConfigurationError, match=r"grid cell \(probability=0.5, row_skew=-1.0\): row_skew must"
    ):
        parse_spec({**base, "grid": {"probability": [0.5], "row_skew": [-1.0]}})


@pytest.mark.parametrize(
    "name",
    [
        "flatminima.problems.nonuniform",
        "flatminima.problems.sensing",
        "flatminima.experiments.beyond_methods",
    ],
)
def test_docstring_examples(name: str, docstring_examples: Callable[[str], doctest.TestResults]) -> None:
    result = docstring_examples(name)
    assert result.attempted > 0 and result.failed == 0

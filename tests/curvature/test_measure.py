from __future__ import annotations

import math

import pytest
import torch
from curvature_cases import mlp_case
from torch import nn

from flatminima.curvature import (
    MEASURES,
    HessianOperator,
    exact_trace,
    hutchinson_trace,
    lanczos_eigenvalues,
    measure,
)
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError

F = nn.functional

#: light settings so the contract test over the whole registry stays fast.
LIGHT = {
    "hutchinson_trace": {"num_probes": 20},
    "hutchpp_trace": {"num_probes": 10},
    "hutchinson_scaled_trace": {"num_probes": 20},
    "hutchinson_squared_frobenius_norm": {"num_probes": 20},
    "lanczos_negative_mass": {"num_iterations": 10, "num_repeats": 3},
    "pac_bayes_sigma": {"num_bisections": 6},
    "pac_bayes_flatness": {"num_bisections": 6},
    "pac_bayes_orig": {"num_bisections": 6},
    "magnitude_pac_bayes_sigma": {"num_bisections": 6},
    "magnitude_pac_bayes_flatness": {"num_bisections": 6},
    "magnitude_pac_bayes_orig": {"num_bisections": 6},
}
DETERMINISTIC = {"exact_trace", "exact_scaled_trace", "exact_squared_frobenius_norm"}


@pytest.fixture(scope="module")
def model_operator():
    case = mlp_case(0, n=24)
    H = HessianOperator.from_model(case.net, F.cross_entropy, case.batches([12, 12]), mode="eval")
    return case, H


def _options(case, name):
    options = dict(LIGHT.get(name, {}))
    if name.endswith("pac_bayes_init"):
        options["num_bisections"] = 6
        options["initial_weights"] = {k: torch.zeros_like(v) for k, v in case.params().items()}
    return options


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_every_registered_measure_runs_per_group_and_is_reproducible(model_operator, name) -> None:
    case, H = model_operator
    options = {name: _options(case, name)}
    tables = [
        measure(H, [name], groups="module", generator=torch.Generator().manual_seed(7), options=options)
        for _ in range(2)
    ]
    expected_groups = ["all"] if name == "path_norm" else ["all", "0", "2"]
    assert [r.group for r in tables[0]] == expected_groups
    for first, second in zip(tables[0], tables[1], strict=True):
        assert first.name == name
        assert math.isfinite(first.value)
        assert first.value == second.value  # one seed, one table
        assert first.num_matvecs >= 0
        if name in DETERMINISTIC:
            assert math.isnan(first.stderr) and first.num_matvecs > 0


def test_values_agree_with_the_free_functions(model_operator) -> None:
    _, H = model_operator
    table = measure(
        H,
        ["exact_trace", "hutchinson_trace", "lanczos_top_eigenvalue"],
        groups={"hidden": "0.*", "output": ["2.weight", "2.bias"]},
        generator=torch.Generator().manual_seed(0),
    )
    assert [r.group for r in table][:3] == ["all", "hidden", "output"]
    assert table.get("exact_trace", "hidden").value == pytest.approx(float(exact_trace(H.select("0.*"))))
    total = sum(table.get("exact_trace", group).value for group in ("hidden", "output"))
    assert table.get("exact_trace").value == pytest.approx(total)
    g = torch.Generator().manual_seed(0)
    direct = hutchinson_trace(H, generator=g)
    row = table.get("hutchinson_trace")
    assert (row.value, row.stderr, row.num_matvecs) == (direct.value, direct.stderr, direct.num_matvecs)
    top = lanczos_eigenvalues(H.select("2.*"), 1, generator=torch.Generator().manual_seed(1))
    row = table.get("lanczos_top_eigenvalue", "output")
    assert row.value == pytest.approx(float(top.eigenvalues[0]), rel=1e-8)
    # the row carries Lanczos's error estimate, and it holds against the dense eigenvalue
    assert 0 < row.error_bound <= 1e-10 * abs(row.value)
    exact = float(torch.linalg.eigvalsh(H.select("2.*").dense())[-1])
    assert abs(row.value - exact) <= row.error_bound


def test_pac_bayes_measures_share_one_sigma(model_operator) -> None:
    _, H = model_operator
    options = {"num_bisections": 8}
    table = measure(
        H,
        ["pac_bayes_sigma", "pac_bayes_flatness", "pac_bayes_orig"],
        generator=torch.Generator().manual_seed(0),
        options={name: options for name in ("pac_bayes_sigma", "pac_bayes_flatness", "pac_bayes_orig")},
    )
    sigma = table.get("pac_bayes_sigma").value
    assert table.get("pac_bayes_flatness").value == pytest.approx(1 / sigma**2)
    norm = float(H.point.square().sum())
    expected = norm / (4 * sigma**2) + math.log(24 / sigma) + 10
    assert table.get("pac_bayes_orig").value == pytest.approx(expected)


def test_table_conversions(model_operator) -> None:
    _, H = model_operator
    table = measure(H, "exact_trace", groups="parameter")
    records = table.to_records()
    assert records[0] == {
        "name": "exact_trace",
        "group": "all",
        "value": records[0]["value"],
        "stderr": records[0]["stderr"],
        "num_matvecs": H.size,
        "error_bound": records[0]["error_bound"],
    }
    assert math.isnan(records[0]["error_bound"])  # basis products: exact up to round-off, no bound
    assert len(table) == 1 + len(H.names)
    pandas = pytest.importorskip("pandas")
    frame = table.to_pandas()
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame.columns) == ["name", "group", "value", "stderr", "num_matvecs", "error_bound"]
    with pytest.raises(InputDataError, match="no row for measure 'exact_trace' on group 'conv'"):
        table.get("exact_trace", "conv")


def test_measure_errors(model_operator) -> None:
    case, H = model_operator
    with pytest.raises(ConfigurationError, match="unknown measure 'trace'; known measures: adaptive_worst"):
        measure(H, ["trace"])
    with pytest.raises(ConfigurationError, match="options given for measures that were not requested"):
        measure(H, ["exact_trace"], options={"hutchinson_trace": {"rtol": 0.1}})
    with pytest.raises(InputTypeError, match="generator must be a torch.Generator"):
        measure(H, ["hutchinson_trace"])
    with pytest.raises(InputTypeError, match="operator must be a HessianOperator"):
        measure("H", ["exact_trace"])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="'all' is reserved"):
        measure(H, ["exact_trace"], groups={"all": "0.*"})
    with pytest.raises(ConfigurationError, match="initial_weights"):
        measure(H, ["pac_bayes_init"], generator=torch.Generator())
    closure = HessianOperator(case.loss, case.params())
    with pytest.raises(ConfigurationError, match="needs num_examples"):
        measure(
            closure,
            ["pac_bayes_orig"],
            generator=torch.Generator(),
            options={"pac_bayes_orig": {"num_bisections": 2}},
        )
    with pytest.raises(InputDataError, match="path_norm needs a model"):
        measure(closure, ["path_norm"])


def test_init_measures_accept_weights_that_require_grad(model_operator) -> None:
    """initial_weights straight from a model (requires_grad=True) give the same value as detached ones."""
    case, H = model_operator
    weights = {k: (0.1 * torch.ones_like(v)).requires_grad_() for k, v in case.params().items()}
    values = [
        measure(
            H,
            ["pac_bayes_init"],
            generator=torch.Generator().manual_seed(3),
            options={"pac_bayes_init": {"num_bisections": 6, "initial_weights": chosen}},
        ).get("pac_bayes_init")
        for chosen in (weights, {k: v.detach() for k, v in weights.items()})
    ]
    assert values[0].value == values[1].value and math.isfinite(values[0].value)

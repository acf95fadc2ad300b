from __future__ import annotations

import math

import pytest
import torch
from curvature_cases import mlp_case
from torch import nn

from flatminima.curvature import (
    MEASURES,
    GeneralizedGaussNewtonOperator,
    HessianOperator,
    MatrixOperator,
    MeasureFailureWarning,
    MeasureValue,
    curvature_operator,
    exact_trace,
    hutchinson_trace,
    lanczos_eigenvalues,
    measure,
)
from flatminima.curvature.measure import WHOLE_MODEL_MEASURES
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
    "hochreiter_box": {"num_bisections": 6, "num_search_points": 4, "num_verification_points": 4},
    "expected_sharpness_kl": {"num_bisections": 6, "num_samples": 10},
}
#: measures read from a piecewise-linear architecture: the contract test runs them on a ReLU twin.
PIECEWISE_LINEAR = {"vc_bartlett2019", "vc_harvey2017"}
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
    if name in PIECEWISE_LINEAR:
        relu = nn.Sequential(case.net[0], nn.ReLU(), case.net[2])
        H = HessianOperator.from_model(relu, F.cross_entropy, case.batches([12, 12]), mode="eval")
    options = {name: _options(case, name)}
    tables = [
        measure(H, [name], groups="module", generator=torch.Generator().manual_seed(7), options=options)
        for _ in range(2)
    ]
    expected_groups = ["all"] if name in WHOLE_MODEL_MEASURES else ["all", "0", "2"]
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
        "diagnostic": None,
        "diagnostic_value": records[0]["diagnostic_value"],
        "diagnostic_stderr": records[0]["diagnostic_stderr"],
        "curvature": "hessian",
        "error": None,
    }
    assert math.isnan(records[0]["error_bound"])  # basis products: exact up to round-off, no bound
    assert math.isnan(records[0]["diagnostic_value"]) and math.isnan(records[0]["diagnostic_stderr"])
    assert len(table) == 1 + len(H.names)
    pandas = pytest.importorskip("pandas")
    frame = table.to_pandas()
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame.columns) == [
        "name",
        "group",
        "value",
        "stderr",
        "num_matvecs",
        "error_bound",
        "diagnostic",
        "diagnostic_value",
        "diagnostic_stderr",
        "curvature",
        "error",
    ]
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


def _bn_model_operator():
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(12, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (12,), generator=g)
    return HessianOperator.from_model(net, F.cross_entropy, [(x, y)], mode="eval")


def test_inapplicable_measures_fail_up_front_before_any_work(model_operator, monkeypatch) -> None:
    case, H = model_operator
    calls = []

    def spy(op, *, generator, cache, **options):
        calls.append(op)
        return MeasureValue(1.0)

    monkeypatch.setitem(MEASURES, "exact_trace", spy)
    bn = _bn_model_operator()
    with pytest.raises(
        ConfigurationError, match="path_norm needs BatchNorm folded into the preceding layers"
    ):
        measure(bn, ["exact_trace", "path_norm"])
    with pytest.raises(InputTypeError, match="generator must be a torch.Generator"):
        measure(H, ["exact_trace", "pac_bayes_sigma"])
    with pytest.raises(ConfigurationError, match=r"options\['hutchinson_trace'\] has unknown keys \['rtols"):
        measure(H, ["exact_trace", "hutchinson_trace"], options={"hutchinson_trace": {"rtols": 0.1}})
    with pytest.raises(InputDataError, match="num_restarts must be >= 1"):
        measure(
            H,
            ["exact_trace", "epsilon_sharpness"],
            generator=torch.Generator(),
            options={"epsilon_sharpness": {"num_restarts": 0}},
        )
    with pytest.raises(ConfigurationError, match="initial_weights"):
        measure(H, ["exact_trace", "magnitude_pac_bayes_init"], generator=torch.Generator())
    with pytest.raises(ConfigurationError, match="on_error must be 'record' or 'raise'"):
        measure(H, ["exact_trace"], on_error="ignore")
    assert calls == []  # nothing ran
    G = GeneralizedGaussNewtonOperator(case.net, F.cross_entropy, case.batches([12, 12]), mode="eval")
    for name in ("pac_bayes_sigma", "epsilon_sharpness", "worst_case_sharpness", "gradient_variance"):
        with pytest.raises(ConfigurationError, match=f"{name} measures the loss, which a ggn operator"):
            measure(G, ["exact_trace", name], generator=torch.Generator())
    matrix = MatrixOperator(torch.eye(3, dtype=torch.float64))
    with pytest.raises(ConfigurationError, match="groups need an operator with parameter groups"):
        measure(matrix, ["exact_trace"], groups="parameter")
    with pytest.raises(ConfigurationError, match="exact_scaled_trace needs parameter blocks"):
        measure(matrix, ["exact_scaled_trace"])
    assert calls == []
    monkeypatch.undo()
    row = measure(matrix, ["exact_trace"]).get("exact_trace")
    assert row.value == 3.0 and row.curvature == "MatrixOperator"


def test_a_measure_that_fails_while_running_keeps_the_table(model_operator, monkeypatch) -> None:
    _, H = model_operator

    def broken(op, *, generator, cache, **options):
        raise RuntimeError("solver diverged\non two lines")

    monkeypatch.setitem(MEASURES, "broken", broken)
    names = ["exact_trace", "broken", "hutchinson_trace", "lanczos_top_eigenvalue"]
    options = {"hutchinson_trace": {"num_probes": 1}}  # valid name, invalid value: fails while running
    with pytest.warns(MeasureFailureWarning) as caught:
        table = measure(
            H, names, groups="module", generator=torch.Generator().manual_seed(0), options=options
        )
    assert len(caught) == 6  # two failing measures on three groups
    assert [r.name for r in table] == [name for name in names for _ in range(3)]
    failed = {(r.name, r.group): r for r in table.failures}
    assert set(failed) == {
        (name, group) for name in ("broken", "hutchinson_trace") for group in ("all", "0", "2")
    }
    row = failed["broken", "0"]
    assert math.isnan(row.value) and math.isnan(row.stderr) and row.num_matvecs == 0
    assert row.error == "RuntimeError: solver diverged on two lines"
    assert failed["hutchinson_trace", "all"].error.startswith("InputDataError: num_probes must be >= 2")
    assert table.get("exact_trace").value == pytest.approx(float(exact_trace(H)))
    assert table.get("lanczos_top_eigenvalue", "2").error is None
    frame = pytest.importorskip("pandas").DataFrame(table.to_records())
    assert frame["error"].notna().sum() == 6
    with pytest.raises(RuntimeError, match="solver diverged"):
        measure(H, ["exact_trace", "broken"], on_error="raise")


def test_rows_show_the_standard_errors_of_their_estimators(model_operator) -> None:
    _, H = model_operator
    names = [
        "hutchinson_trace",
        "pac_bayes_sigma",
        "pac_bayes_orig",
        "epsilon_sharpness",
        "worst_case_sharpness",
    ]
    options = {
        "hutchinson_trace": {"num_probes": 20},
        "pac_bayes_sigma": {"num_bisections": 6},
        "pac_bayes_orig": {"num_bisections": 6},
        "epsilon_sharpness": {"num_restarts": 4, "subspace_dim": 5},  # a new random subspace each
        "worst_case_sharpness": {"num_restarts": 3, "num_steps": 3},
    }
    table = measure(H, names, generator=torch.Generator().manual_seed(0), options=options)
    assert not table.failures
    assert table.get("hutchinson_trace").stderr > 0
    for name in ("pac_bayes_sigma", "pac_bayes_orig"):  # one shared sigma, with its loss increase
        row = table.get(name)
        assert row.diagnostic == "loss_increase" and math.isnan(row.stderr)
        assert 0 < row.diagnostic_value <= 0.1 and 0 < row.diagnostic_stderr < row.diagnostic_value
    assert table.get("pac_bayes_orig").diagnostic_value == table.get("pac_bayes_sigma").diagnostic_value
    for name in ("epsilon_sharpness", "worst_case_sharpness"):  # mean over restarts, best as diagnostic
        row = table.get(name)
        assert row.stderr > 0 and row.diagnostic == "max_over_restarts"
        assert row.diagnostic_value >= row.value > 0
    single = measure(H, ["epsilon_sharpness"], generator=torch.Generator().manual_seed(0))
    assert math.isnan(single.get("epsilon_sharpness").stderr)  # one run: no error bar, as before


def test_curvature_matrices_in_the_table(model_operator) -> None:
    case, H = model_operator
    batches = case.batches([12, 12])
    names = ["exact_trace", "hutchinson_trace", "lanczos_top_eigenvalue", "lanczos_bottom_eigenvalue"]
    tables = {
        curvature: measure(
            curvature_operator(
                case.net,
                F.cross_entropy,
                batches,
                curvature=curvature,
                mode="eval",
                generator=torch.Generator(),
            ),
            names,
            groups="module",
            generator=torch.Generator().manual_seed(0),
            options={"hutchinson_trace": {"num_probes": 30}},
        )
        for curvature in ("hessian", "ggn", "fisher", "empirical_fisher")
    }
    for curvature, table in tables.items():
        assert {r.curvature for r in table} == {curvature} and len(table) == 12 and not table.failures
    assert tables["hessian"].get("exact_trace").value == pytest.approx(float(exact_trace(H)))
    for curvature in ("ggn", "fisher", "empirical_fisher"):  # positive semi-definite
        assert tables[curvature].get("lanczos_bottom_eigenvalue").value >= -1e-10
    # H = G + (residual term): the output layer's block of H has no residual term, so it equals G's
    hessian_output, ggn_output = (tables[c].get("exact_trace", "2").value for c in ("hessian", "ggn"))
    assert hessian_output == pytest.approx(ggn_output, rel=1e-10)


def test_pac_bayes_names_of_the_checks_match_the_registry() -> None:
    # measure_checks lists the PAC-Bayes measures itself (it cannot import MEASURES): keep them in step
    from flatminima.curvature.measure import MEASURES
    from flatminima.curvature.measure_checks import _PAC_BAYES

    assert set(_PAC_BAYES) == {name for name in MEASURES if "pac_bayes" in name}

"""Does SGD escape zero-loss minima that are linearly unstable for it? (Wu, Ma & E 2018; Wu et al. 2022-23).

**Question.** Wu, Ma and E (2018) predict that SGD with step eta and batch B can stay at a global minimum
only if the minimum is linearly stable for (eta, B) (:mod:`flatminima.generalization.linear_stability`):
the second moment E[e e^T] of the deviation e = w - w* must not grow under the linearized SGD map T.
Necessary are a = lambda_max(H) <= 2 / eta (the GD condition) and a bounded non-uniformity
s <= 1 / (eta sqrt(c)); Wu, Wang and Su (2022) and Wu and Su (2023) turn this into bounds on ||H||_F and
tr H. Do the exact verdict and these quantities predict whether and how fast SGD leaves a minimum?

**Minima.** Two settings, each at (numerically) zero squared loss f = (1/n) sum_j u_j(w)^2:

* ``sensing``: Gaussian matrix sensing (d x d, rank r, m = n measurements, f(L, R) at width k = d): the
  flat solution (Ding et al. 2024, :func:`~flatminima.solvers.solve_flat`), the balanced factors of the
  norm-minimal one, gradient descent from large random initializations (sharper), and the flat solution
  rescaled (c L, R / c), the same matrix at a sharper point (Dinh et al. 2017);
* ``digits``: a ReLU MLP with one output fitted to +-1 labels (digit >= 5) of n digits images by SGD with
  a small batch and by full-batch GD, each to training loss <= ``digits_target_loss``.

**Linear stability.** At a zero-loss point every per-example Hessian is H_j = 2 grad u_j grad u_j^T, so
all of them live in the span S of the per-example gradients (dim r <= n). T maps matrices supported on S
to such matrices, acts as the identity on the complement and as I - eta H on the mixed blocks, so
rho(T) = max(1, rho(T|S)): :func:`~flatminima.generalization.linear_stability` runs on the (n, r, r)
Hessians in an orthonormal basis of S and ``growth`` is rho(T|S), the factor by which E||e||^2 grows
(> 1) or shrinks (< 1) per step in the curved directions. Beside the necessary conditions on a and s
the figure uses one on the Frobenius norms: T is self-adjoint, so rho(T) >= <I, T(I)> / <I, I>, and
<I, T(I)> = dim - 2 eta tr H + eta^2 [(1 - c) ||H||_F^2 + c (1/n) sum_j ||H_j||_F^2]; stability therefore
needs q = eta [(1 - c) ||H||_F^2 + c (1/n) sum_j ||H_j||_F^2] / (2 tr H) <= 1. At B = 1 (c = 1), with
||H_j||_F = tr H_j, this implies Wu and Su's tr H <= 2 / eta. (For the networks the exact per-example
Hessians of :func:`~flatminima.generalization.per_example_hessians` give the size of the neglected
residual term, ``gauss_newton_error``.) The step sizes are eta = fraction * 2 / a_ref, a_ref the smallest
lambda_max among the setting's minima; the batch sizes are the configured ones and n (GD).

**Escape.** For every minimum and (eta, B), ``runs`` independent SGD runs (batches drawn uniformly without
replacement, as in the analysis) start at w* + e0, e0 uniform on the sphere of radius
``perturbation`` ||w*||; a run escapes at the first step t at which its excess loss f(w_t) - f(w*)
exceeds ``escape_factor`` times its initial excess, and runs at most ``max_steps`` steps. Reported per
cell: the escape probability with its 95 % Wilson interval, the escape steps (median, quartiles), and the
linearized prediction log(escape_factor) / log(rho) of the time E[excess] needs to grow that much.
Nothing is tuned: the figure and caption report whatever happens.

References:
    L. Wu, C. Ma, W. E. How SGD selects the global minima in over-parameterized learning: a dynamical
    stability perspective. NeurIPS 2018.
    L. Wu, M. Wang, W. Su. The alignment property of SGD noise and how it helps select flat minima: a
    stability analysis. NeurIPS 2022.
    L. Wu, W. J. Su. The implicit regularization of dynamical stability in stochastic gradient descent.
    ICML 2023.
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from flatminima._checks import check_int_in_range, check_real
from flatminima.errors import ConfigurationError
from flatminima.experiments.studies import _common as common
from flatminima.experiments.studies._stored_trials import (
    make_trial,
    records_frame,
    run_units,
)
from flatminima.experiments.study import StudyOutput
from flatminima.random import child_generators

Residual = Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class StabilityEscapeConfig:
    """Settings of the study (see the module); every size and count is checked here."""

    seed: int = 0
    sensing_dim: int = 6
    sensing_rank: int = 1
    sensing_measurements: int = 20
    gd_inits: tuple[float, ...] = (0.3, 0.6)
    gd_step: float = 0.02
    gd_iterations: int = 50_000
    rescalings: tuple[float, ...] = (3.0,)
    digits_seeds: tuple[int, ...] = (0, 1, 2)
    digits_examples: int = 48
    digits_hidden: tuple[int, ...] = (8,)
    digits_learning_rate: float = 0.05
    digits_small_batch: int = 4
    digits_target_loss: float = 1e-6
    digits_max_epochs: int = 20000
    step_fractions: tuple[float, ...] = (0.1, 0.3, 0.9)
    batch_sizes: tuple[int, ...] = (1, 4)
    runs: int = 32
    max_steps: int = 1500
    perturbation: float = 1e-3
    escape_factor: float = 1e3

    def __post_init__(self) -> None:
        check_int_in_range("seed", self.seed, low=0)
        check_int_in_range("sensing_dim", self.sensing_dim, low=2)
        check_int_in_range(
            "sensing_rank", self.sensing_rank, low=1, high=self.sensing_dim, high_name="sensing_dim"
        )
        check_int_in_range("sensing_measurements", self.sensing_measurements, low=2)
        common.check_grid("gd_inits", self.gd_inits, check_real, low=0.0, low_open=True)
        check_real("gd_step", self.gd_step, low=0.0, low_open=True)
        check_int_in_range("gd_iterations", self.gd_iterations, low=1)
        for c in self.rescalings:
            check_real("rescalings[i]", c, low=0.0, low_open=True)
        common.check_grid("digits_seeds", self.digits_seeds, check_int_in_range, low=0)
        check_int_in_range(  # the binary digits split holds 1438 training images
            "digits_examples", self.digits_examples, low=2, high=1438, high_name="the training split size"
        )
        common.check_grid("digits_hidden", self.digits_hidden, check_int_in_range, low=1)
        check_real("digits_learning_rate", self.digits_learning_rate, low=0.0, low_open=True)
        check_int_in_range(
            "digits_small_batch",
            self.digits_small_batch,
            low=1,
            high=self.digits_examples - 1,
            high_name="digits_examples - 1",
        )
        check_real("digits_target_loss", self.digits_target_loss, low=0.0, low_open=True)
        check_int_in_range("digits_max_epochs", self.digits_max_epochs, low=1)
        common.check_grid("step_fractions", self.step_fractions, check_real, low=0.0, low_open=True)
        common.check_grid("batch_sizes", self.batch_sizes, check_int_in_range, low=1)
        smallest = min(self.sensing_measurements, self.digits_examples)
        if max(self.batch_sizes) > smallest:
            raise ConfigurationError(
                "batch_sizes must be <= the smaller training set, min(sensing_measurements, "
                f"digits_examples) = {smallest}; got batch_sizes={self.batch_sizes}."
            )
        check_int_in_range("runs", self.runs, low=1)
        check_int_in_range("max_steps", self.max_steps, low=1)
        check_real("perturbation", self.perturbation, low=0.0, low_open=True)
        check_real("escape_factor", self.escape_factor, low=1.0, low_open=True)


QUICK = StabilityEscapeConfig(digits_seeds=(0,), runs=16, max_steps=500)
FULL = StabilityEscapeConfig(
    digits_seeds=(0, 1, 2), step_fractions=(0.05, 0.1, 0.2, 0.4, 0.8), batch_sizes=(1, 2, 4, 8), runs=40
)


@dataclasses.dataclass(frozen=True)
class Minimum:
    """A zero-loss point: its flat parameters, batched residual u(W) (R, P) -> (R, n), and loss."""

    setting: str
    name: str
    point: torch.Tensor
    residual: Residual
    loss: float
    extra: dict[str, float]


def _sensing_minima(config: StabilityEscapeConfig) -> list[Minimum]:
    from flatminima.objectives import BilinearFactorization
    from flatminima.problems import MatrixSensing
    from flatminima.solvers import ConvexResult, solve_flat, solve_nuclear_norm

    d, m = config.sensing_dim, config.sensing_measurements
    gens = child_generators(config.seed, "sensing/instance", *[f"sensing/gd/{s}" for s in config.gd_inits])
    problem = MatrixSensing(shape=(d, d), rank=config.sensing_rank, num_measurements=m)
    instance = problem.sample(generator=gens["sensing/instance"])
    objective = BilinearFactorization(instance, width=d)
    eye, zeros = torch.eye(d, dtype=instance.dtype), torch.zeros(d, d, dtype=instance.dtype)
    A = torch.func.jacrev(lambda X: objective.residual((X, eye)))(zeros).reshape(m, d * d)
    b = -objective.residual((zeros, eye))

    def residual(W: torch.Tensor) -> torch.Tensor:
        X = W[:, : d * d].reshape(-1, d, d) @ W[:, d * d :].reshape(-1, d, d).mT
        return X.reshape(-1, d * d) @ A.T - b

    flat, nnm = solve_flat(instance), solve_nuclear_norm(instance)
    if not isinstance(flat, ConvexResult) or not isinstance(nnm, ConvexResult):  # pragma: no cover
        raise TypeError("solve_flat and solve_nuclear_norm give a ConvexResult for matrix sensing.")
    points = {"flat": flat.factors(d)}
    U, S, Vh = torch.linalg.svd(nnm.matrix)
    points["norm-minimal"] = (U * S.clamp(min=0).sqrt(), Vh.mT * S.clamp(min=0).sqrt())
    for scale in config.gd_inits:  # full-batch GD (batch = m) to loss <= 1e-24
        init = objective.random_params(generator=gens[f"sensing/gd/{scale}"], scale=scale)
        w0 = torch.cat([init[0].reshape(-1), init[1].reshape(-1)])
        w, _, _ = _fit(residual, w0, m, config.gd_step, 1e-24, config.gd_iterations, gens["sensing/instance"])
        points[f"gd-init-{scale:g}"] = (w[: d * d].reshape(d, d), w[d * d :].reshape(d, d))
    L, R = points["flat"]
    for c in config.rescalings:
        points[f"flat-rescaled-{c:g}"] = (c * L, R / c)
    out = []
    for name, (L, R) in points.items():
        w = torch.cat([L.reshape(-1), R.reshape(-1)])
        loss = float(residual(w[None]).square().mean())
        out.append(Minimum("sensing", name, w, residual, loss, {}))
    return out


def _digits_minima(config: StabilityEscapeConfig) -> list[Minimum]:
    from flatminima.generalization import binary_digits_split, per_example_hessians
    from flatminima.networks import mlp

    out = []
    for seed in config.digits_seeds:
        gens = common.streams(seed)
        data = binary_digits_split(generator=gens["split"])
        n = config.digits_examples
        x, y = data.x_train[:n], 2.0 * data.y_train[:n].to(data.x_train.dtype) - 1.0
        initial = mlp(x.shape[1], list(config.digits_hidden), 1, generator=gens["init"])
        residual = functools.partial(_mlp_residual, [tuple(p.shape) for p in initial.parameters()], x, y)
        w0 = torch.cat([p.detach().reshape(-1) for p in initial.parameters()])
        for label, batch in (("small-batch", config.digits_small_batch), ("full-batch", n)):
            w, epochs, loss = _fit(
                residual,
                w0,
                batch,
                config.digits_learning_rate,
                config.digits_target_loss,
                config.digits_max_epochs,
                common.streams(seed)["batches"],
            )
            net = copy.deepcopy(initial)
            torch.nn.utils.vector_to_parameters(w.clone(), net.parameters())
            _, _, exact = per_example_hessians(net, lambda o, t: (o.squeeze(-1) - t).square().mean(), x, y)
            J = torch.func.jacrev(lambda v, r=residual: r(v[None])[0])(w)
            gauss_newton = 2.0 * J.T @ J / n
            error = float(
                torch.linalg.matrix_norm(exact.mean(0) - gauss_newton)
                / torch.linalg.matrix_norm(exact.mean(0))
            )
            extra = {"train_epochs": float(epochs), "gauss_newton_error": error, "training_seed": float(seed)}
            out.append(Minimum("digits", f"{label}/seed{seed}", w, residual, loss, extra))
    return out


def _mlp_residual(
    shapes: list[tuple[int, ...]], x: torch.Tensor, y: torch.Tensor, W: torch.Tensor
) -> torch.Tensor:
    """Residuals (R, n) of R ReLU MLPs (the layout of :func:`~flatminima.networks.mlp`, flat rows of W)."""
    h = x.expand(W.shape[0], *x.shape)
    chunks = W.split([math.prod(s) for s in shapes], dim=1)
    for i in range(0, len(shapes), 2):
        weight = chunks[i].reshape(-1, *shapes[i])
        h = h @ weight.mT + chunks[i + 1][:, None, :]
        if i + 2 < len(shapes):
            h = torch.relu(h)
    return h[..., 0] - y


def _fit(
    residual: Residual,
    w0: torch.Tensor,
    batch: int,
    learning_rate: float,
    target: float,
    max_epochs: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, int, float]:
    """Minibatch SGD on (1/n) sum u_j^2 from w0 until the loss is <= target (epochs of permutations).

    With ``batch`` = n it is gradient descent (the permutation then changes nothing).
    """
    w = w0.clone()
    n = residual(w[None]).shape[1]
    loss, epochs = math.inf, 0
    for epochs in range(1, max_epochs + 1):  # noqa: B007 - the count is returned
        for idx in torch.randperm(n, generator=generator).split(batch) if batch < n else [slice(None)]:
            w.requires_grad_(True)
            (grad,) = torch.autograd.grad(residual(w[None])[0, idx].square().mean(), w)
            w = (w - learning_rate * grad).detach()
        loss = float(residual(w[None]).square().mean())
        if loss <= target or not math.isfinite(loss):
            break
    return w, epochs, loss


def characterize(minimum: Minimum) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-example Hessians 2 g_j g_j^T in an orthonormal basis of their span S, and a, tr, ||H||_F."""
    J = torch.func.jacrev(lambda w: minimum.residual(w[None])[0])(minimum.point)  # (n, P)
    n = J.shape[0]
    U, sv, _ = torch.linalg.svd(J.T, full_matrices=False)
    basis = U[:, sv > sv.max() * 1e-10]
    G = J @ basis
    hessians = 2.0 * G[:, :, None] * G[:, None, :]
    H = hessians.mean(0)
    eig = torch.linalg.eigvalsh(H)
    return hessians, {
        "loss": minimum.loss,
        "lambda_max": float(eig.max()),
        "trace": float(eig.sum()),
        "frobenius": float(torch.linalg.matrix_norm(H)),
        "mean_example_frobenius_sq": float(hessians.square().sum(dim=(1, 2)).mean()),
        "span_dim": float(basis.shape[1]),
        "num_examples": float(n),
        "num_parameters": float(J.shape[1]),
    }


def escape_runs(
    minimum: Minimum,
    *,
    eta: float,
    batch: int,
    runs: int,
    steps: int,
    perturbation: float,
    factor: float,
    generator: torch.Generator,
) -> tuple[list[int], list[float]]:
    """``runs`` SGD runs from random perturbations of the minimum, vectorized over runs (see the module).

    Returns:
        (escape step of each run, -1 when it did not escape; final excess loss / initial excess, log10).
    """
    w_star = minimum.point
    z = torch.randn(runs, w_star.numel(), generator=generator, dtype=w_star.dtype)
    w = w_star + perturbation * w_star.norm() * z / z.norm(dim=1, keepdim=True)
    with torch.no_grad():
        excess0 = minimum.residual(w).square().mean(1) - minimum.loss
    excess0 = excess0.clamp(min=1e-300)
    escaped = torch.full((runs,), -1, dtype=torch.long)
    final = torch.zeros(runs, dtype=w.dtype)
    active = torch.arange(runs)
    for t in range(steps + 1):
        current = w[active].requires_grad_(True)
        u = minimum.residual(current)
        excess = u.detach().square().mean(1) - minimum.loss
        final[active] = excess / excess0[active]
        out = (excess >= factor * excess0[active]) | ~torch.isfinite(excess)
        escaped[active[out]] = t
        if t == steps or bool(out.all()):
            break
        keep = ~out
        index = torch.rand(u.shape, generator=generator, dtype=w.dtype).argsort(dim=1)[:, :batch]
        (grad,) = torch.autograd.grad(u.gather(1, index).square().mean(1).sum(), current)
        w[active[keep]] = (current - eta * grad).detach()[keep]
        active = active[keep]
    return escaped.tolist(), final.clamp(min=1e-300).log10().tolist()


def run(
    config: StabilityEscapeConfig, out_dir: Path, name: str, *, sweep: str, store: Any, progress: bool
) -> StudyOutput:
    """Build the minima (only when a cell is missing from the store), run the cells, draw; see the module."""
    import pandas

    from flatminima.experiments.studies import _stability_escape_figure as draw
    from flatminima.generalization import linear_stability

    builders = {"sensing": _sensing_minima, "digits": _digits_minima}

    @functools.cache
    def setting(kind: str) -> tuple[dict[str, Minimum], float, dict[str, Any]]:
        minima = {m.name: m for m in builders[kind](config)}
        measured = {k: characterize(m) for k, m in minima.items()}
        return minima, min(v[1]["lambda_max"] for v in measured.values()), measured

    def cell(kind: str, label: str, fraction: float, batch: int | None) -> dict[str, Any]:
        minima, reference, measured = setting(kind)
        minimum, (hessians, numbers) = minima[label], measured[label]
        n = int(numbers["num_examples"])
        eta = fraction * 2.0 / reference
        stability = linear_stability(hessians, learning_rate=eta, batch_size=batch or n)
        key = f"{kind}/{label}/{fraction:g}/{batch}"
        escapes, final = escape_runs(
            minimum,
            eta=eta,
            batch=batch or n,
            runs=config.runs,
            steps=config.max_steps,
            perturbation=config.perturbation,
            factor=config.escape_factor,
            generator=child_generators(config.seed, key)[key],
        )
        return {
            **numbers,
            **minimum.extra,
            "learning_rate": eta,
            "reference_lambda_max": reference,
            "batch": batch or n,
            "noise_factor": stability.noise_factor,
            "growth": stability.growth,
            "stable": stability.stable,
            "gd_stable": stability.gd_stable,
            "non_uniformity": stability.non_uniformity,
            "sufficient_growth": stability.sufficient_growth,
            "escape_steps": escapes,
            "final_log10_excess": final,
        }

    settings = {"sensing": _sensing_labels(config), "digits": _digits_labels(config)}
    shared = {
        k: v for k, v in dataclasses.asdict(config).items() if k not in ("step_fractions", "batch_sizes")
    }
    units = []
    for kind, labels in settings.items():
        for label in labels:
            for fraction in config.step_fractions:
                for batch in (*config.batch_sizes, None):
                    params = {"setting": kind, "minimum": label, "fraction": fraction, "batch_size": batch}
                    trial = make_trial(
                        sweep, kind, {**params, "config": shared}, method="sgd-escape", seed=config.seed
                    )
                    units.append((trial, functools.partial(cell, kind, label, fraction, batch)))
    records, result = run_units(units, name=name, sweep=sweep, config=config, store=store, progress=progress)
    frame = records_frame(records).drop(columns=["config"])
    frame = draw.summarize(frame, config.escape_factor)
    runs = draw.runs_frame(frame)
    runs.to_csv(out_dir / f"{name}_runs.csv", index=False)
    frame = frame.drop(columns=["escape_steps", "final_log10_excess"])
    figure = draw.figure(frame, config, out_dir / f"{name}.png")
    return StudyOutput(pandas.DataFrame(frame), figure, draw.table(frame), (result,))


def _sensing_labels(config: StabilityEscapeConfig) -> list[str]:
    gd = [f"gd-init-{s:g}" for s in config.gd_inits]
    return ["flat", "norm-minimal", *gd, *[f"flat-rescaled-{c:g}" for c in config.rescalings]]


def _digits_labels(config: StabilityEscapeConfig) -> list[str]:
    return [f"{label}/seed{s}" for s in config.digits_seeds for label in ("small-batch", "full-batch")]

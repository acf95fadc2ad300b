"""Nonvacuous PAC-Bayes bounds for a stochastic network by optimizing a Gaussian posterior.

Dziugaite and Roy (2017) bound the 0-1 error of a stochastic network Q = N(w, diag(s)) around an SGD
solution. With m training examples S, a prior P chosen before seeing S and the empirical and true 0-1
errors e_S(Q), e(Q) of the network whose weights are drawn from Q anew for every prediction, the
PAC-Bayes-kl theorem (Langford and Seeger 2001, in the form of Maurer 2004, valid for m >= 8) gives,
with probability >= 1 - delta over S, simultaneously for every Q,

    kl(e_S(Q) || e(Q)) <= (KL(Q || P) + log(2 sqrt(m) / delta)) / m.                        (1)

**Prior.** P_lambda = N(w0, lambda I) is centred at the random initialization w0 (drawn independently of
S). The variance lambda is chosen after seeing S from the grid lambda_j = c exp(-j / b), j = 1, 2, ...,
by a union bound that spends delta_j = 6 delta / (pi^2 j^2) on grid point j (sum_j delta_j = delta). Since
j = b log(c / lambda), the confidence term of (1) for the chosen lambda becomes

    log(1 / delta_j) + log(2 sqrt(m)) = log(2 sqrt(m) / delta) + 2 log(b log(c / lambda)) + log(pi^2 / 6),

reported as the *confidence term* log(2 sqrt(m) / delta) and the *union term* 2 log j + log(pi^2 / 6).
(Dziugaite and Roy write the bound with log(m / delta) / (m - 1), Langford and Seeger's original form;
Maurer's log(2 sqrt(m) / delta) / m is smaller for every m >= 8.) The search over ``prior_indices`` costs
nothing beyond the union term: the whole weighting is fixed in advance, over all j >= 1. With d
parameters and s the posterior variances,

    KL(Q || P_lambda) = 1/2 [ (sum_i s_i + ||w - w0||^2) / lambda - d + d log lambda - sum_i log s_i ].

**Optimization.** Starting from the SGD solution w (mean), s = exp(2 rho) and a continuous lambda, the
paper minimizes with a gradient method the McAllester-type relaxation of (1) given by Pinsker's inequality
kl(q || p) >= 2 (p - q)^2,

    ê_S(Q) + sqrt( (KL(Q || P_lambda) + 2 log(b log(c / lambda)) + log(pi^2 / 6) + log(2 sqrt(m) / delta))
                  / (2 m) ),

where ê_S is the differentiable surrogate of the 0-1 error, the logistic loss (binary, one output) or the
cross-entropy (K >= 2 outputs) divided by log 2, an upper bound on the 0-1 loss (a wrong argmax means
p_y <= 1/2), estimated at every step on a minibatch with one weight draw w + exp(rho) * eps
(reparametrization). Here Adam runs ``num_steps`` steps; lambda stays inside the searched grid's range.

**Evaluation.** After optimization lambda is moved to the grid point j that minimizes
KL(Q || P_{lambda_j}) + 2 log j (the posterior is kept). e_S(Q) is not computable, so it is estimated by
the mean ê of the empirical 0-1 errors of n' weight vectors drawn from Q. By the Chernoff bound for
[0, 1] variables in its kl form (Langford and Caruana 2001; the paper's "sample convergence bound"),
with probability >= 1 - delta', kl(ê || e_S(Q)) <= log(2 / delta') / n', so
e_S(Q) <= kl^{-1}_upper(ê, log(2 / delta') / n'). Combining with (1), with probability
>= 1 - delta - delta',

    e(Q) <= kl^{-1}_upper( kl^{-1}_upper(ê, log(2 / delta') / n'),
                           (KL + union term + confidence term) / m ).

The paper (MNIST, m = 55,000) used c = 0.1, b = 100, delta = 0.025, delta' = 0.01, n' = 150,000, RMSprop
with learning rate 0.001 for 200,000 steps of minibatches of 100. For the binary digits task of
:func:`~flatminima.generalization.digits.digits_nonvacuous_bound` (m = 1,438) the defaults here (c = 0.1,
b = 100, delta = 0.025, delta' = 0.01, 2,000 Adam steps of learning rate 0.01 from posterior standard
deviations 0.03 on minibatches of 100, n' = 20,000) took 2.5 minutes on one loaded CPU core, mostly the
Monte Carlo error; fewer steps and samples keep the bound valid (only looser). (The paper's initialization
s = |w|, ``initial_std=None``, needs many more steps.)

References:
    G. K. Dziugaite, D. M. Roy. Computing nonvacuous generalization bounds for deep (stochastic) neural
    networks with many more parameters than training data. UAI 2017.
    J. Langford, M. Seeger. Bounds for averaging classifiers. CMU-CS-01-102, 2001.
    A. Maurer. A note on the PAC Bayesian theorem. arXiv:cs/0411099, 2004.
    J. Langford, R. Caruana. (Not) bounding the true error. NIPS 2001.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import nn

from flatminima._checks import check_generator, check_int_in_range, check_real
from flatminima.errors import InputDataError, InputTypeError
from flatminima.generalization._functional import FlatModel
from flatminima.generalization.kl import gaussian_kl, kl_inverse_upper
from flatminima.networks.data import Dataset

#: log(pi^2 / 6), the constant of the union bound over the prior grid (sum_j 6 / (pi^2 j^2) = 1).
LOG_PI2_OVER_6 = math.log(math.pi**2 / 6.0)


@dataclasses.dataclass(frozen=True)
class NonvacuousBound:
    """Every term of a Dziugaite-Roy bound (see the module for the formulas).

    Attributes:
        bound: the final bound on the stochastic network's true 0-1 error e(Q), holding with probability
            >= 1 - delta - delta_prime.
        kl: KL(Q || P_lambda) for the chosen prior variance.
        union_term: 2 log j + log(pi^2 / 6), the price of choosing lambda_j from the grid.
        confidence_term: log(2 sqrt(m) / delta).
        kl_budget: (kl + union_term + confidence_term) / m, the right-hand side of the PAC-Bayes-kl bound.
        mc_error: ê, the Monte Carlo estimate of the empirical 0-1 error e_S(Q) from n' weight draws.
        mc_error_bound: kl^{-1}_upper(ê, log(2 / delta_prime) / n') >= e_S(Q) (sample convergence bound).
        pinsker_bound: mc_error_bound + sqrt(kl_budget / 2), the relaxation that was optimized.
        train_error_mean: training 0-1 error of the deterministic network at the posterior mean.
        held_out_error_mean: held-out 0-1 error of the network at the posterior mean.
        held_out_error_stochastic: held-out 0-1 error of Q, averaged over the same n' weight draws.
        sgd_train_error: training 0-1 error of the input (SGD) model.
        sgd_held_out_error: held-out 0-1 error of the input model.
        prior_variance: lambda = c exp(-j / b).
        prior_index: j.
        distance_to_prior: ||w - w0|| for the posterior mean w.
        mean_posterior_std: the mean of the posterior standard deviations sqrt(s_i).
        num_examples: m.
        num_held_out: the number of held-out examples.
        num_parameters: d.
        num_mc_samples: n'.
        delta: the confidence of the PAC-Bayes bound.
        delta_prime: the confidence of the sample convergence bound.
        objective_history: the minibatch value of the optimized relaxation at every step.
        posterior_mean: w, flat (d,).
        posterior_std: sqrt(s), flat (d,).
        prior_mean: w0, flat (d,).
    """

    bound: float
    kl: float
    union_term: float
    confidence_term: float
    kl_budget: float
    mc_error: float
    mc_error_bound: float
    pinsker_bound: float
    train_error_mean: float
    held_out_error_mean: float
    held_out_error_stochastic: float
    sgd_train_error: float
    sgd_held_out_error: float
    prior_variance: float
    prior_index: int
    distance_to_prior: float
    mean_posterior_std: float
    num_examples: int
    num_held_out: int
    num_parameters: int
    num_mc_samples: int
    delta: float
    delta_prime: float
    objective_history: tuple[float, ...]
    posterior_mean: torch.Tensor = dataclasses.field(repr=False, compare=False)
    posterior_std: torch.Tensor = dataclasses.field(repr=False, compare=False)
    prior_mean: torch.Tensor = dataclasses.field(repr=False, compare=False)

    @property
    def train_error_stochastic(self) -> float:
        """The Monte Carlo training 0-1 error of Q (the same number as :attr:`mc_error`)."""
        return self.mc_error

    def terms(self) -> dict[str, float]:
        """The scalar fields by name (a row for a table)."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name not in ("objective_history", "posterior_mean", "posterior_std", "prior_mean")
        }


def _check_data(data: object, outputs: int) -> Dataset:
    if not isinstance(data, Dataset):
        raise InputTypeError(f"data must be a flatminima.networks.Dataset; got {type(data).__name__}.")
    classes = 2 if outputs == 1 else outputs
    for name in ("y_train", "y_test"):
        y = getattr(data, name)
        if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise InputTypeError(f"data.{name} must hold integer class labels; got dtype {y.dtype}.")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
            raise InputDataError(
                f"data.{name} must hold labels in 0..{classes - 1} for a model with {outputs} output(s); "
                f"got labels in {int(y.min())}..{int(y.max())}."
            )
    return data


def _outputs(net: FlatModel, x: torch.Tensor) -> int:
    with torch.no_grad():
        out = net(net.point, x[:1])
    if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
        return 1
    if out.ndim != 2:
        raise InputDataError(
            f"model must map (n, features) inputs to (n,), (n, 1) or (n, K) outputs; got {tuple(out.shape)}."
        )
    return int(out.shape[1])


def _surrogate(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The logistic / cross-entropy loss divided by log 2 (an upper bound on the 0-1 loss), mean."""
    if outputs.ndim == 1 or outputs.shape[-1] == 1:
        logits = outputs.reshape(outputs.shape[0])
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))
    else:
        loss = nn.functional.cross_entropy(outputs, y)
    return loss / math.log(2.0)


def _errors(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """0-1 errors per weight draw for outputs of shape (k, n, K) or (k, n[, 1]): shape (k,)."""
    if outputs.ndim == 2 or outputs.shape[-1] == 1:
        predictions = (outputs.reshape(outputs.shape[0], -1) > 0).to(y.dtype)
    else:
        predictions = outputs.argmax(dim=-1)
    return (predictions != y).to(torch.float64).mean(dim=1)


def _deterministic_error(net: FlatModel, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(_errors(net(flat, x).unsqueeze(0), y)[0])


def _check_prior_indices(prior_indices: Sequence[int] | None, resolution: float) -> list[int]:
    if prior_indices is None:
        return list(range(1, math.ceil(40.0 * resolution) + 1))
    if isinstance(prior_indices, str | bytes) or not isinstance(prior_indices, Sequence):
        raise InputTypeError(f"prior_indices must be a sequence of integers j >= 1; got {prior_indices!r}.")
    if len(prior_indices) == 0:
        raise InputDataError(
            "prior_indices must hold at least one j >= 1 (the grid of prior variances c exp(-j/b)); got []."
        )
    return sorted({check_int_in_range(f"prior_indices[{i}]", j, low=1) for i, j in enumerate(prior_indices)})


def dziugaite_roy_bound(
    model: nn.Module,
    data: Dataset,
    *,
    initial_model: nn.Module,
    generator: torch.Generator,
    delta: float = 0.025,
    delta_prime: float = 0.01,
    prior_scale: float = 0.1,
    prior_resolution: float = 100.0,
    prior_indices: Sequence[int] | None = None,
    num_steps: int = 2000,
    batch_size: int | None = None,
    learning_rate: float = 0.01,
    initial_std: float | None = 0.03,
    num_mc_samples: int = 20000,
    mc_chunk_size: int = 64,
) -> NonvacuousBound:
    """Optimize a Gaussian posterior around ``model`` and bound its 0-1 error (see the module).

    Args:
        model: the trained network (e.g. by SGD), whose weights start the posterior mean; never modified.
            One output (binary logistic, labels 0/1, predicting 1 when the logit is > 0) or K >= 2
            outputs (argmax, labels 0..K-1).
        data: ``x_train, y_train`` is the sample S of m >= 8 examples the bound is about;
            ``x_test, y_test`` is only used to report held-out errors.
        initial_model: the network at its random initialization w0 (same architecture), the prior mean;
            it must not depend on S.
        generator: draws the minibatches, the reparametrization noise and the Monte Carlo weights.
        delta: the confidence of the PAC-Bayes bound, in (0, 1).
        delta_prime: the confidence of the Monte Carlo (sample convergence) bound, in (0, 1), with
            delta + delta_prime < 1.
        prior_scale: c > 0, the largest prior variance.
        prior_resolution: b > 0, grid points per unit of log variance.
        prior_indices: the grid of j >= 1 searched for lambda_j = c exp(-j / b); default 1..40 b. The
            union bound is over all j >= 1, so a smaller grid only restricts the search.
        num_steps: optimization steps (>= 0; 0 keeps the initial posterior).
        batch_size: examples per step, 1 <= batch_size <= m (None: min(100, m), the paper's 100).
        learning_rate: Adam's step size (> 0).
        initial_std: the initial posterior standard deviation of every weight (> 0), or None for the
            paper's s = |w| (standard deviation sqrt|w_i|, floored at 1e-8).
        num_mc_samples: n' >= 1, weight draws for the Monte Carlo error.
        mc_chunk_size: weight draws evaluated at once (memory: chunk x m x widest layer).

    Returns:
        A :class:`NonvacuousBound` with every term.

    Raises:
        InputTypeError: if a model is not an ``nn.Module``, ``data`` is not a Dataset or ``generator`` is
            missing.
        InputDataError: if delta or delta_prime is outside (0, 1) or their sum is >= 1, the prior grid is
            empty, a model has no trainable parameters, the two models differ in architecture, m < 8, or
            a count is out of range.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(64, 2, generator=g, dtype=torch.float64)
        >>> data = Dataset(x[:48], (x[:48, 0] > 0).long(), x[48:], (x[48:, 0] > 0).long())
        >>> w0 = mlp(2, [], 1, generator=g)  # a linear model, drawn from g
        >>> net = mlp(2, [], 1, generator=g)
        >>> _ = net[0].weight.data.copy_(torch.tensor([[8.0, 0.0]]))
        >>> r = dziugaite_roy_bound(
        ...     net, data, initial_model=w0, generator=g, num_steps=50, num_mc_samples=200
        ... )
        >>> r.mc_error_bound <= r.bound < 1.0
        True

    References:
        Dziugaite and Roy (2017), Sections 3-4 and Appendix.
    """
    generator = check_generator("generator", generator)
    net = FlatModel.of(model, "model")
    prior = FlatModel.of(initial_model, "initial_model")
    if not net.same_layout(prior):
        raise InputDataError(
            "initial_model must have the same parameter names and shapes as model; got "
            f"{list(zip(prior.names, map(tuple, prior.shapes), strict=True))} against "
            f"{list(zip(net.names, map(tuple, net.shapes), strict=True))}."
        )
    delta = check_real("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)
    delta_prime = check_real("delta_prime", delta_prime, low=0.0, high=1.0, low_open=True, high_open=True)
    if delta + delta_prime >= 1.0:
        raise InputDataError(
            f"delta + delta_prime must be < 1; got delta + delta_prime = {delta + delta_prime}."
        )
    c = check_real("prior_scale", prior_scale, low=0.0, low_open=True)
    b = check_real("prior_resolution", prior_resolution, low=0.0, low_open=True)
    grid = _check_prior_indices(prior_indices, b)
    steps = check_int_in_range("num_steps", num_steps, low=0)
    lr = check_real("learning_rate", learning_rate, low=0.0, low_open=True)
    if initial_std is not None:
        check_real("initial_std", initial_std, low=0.0, low_open=True)
    draws = check_int_in_range("num_mc_samples", num_mc_samples, low=1)
    chunk = check_int_in_range("mc_chunk_size", mc_chunk_size, low=1)
    if not isinstance(data, Dataset):
        raise InputTypeError(f"data must be a flatminima.networks.Dataset; got {type(data).__name__}.")
    x, y = data.x_train, data.y_train
    m = int(x.shape[0])
    if m < 8:
        raise InputDataError(f"data must hold m >= 8 training examples (Maurer's bound); got m={m}.")
    batch_size = min(100, m) if batch_size is None else batch_size
    check_int_in_range("batch_size", batch_size, low=1, high=m, high_name="the number of examples")
    _check_data(data, _outputs(net, x))
    dtype, device = net.point.dtype, net.point.device
    w0 = prior.point.to(dtype=dtype, device=device)
    d = net.size
    confidence_term = math.log(2.0 * math.sqrt(m) / delta)

    # ---- optimize the relaxation over (w, rho, log lambda) --------------------------------------------
    mean = net.point.clone().requires_grad_(True)
    if initial_std is None:
        start = 0.5 * torch.log(net.point.abs().clamp(min=1e-8))
    else:
        start = torch.full_like(net.point, math.log(initial_std))
    rho = start.clone().requires_grad_(True)
    log_c = math.log(c)
    log_lambda_high, log_lambda_low = log_c - grid[0] / b, log_c - grid[-1] / b
    with torch.no_grad():
        best = (torch.exp(2.0 * rho).sum() + (mean - w0).square().sum()) / d
        log_lambda0 = min(max(float(torch.log(best)), log_lambda_low), log_lambda_high)
    log_lambda = torch.tensor(log_lambda0, dtype=dtype, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([mean, rho, log_lambda], lr=lr)
    history: list[float] = []
    batches: list[torch.Tensor] = []
    for _ in range(steps):
        if not batches:  # a fresh permutation per epoch, split into minibatches (the last may be smaller)
            batches = list(
                torch.randperm(m, generator=generator, device=generator.device).cpu().split(batch_size)
            )
        batch = batches.pop(0).to(x.device)
        noise = torch.randn(d, generator=generator, device=generator.device, dtype=torch.float64)
        weights = mean + torch.exp(rho) * noise.to(dtype=dtype, device=device)
        surrogate = _surrogate(net(weights, x[batch]), y[batch])
        lam = torch.exp(log_lambda)
        kl = gaussian_kl(mean, torch.exp(2.0 * rho), w0, lam)
        union = 2.0 * torch.log(b * (log_c - log_lambda)) + LOG_PI2_OVER_6
        objective = surrogate + torch.sqrt((kl + union + confidence_term).clamp(min=0.0) / (2.0 * m))
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        with torch.no_grad():
            log_lambda.clamp_(log_lambda_low, log_lambda_high)
        history.append(float(objective.detach()))

    # ---- the grid point, the Monte Carlo error and the bound ------------------------------------------
    with torch.no_grad():
        w = mean.detach()
        variance = torch.exp(2.0 * rho.detach())
        std = variance.sqrt()
        j = torch.tensor(grid, dtype=torch.float64, device=device)
        lambdas = c * torch.exp(-j / b)
        kls = gaussian_kl(w.to(torch.float64), variance.to(torch.float64), w0.to(torch.float64), lambdas)
        numerators = kls + 2.0 * torch.log(j) + LOG_PI2_OVER_6
        index = int(torch.argmin(numerators))
        prior_index = grid[index]
        kl_value = float(kls[index])
        union_term = 2.0 * math.log(prior_index) + LOG_PI2_OVER_6
        train_errors, held_out_errors = [], []
        batched = torch.func.vmap(net, in_dims=(0, None))
        for start_index in range(0, draws, chunk):
            k = min(chunk, draws - start_index)
            noise = torch.randn(k, d, generator=generator, device=generator.device, dtype=torch.float64)
            samples = w + std * noise.to(dtype=dtype, device=device)
            train_errors.append(_errors(batched(samples, x), y))
            if data.x_test.shape[0]:
                held_out_errors.append(_errors(batched(samples, data.x_test), data.y_test))
        mc_error = float(torch.cat(train_errors).mean())
        held_out_stochastic = float(torch.cat(held_out_errors).mean()) if held_out_errors else math.nan
        x_test, y_test = data.x_test, data.y_test
        has_test = x_test.shape[0] > 0
        train_error_mean = _deterministic_error(net, w, x, y)
        held_out_error_mean = _deterministic_error(net, w, x_test, y_test) if has_test else math.nan
        sgd_train = _deterministic_error(net, net.point, x, y)
        sgd_held_out = _deterministic_error(net, net.point, x_test, y_test) if has_test else math.nan
    mc_error_bound = kl_inverse_upper(mc_error, math.log(2.0 / delta_prime) / draws)
    kl_budget = (kl_value + union_term + confidence_term) / m
    bound = kl_inverse_upper(mc_error_bound, kl_budget)
    return NonvacuousBound(
        bound=bound,
        kl=kl_value,
        union_term=union_term,
        confidence_term=confidence_term,
        kl_budget=kl_budget,
        mc_error=mc_error,
        mc_error_bound=mc_error_bound,
        pinsker_bound=min(1.0, mc_error_bound + math.sqrt(kl_budget / 2.0)),
        train_error_mean=train_error_mean,
        held_out_error_mean=held_out_error_mean,
        held_out_error_stochastic=held_out_stochastic,
        sgd_train_error=sgd_train,
        sgd_held_out_error=sgd_held_out,
        prior_variance=float(lambdas[index]),
        prior_index=prior_index,
        distance_to_prior=float((w - w0).norm()),
        mean_posterior_std=float(std.mean()),
        num_examples=m,
        num_held_out=int(x_test.shape[0]),
        num_parameters=d,
        num_mc_samples=draws,
        delta=delta,
        delta_prime=delta_prime,
        objective_history=tuple(history),
        posterior_mean=w.clone(),
        posterior_std=std.clone(),
        prior_mean=w0.clone(),
    )

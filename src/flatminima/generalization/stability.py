"""Uniform stability of SGD, measured: two runs on data sets differing in one example.

Hardt, Recht and Singer (2016) bound the generalization gap of SGD by its uniform stability: for data
sets S, S^(i) of n examples that differ only in example i (replaced by a fresh example z'_i), the
randomized algorithm A is eps-uniformly stable if sup_z E_A[f(A(S); z) - f(A(S^(i)); z)] <= eps, and then
|E[generalization gap]| <= eps (their Theorem 2.2).

**Measurement.** :func:`sgd_stability` trains the same model from the same initialization with the same
batch order (drawn once from the generator) on S and on S^(i), for several i, by plain minibatch SGD
w_{t+1} = w_t - alpha_t (1/B) sum_{j in batch_t} grad f(w_t; z_j), and records over the steps the
parameter divergence delta_t = ||w_t - w'_t|| and the loss differences |f(w_t; z) - f(w'_t; z)| at
held-out points z (their mean and their maximum over z), with the mean and standard error across i.
Because the batches coincide, the two runs perform bit-identical arithmetic until the first batch that
contains example i: delta_t is exactly zero up to that step.

**The convex bound.** If every f(.; z) is convex, L-Lipschitz and beta-smooth and alpha_t <= 2 / beta, a
gradient step on a common example is non-expansive, and a step whose batch holds example i k_t times
(out of B) moves the two runs apart by at most 2 alpha_t L k_t / B, so pathwise

    delta_T <= 2 L sum_{t < T} alpha_t k_t / B                                       (pathwise bound)

and, since E[k_t] = B / n under sampling with replacement (and for a random permutation per epoch),
E[delta_T] <= (2 L / n) sum_t alpha_t. With |f(w; z) - f(w'; z)| <= L ||w - w'|| this is Theorem 3.8:

    eps_stab <= (2 L^2 / n) sum_{t < T} alpha_t.

For the logistic loss f(w; (x, y)) = log(1 + exp(-y <w, x~>)) of an input with a bias x~ = (x, 1),
||grad f|| <= ||x~|| and grad^2 f <= ||x~||^2 / 4, so L = max ||x~|| and beta = L^2 / 4 over every point
that occurs (training, replacement and held-out): :func:`logistic_regression_constants`.

References:
    M. Hardt, B. Recht, Y. Singer. Train faster, generalize better: stability of stochastic gradient
    descent. ICML 2016 (Definition 2.1, Theorem 2.2, Lemma 3.7, Theorem 3.8).
    O. Bousquet, A. Elisseeff. Stability and generalization. JMLR 2, 2002.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from flatminima._checks import check_generator, check_int_in_range, check_real, check_tensor
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError
from flatminima.generalization._functional import FlatModel

SAMPLINGS: tuple[str, ...] = ("with_replacement", "permutation")
LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class StabilityResult:
    """Two-run divergence of SGD over the steps (index t = steps taken, t = 0..T).

    Attributes:
        indices: the replaced examples i (k of them).
        first_sampled: for each i, the step at which example i first enters a batch (None: never);
            the divergence is exactly zero for t <= that step.
        divergence: (k, T + 1) ||w_t - w'_t|| for each i.
        loss_difference: (k, T + 1) mean over held-out z of |f(w_t; z) - f(w'_t; z)|.
        max_loss_difference: (k, T + 1) max over held-out z of |f(w_t; z) - f(w'_t; z)|.
        divergence_mean, divergence_stderr: (T + 1,) mean and standard error across i (stderr NaN if k = 1).
        loss_difference_mean, loss_difference_stderr: (T + 1,) the same for ``loss_difference``.
        max_loss_difference_mean, max_loss_difference_stderr: (T + 1,) the same for ``max_loss_difference``.
        learning_rates: (T,) alpha_t.
        bound: (T + 1,) (2 L^2 / n) sum_{s < t} alpha_s (Theorem 3.8), or None without ``lipschitz``.
        divergence_bound: (k, T + 1) the pathwise bound 2 L sum_{s < t} alpha_s k_s / B_s on the divergence,
            or None without ``lipschitz`` (valid for convex, beta-smooth losses with alpha_t <= 2 / beta).
        lipschitz: L, or None.
        smoothness: beta, or None.
        num_examples: n.
        batch_size: B.
        sampling: "with_replacement" or "permutation".
    """

    indices: tuple[int, ...]
    first_sampled: tuple[int | None, ...]
    divergence: torch.Tensor
    loss_difference: torch.Tensor
    max_loss_difference: torch.Tensor
    divergence_mean: torch.Tensor
    divergence_stderr: torch.Tensor
    loss_difference_mean: torch.Tensor
    loss_difference_stderr: torch.Tensor
    max_loss_difference_mean: torch.Tensor
    max_loss_difference_stderr: torch.Tensor
    learning_rates: torch.Tensor
    bound: torch.Tensor | None
    divergence_bound: torch.Tensor | None
    lipschitz: float | None
    smoothness: float | None
    num_examples: int
    batch_size: int
    sampling: str

    @property
    def num_steps(self) -> int:
        """T."""
        return int(self.learning_rates.numel())


def logistic_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example logistic loss log(1 + exp(-(2y - 1) u)) of logits u (n,) or (n, 1) and labels y in {0, 1}.

    Example:
        >>> round(float(logistic_loss(torch.zeros(1, 1), torch.ones(1))[0]), 6)  # log 2
        0.693147
    """
    logits = outputs.reshape(outputs.shape[0])
    return nn.functional.binary_cross_entropy_with_logits(
        logits, targets.reshape(logits.shape[0]).to(logits.dtype), reduction="none"
    )


def logistic_regression_constants(*inputs: torch.Tensor, bias: bool = True) -> tuple[float, float]:
    """(L, beta) of the logistic loss of a linear model over the given inputs (see the module).

    L = max_x ||(x, 1)|| (or max ||x|| without a bias) and beta = L^2 / 4; pass every input that occurs
    (training, replacement and held-out points).

    Example:
        >>> L, beta = logistic_regression_constants(torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 0.0]]))
        >>> round(L**2, 12), round(beta, 12)  # ||(3, 0, 1)||^2 = 10
        (10.0, 2.5)
    """
    if not inputs:
        raise InputDataError("logistic_regression_constants needs at least one input tensor.")
    norms = []
    for k, x in enumerate(inputs):
        check_tensor(f"inputs[{k}]", x)
        squared = x.reshape(x.shape[0], -1).to(torch.float64).square().sum(dim=1)
        norms.append(squared + (1.0 if bias else 0.0))
    lipschitz = math.sqrt(float(torch.cat(norms).max()))
    return lipschitz, lipschitz**2 / 4.0


def _learning_rates(learning_rate: float | Sequence[float], steps: int) -> torch.Tensor:
    if isinstance(learning_rate, int | float) and not isinstance(learning_rate, bool):
        check_real("learning_rate", learning_rate, low=0.0, low_open=True)
        return torch.full((steps,), float(learning_rate), dtype=torch.float64)
    if isinstance(learning_rate, str | bytes) or not isinstance(learning_rate, Sequence):
        raise InputTypeError(
            f"learning_rate must be a number or a sequence of num_steps numbers; got {learning_rate!r}."
        )
    if len(learning_rate) != steps:
        raise InputDataError(
            f"learning_rate must hold num_steps = {steps} step sizes; got {len(learning_rate)}."
        )
    rates = [
        check_real(f"learning_rate[{t}]", a, low=0.0, low_open=True) for t, a in enumerate(learning_rate)
    ]
    return torch.tensor(rates, dtype=torch.float64)


def _batches(
    n: int, batch_size: int, steps: int, sampling: str, generator: torch.Generator
) -> list[torch.Tensor]:
    if sampling == "with_replacement":
        draws = torch.randint(n, (steps, batch_size), generator=generator, device=generator.device)
        return list(draws.cpu())
    batches: list[torch.Tensor] = []
    while len(batches) < steps:
        order = torch.randperm(n, generator=generator, device=generator.device).cpu()
        batches.extend(order.split(batch_size))
    return batches[:steps]


def _pair(name: str, value: object) -> tuple[torch.Tensor, torch.Tensor]:
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or not all(isinstance(v, torch.Tensor) for v in value)
    ):
        raise InputTypeError(
            f"{name} must be a pair (inputs, targets) of tensors; got {type(value).__name__}."
        )
    x, y = value
    if x.shape[0] != y.shape[0]:
        raise InputDataError(
            f"{name} must have as many targets as inputs; got {x.shape[0]} inputs and {y.shape[0]} targets."
        )
    check_tensor(f"{name}[0]", x)
    return x, y


def _stderr(values: torch.Tensor) -> torch.Tensor:
    k = values.shape[0]
    if k < 2:
        return torch.full(values.shape[1:], math.nan, dtype=values.dtype)
    return values.std(dim=0, correction=1) / math.sqrt(k)


def sgd_stability(
    model: nn.Module,
    loss_fn: LossFunction,
    train: tuple[torch.Tensor, torch.Tensor],
    replacements: tuple[torch.Tensor, torch.Tensor],
    held_out: tuple[torch.Tensor, torch.Tensor],
    *,
    indices: Sequence[int],
    learning_rate: float | Sequence[float],
    num_steps: int,
    generator: torch.Generator,
    batch_size: int = 1,
    sampling: str = "with_replacement",
    lipschitz: float | None = None,
    smoothness: float | None = None,
) -> StabilityResult:
    """Train on S and on each S^(i) with one batch order and measure how far the runs drift apart.

    Args:
        model: the network at its initialization (copied; never modified).
        loss_fn: ``loss_fn(outputs, targets)`` returning the n per-example losses (reduction "none",
            shape (n,) or (n, 1)), e.g. :func:`logistic_loss`; a step descends their batch mean.
        train: S = (inputs (n, ...), targets (n, ...)).
        replacements: the fresh examples (inputs (k, ...), targets (k, ...)), one per index.
        held_out: the points z = (inputs, targets) where the loss differences are measured.
        indices: the k >= 1 distinct replaced positions i in 0..n-1.
        learning_rate: alpha > 0, constant, or a sequence of the num_steps step sizes alpha_t.
        num_steps: T >= 1.
        generator: draws the batch order, once, shared by every run.
        batch_size: B, 1 <= B <= n.
        sampling: "with_replacement" (B uniform draws per step, Hardt et al.'s randomized rule) or
            "permutation" (a fresh random permutation per epoch, split into batches, the last smaller).
        lipschitz: L > 0 of f(.; z) for every z, to report Theorem 3.8's bound and the pathwise bound.
        smoothness: beta > 0; when given, every alpha_t must be <= 2 / beta.

    Returns:
        A :class:`StabilityResult`.

    Raises:
        InputTypeError: for a non-module model, non-tensor data or a missing generator.
        InputDataError: for a model without parameters, indices out of range or repeated, mismatched
            sizes, B outside 1..n, a non-positive step size, or a step size above 2 / beta.
        ConfigurationError: for an unknown ``sampling``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(20, 2, generator=g, dtype=torch.float64)
        >>> y = (x[:, 0] > 0).double()
        >>> net = torch.nn.utils.skip_init(torch.nn.Linear, 2, 1, dtype=torch.float64)
        >>> _ = torch.nn.init.zeros_(net.weight), torch.nn.init.zeros_(net.bias)
        >>> r = sgd_stability(net, logistic_loss, (x[:10], y[:10]), (x[10:11], y[10:11]), (x[11:], y[11:]),
        ...                   indices=[3], learning_rate=0.5, num_steps=30, generator=g)
        >>> t = r.first_sampled[0]
        >>> float(r.divergence[0, : t + 1].abs().max()), bool(r.divergence[0, t + 1] > 0)
        (0.0, True)

    References:
        Hardt, Recht and Singer (2016), Theorem 3.8.
    """
    generator = check_generator("generator", generator)
    net = FlatModel.of(copy.deepcopy(model) if isinstance(model, nn.Module) else model, "model")
    if not callable(loss_fn):
        raise InputTypeError(f"loss_fn must be callable; got {type(loss_fn).__name__}.")
    x, y = _pair("train", train)
    x_new, y_new = _pair("replacements", replacements)
    x_held, y_held = _pair("held_out", held_out)
    n = int(x.shape[0])
    steps = check_int_in_range("num_steps", num_steps, low=1)
    check_int_in_range("batch_size", batch_size, low=1, high=n, high_name="the number of examples")
    if sampling not in SAMPLINGS:
        raise ConfigurationError(f"sampling must be one of {SAMPLINGS}; got sampling={sampling!r}.")
    if isinstance(indices, str | bytes) or not isinstance(indices, Sequence) or len(indices) == 0:
        raise InputDataError(
            f"indices must be a non-empty sequence of positions in 0..{n - 1}; got {indices!r}."
        )
    chosen = [
        check_int_in_range(f"indices[{k}]", i, low=0, high=n - 1, high_name="n - 1")
        for k, i in enumerate(indices)
    ]
    if len(set(chosen)) != len(chosen):
        raise InputDataError(f"indices must be distinct; got indices={chosen}.")
    if x_new.shape[0] != len(chosen) or x_new.shape[1:] != x.shape[1:] or y_new.shape[1:] != y.shape[1:]:
        raise InputDataError(
            f"replacements must hold one example per index, shaped like train: {len(chosen)} of "
            f"{tuple(x.shape[1:])}; got inputs {tuple(x_new.shape)}."
        )
    if x_held.shape[0] < 1:
        raise InputDataError("held_out must hold at least one example; got 0.")
    rates = _learning_rates(learning_rate, steps)
    L = None if lipschitz is None else check_real("lipschitz", lipschitz, low=0.0, low_open=True)
    beta = None if smoothness is None else check_real("smoothness", smoothness, low=0.0, low_open=True)
    if beta is not None and float(rates.max()) > 2.0 / beta:
        raise InputDataError(
            f"learning_rate must be <= 2 / smoothness = {2.0 / beta} for the convex bound; "
            f"got max alpha_t = {float(rates.max())}."
        )
    held_losses = loss_fn(net(net.point, x_held), y_held)
    if not isinstance(held_losses, torch.Tensor) or held_losses.numel() != x_held.shape[0]:
        got = (
            tuple(held_losses.shape) if isinstance(held_losses, torch.Tensor) else type(held_losses).__name__
        )
        raise InputDataError(
            f"loss_fn must return one loss per example (reduction='none'); got {got} for "
            f"{x_held.shape[0]} examples."
        )
    batches = _batches(n, batch_size, steps, sampling, generator)

    def per_example(w: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return loss_fn(net(w, inputs), targets).reshape(inputs.shape[0])

    def batch_loss(w: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return per_example(w, inputs, targets).mean()

    gradient = torch.func.grad(batch_loss)

    def run(inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = net.point.clone()
        points, losses = [w], [per_example(w, x_held, y_held).detach()]
        for alpha, batch in zip(rates.tolist(), batches, strict=True):
            index = batch.to(inputs.device)
            w = (w - alpha * gradient(w, inputs[index], targets[index])).detach()
            points.append(w)
            losses.append(per_example(w, x_held, y_held).detach())
        return torch.stack(points), torch.stack(losses)

    base_points, base_losses = run(x, y)
    divergence, mean_difference, max_difference, first = [], [], [], []
    for k, i in enumerate(chosen):
        x_i, y_i = x.clone(), y.clone()
        x_i[i], y_i[i] = x_new[k], y_new[k]
        points, losses = run(x_i, y_i)
        divergence.append((points - base_points).norm(dim=1))
        gaps = (losses - base_losses).abs()
        mean_difference.append(gaps.mean(dim=1))
        max_difference.append(gaps.max(dim=1).values)
        hits = [t for t, batch in enumerate(batches) if bool((batch == i).any())]
        first.append(hits[0] if hits else None)
    div, mean_gap, max_gap = (
        torch.stack(divergence),
        torch.stack(mean_difference),
        torch.stack(max_difference),
    )
    bound = pathwise = None
    if L is not None:
        # computed in float64 and cast: sum_{s < t} alpha_s, and the share k_s / B_s of example i in batch s
        cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(rates, 0)])
        bound = (cumulative * (2.0 * L**2 / n)).to(div)
        shares = torch.tensor(
            [[float((batch == i).sum()) / batch.numel() for batch in batches] for i in chosen],
            dtype=torch.float64,
        )
        start = torch.zeros(len(chosen), 1, dtype=torch.float64)
        pathwise = (torch.cat([start, torch.cumsum(rates * shares, 1)], 1) * (2.0 * L)).to(div)
    return StabilityResult(
        indices=tuple(chosen),
        first_sampled=tuple(first),
        divergence=div,
        loss_difference=mean_gap,
        max_loss_difference=max_gap,
        divergence_mean=div.mean(dim=0),
        divergence_stderr=_stderr(div),
        loss_difference_mean=mean_gap.mean(dim=0),
        loss_difference_stderr=_stderr(mean_gap),
        max_loss_difference_mean=max_gap.mean(dim=0),
        max_loss_difference_stderr=_stderr(max_gap),
        learning_rates=rates.to(div),
        bound=bound,
        divergence_bound=pathwise,
        lipschitz=L,
        smoothness=beta,
        num_examples=n,
        batch_size=batch_size,
        sampling=sampling,
    )

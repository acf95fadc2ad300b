"""Linear stability of a minimum under GD and SGD: the minima where a given (eta, B) can stay.

Near a global minimum w* of an interpolating model (every per-example loss f_i is minimal at w*, so
every per-example gradient vanishes there), SGD with learning rate eta and batch xi of size B is, to first
order in e_t = w_t - w*,

    e_{t+1} = (I - eta H_xi) e_t,    H_xi = (1/B) sum_{j in xi} H_j,    H_j = grad^2 f_j(w*),

and H = (1/n) sum_j H_j is the Hessian of the training loss. Wu, Ma and E (2018) call w* linearly
stable when E ||e_t||^2 stays bounded for every start, and characterize it by the sharpness
a = lambda_max(H) and the non-uniformity s = sqrt(lambda_max(Sigma)),
Sigma = (1/n) sum_j H_j^2 - H^2.

**The exact condition used here.** The second moment M_t = E[e_t e_t^T] evolves linearly,
M_{t+1} = T(M_t) with

    T(M) = E[(I - eta H_xi) M (I - eta H_xi)]
         = (I - eta H) M (I - eta H) + eta^2 c ( (1/n) sum_j H_j M H_j - H M H ),

because E[H_xi (x) H_xi] = H (x) H + c ((1/n) sum_j H_j (x) H_j - H (x) H) with the noise factor
c = (n - B) / (B (n - 1)) for a batch drawn uniformly without replacement (Wu et al.'s setting; the
finite-population correction) and c = 1 / B for B independent uniform draws (with replacement).
E ||e_t||^2 = tr M_t stays bounded for every start iff the spectral radius rho(T) <= 1, and grows
like rho(T)^t from some start when rho(T) > 1: T is self-adjoint for the Frobenius inner product
(each X M X with a symmetric X is), hence diagonalizable, and completely positive (an average of
congruences), so rho(T) is its largest eigenvalue, attained at a positive semidefinite M.
:func:`linear_stability` reports ``growth`` = rho(T) and ``stable`` = growth <= 1 + tolerance (flat
directions of H give eigenvalues exactly 1: they neither grow nor shrink). It computes rho(T) from the
d^2 x d^2 matrix of T when d <= 40 (dense symmetric eigensolver) and otherwise by Lanczos (ARPACK) from
the start M = I, which is never orthogonal to the positive semidefinite top eigenvector; each product
costs about 2 n d^3 operations.

**The classical conditions, reported beside it.**

* GD (B = n without replacement, c = 0): T(M) = (I - eta H) M (I - eta H), rho(T) = max_k (1 - eta
  lambda_k)^2, so the minimum is stable iff 0 <= lambda_min(H) and a <= 2 / eta (``gd_stable``).
* Wu et al.'s sufficient condition: E ||e_{t+1}||^2 = E[e_t^T A e_t] with A = E[(I - eta H_xi)^2] =
  (I - eta H)^2 + eta^2 c Sigma, so lambda_max(A) <= 1 implies stability (``sufficient_growth`` =
  lambda_max(A) >= rho(T)).
* Their one-dimensional form (1 - eta a)^2 + eta^2 c s^2 <= 1 (``one_dimensional_growth``). When all H_j
  commute (simultaneously diagonalizable) T leaves the eigen-directions' second moments uncoupled and
  rho(T) = lambda_max(A) = max_k (1 - eta h_k)^2 + eta^2 c sigma_k exactly (h_k, sigma_k the mean and
  variance of the H_j along direction k); in one dimension all three coincide.
* Their necessary conditions a <= 2 / eta and s <= 1 / (eta sqrt(c)) (``necessary``).

Away from interpolation (per-example gradients not zero at w*) SGD's noise does not vanish at w* and the
analysis above describes only the multiplicative part; :func:`model_linear_stability` reports the
gradient norms so that the premise can be checked.

References:
    L. Wu, C. Ma, W. E. How SGD selects the global minima in over-parameterized learning: a dynamical
    stability perspective. NeurIPS 2018 (Section 3, Theorem 1).
    C. Ma, L. Ying. On linear stability of SGD and input-smoothness of neural networks. NeurIPS 2021.
    L. Wu, M. Wang, W. Su. The alignment property of SGD noise and how it helps select flat minima: a
    stability analysis. NeurIPS 2022.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import scipy.sparse.linalg
import torch
from torch import nn

from flatminima._checks import check_int_in_range, check_real, check_tensor
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError
from flatminima.generalization._functional import FlatModel

SAMPLINGS: tuple[str, ...] = ("without_replacement", "with_replacement")
#: the largest d for which rho(T) comes from the dense d^2 x d^2 matrix
DENSE_LIMIT = 40


@dataclasses.dataclass(frozen=True)
class LinearStability:
    """The linear stability of a minimum for (eta, B) (see the module for every formula).

    Attributes:
        stable: growth <= 1 + tolerance: E ||e_t||^2 stays bounded under the linearized SGD (GD when
            c = 0).
        gd_stable: 0 <= lambda_min(H) and sharpness <= 2 / eta (up to the tolerance).
        sufficient: Wu et al.'s sufficient condition, sufficient_growth <= 1 + tolerance.
        necessary: sharpness <= 2 / eta and non_uniformity <= 1 / (eta sqrt(c)) (up to the tolerance).
        growth: rho(T), the exact per-step growth factor of the second moment E[e e^T].
        gd_growth: rho(I - eta H)^2 = max_k (1 - eta lambda_k)^2.
        sufficient_growth: lambda_max((I - eta H)^2 + eta^2 c Sigma) >= growth.
        one_dimensional_growth: (1 - eta a)^2 + eta^2 c s^2.
        sharpness: a = lambda_max(H).
        min_eigenvalue: lambda_min(H).
        non_uniformity: s = sqrt(lambda_max(Sigma)), Sigma = (1/n) sum_j H_j^2 - H^2.
        noise_factor: c, (n - B) / (B (n - 1)) without and 1 / B with replacement.
        sharpness_limit: 2 / eta.
        non_uniformity_limit: 1 / (eta sqrt(c)) (inf when c = 0).
        learning_rate: eta.
        batch_size: B.
        num_examples: n.
        num_parameters: d.
        sampling: "without_replacement" or "with_replacement".
        tolerance: the slack of every verdict.
        loss: the training loss at the point (NaN when only Hessians were given).
        gradient_norm: ||grad L(w*)|| (NaN when only Hessians were given).
        max_example_gradient_norm: max_j ||grad f_j(w*)||, zero at an interpolating minimum (NaN when only
            Hessians were given).
    """

    stable: bool
    gd_stable: bool
    sufficient: bool
    necessary: bool
    growth: float
    gd_growth: float
    sufficient_growth: float
    one_dimensional_growth: float
    sharpness: float
    min_eigenvalue: float
    non_uniformity: float
    noise_factor: float
    sharpness_limit: float
    non_uniformity_limit: float
    learning_rate: float
    batch_size: int
    num_examples: int
    num_parameters: int
    sampling: str
    tolerance: float
    loss: float = math.nan
    gradient_norm: float = math.nan
    max_example_gradient_norm: float = math.nan


def noise_factor(num_examples: int, batch_size: int, sampling: str = "without_replacement") -> float:
    """The noise factor c of Cov(H_xi): (n - B) / (B (n - 1)) or 1 / B (see the module).

    Example:
        >>> noise_factor(10, 10), noise_factor(10, 1), noise_factor(10, 2, "with_replacement")
        (0.0, 1.0, 0.5)
    """
    n = check_int_in_range("num_examples", num_examples, low=1)
    b = check_int_in_range("batch_size", batch_size, low=1, high=n, high_name="the number of examples")
    if sampling not in SAMPLINGS:
        raise ConfigurationError(f"sampling must be one of {SAMPLINGS}; got sampling={sampling!r}.")
    if sampling == "with_replacement":
        return 1.0 / b
    return 0.0 if n == 1 else (n - b) / (b * (n - 1))


def second_moment_map(
    hessians: torch.Tensor, M: torch.Tensor, *, learning_rate: float, noise: float
) -> torch.Tensor:
    """T(M) = (I - eta H) M (I - eta H) + eta^2 c ((1/n) sum_j H_j M H_j - H M H), for a batch of M.

    Args:
        hessians: (n, d, d) symmetric per-example Hessians H_j.
        M: (d, d) or (b, d, d).
        learning_rate: eta.
        noise: c (:func:`noise_factor`).

    Example:
        >>> H = torch.tensor([[[1.0]], [[3.0]]], dtype=torch.float64)  # h = 2, variance 1
        >>> float(second_moment_map(H, torch.ones(1, 1, dtype=torch.float64), learning_rate=0.5, noise=1.0))
        0.25
    """
    H = hessians.mean(dim=0)
    A = torch.eye(H.shape[0], dtype=H.dtype, device=H.device) - learning_rate * H
    out = A @ M @ A
    if noise:
        squeeze = M.ndim == 2
        batch = M.unsqueeze(0) if squeeze else M
        sandwiched = torch.einsum("nik,bkl,nlj->bij", hessians, batch, hessians) / hessians.shape[0]
        extra = sandwiched - H @ batch @ H
        out = out + learning_rate**2 * noise * (extra[0] if squeeze else extra)
    return out


def _growth(hessians: torch.Tensor, learning_rate: float, noise: float) -> float:
    """rho(T), the largest eigenvalue of the self-adjoint map T."""
    n, d, _ = hessians.shape
    if d <= DENSE_LIMIT:
        H = hessians.mean(dim=0)
        A = torch.eye(d, dtype=H.dtype, device=H.device) - learning_rate * H
        K = torch.kron(A, A)
        if noise:
            mean_kron = torch.einsum("nik,njl->ijkl", hessians, hessians).reshape(d * d, d * d) / n
            K = K + learning_rate**2 * noise * (mean_kron - torch.kron(H, H))
        return float(torch.linalg.eigvalsh(0.5 * (K + K.T)).max())
    cpu = hessians.detach().to(device="cpu", dtype=torch.float64)

    def matvec(v: np.ndarray) -> np.ndarray:
        M = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(d, d))
        return second_moment_map(cpu, M, learning_rate=learning_rate, noise=noise).reshape(-1).numpy()

    operator = scipy.sparse.linalg.LinearOperator((d * d, d * d), matvec=matvec, dtype=np.float64)
    start = np.eye(d).reshape(-1) / math.sqrt(d)
    top = scipy.sparse.linalg.eigsh(operator, k=1, which="LA", v0=start, tol=1e-12, return_eigenvectors=False)
    return float(top[0])


def linear_stability(
    hessians: torch.Tensor,
    *,
    learning_rate: float,
    batch_size: int | None = None,
    sampling: str = "without_replacement",
    tolerance: float = 1e-8,
) -> LinearStability:
    """Whether a minimum with per-example Hessians H_j is linearly stable for SGD(eta, B) (see the module).

    Args:
        hessians: (n, d, d) per-example Hessians at the minimum (symmetrized), or one (d, d) Hessian H
            (n = 1: GD only, so ``batch_size`` must be None or 1).
        learning_rate: eta > 0.
        batch_size: B, 1 <= B <= n; None for full-batch GD (B = n).
        sampling: "without_replacement" (Wu et al.) or "with_replacement".
        tolerance: slack >= 0 of every verdict (growth <= 1 + tolerance, ...).

    Returns:
        A :class:`LinearStability`. Spectra are computed in float64 on the Hessians' device.

    Raises:
        InputTypeError: if ``hessians`` is not a floating tensor.
        InputDataError: if it is not (n, d, d) or (d, d) with finite entries, eta <= 0, B < 1 or B > n.
        ConfigurationError: for an unknown ``sampling``.

    Example:
        >>> H = torch.tensor([[[1.0]], [[3.0]]], dtype=torch.float64)  # a = 2, s = 1
        >>> gd = linear_stability(H, learning_rate=0.9)  # GD: 0.9 * 2 <= 2
        >>> sgd = linear_stability(H, learning_rate=0.9, batch_size=1)  # c = 1: 0.64 + 0.81 * 1 > 1
        >>> gd.stable, sgd.stable, round(sgd.growth, 10)
        (True, False, 1.45)
        >>> round(linear_stability(H, learning_rate=0.5, batch_size=1).growth, 10)  # 0 + 0.25 * 1
        0.25

    References:
        Wu, Ma and E (2018), Theorem 1.
    """
    check_tensor("hessians", hessians)
    if hessians.ndim == 2:
        hessians = hessians.unsqueeze(0)
    if hessians.ndim != 3 or hessians.shape[1] != hessians.shape[2] or hessians.shape[0] < 1:
        raise InputDataError(
            f"hessians must have shape (n, d, d) or (d, d); got hessians.shape={tuple(hessians.shape)}."
        )
    eta = check_real("learning_rate", learning_rate, low=0.0, low_open=True)
    n, d = int(hessians.shape[0]), int(hessians.shape[1])
    if d < 1:
        raise InputDataError("hessians must have d >= 1 parameters; got d=0.")
    batch = n if batch_size is None else batch_size
    check_int_in_range("batch_size", batch, low=1, high=n, high_name="the number of examples")
    tol = check_real("tolerance", tolerance, low=0.0)
    c = noise_factor(n, batch, sampling)
    Hj = hessians.to(torch.float64)
    Hj = 0.5 * (Hj + Hj.transpose(1, 2))
    H = Hj.mean(dim=0)
    eigenvalues = torch.linalg.eigvalsh(H)
    a, low = float(eigenvalues.max()), float(eigenvalues.min())
    Sigma = (Hj @ Hj).mean(dim=0) - H @ H
    s = math.sqrt(max(float(torch.linalg.eigvalsh(0.5 * (Sigma + Sigma.T)).max()), 0.0))
    identity = torch.eye(d, dtype=torch.float64, device=H.device)
    A = identity - eta * H
    sufficient_growth = float(torch.linalg.eigvalsh(A @ A + eta**2 * c * Sigma).max())
    gd_growth = float(((1.0 - eta * eigenvalues) ** 2).max())
    growth = _growth(Hj, eta, c)
    s_limit = math.inf if c == 0.0 else 1.0 / (eta * math.sqrt(c))
    return LinearStability(
        stable=growth <= 1.0 + tol,
        gd_stable=gd_growth <= 1.0 + tol,
        sufficient=sufficient_growth <= 1.0 + tol,
        necessary=a <= (2.0 / eta) * (1.0 + tol) and s <= s_limit * (1.0 + tol),
        growth=growth,
        gd_growth=gd_growth,
        sufficient_growth=sufficient_growth,
        one_dimensional_growth=(1.0 - eta * a) ** 2 + eta**2 * c * s**2,
        sharpness=a,
        min_eigenvalue=low,
        non_uniformity=s,
        noise_factor=c,
        sharpness_limit=2.0 / eta,
        non_uniformity_limit=s_limit,
        learning_rate=eta,
        batch_size=batch,
        num_examples=n,
        num_parameters=d,
        sampling=sampling,
        tolerance=tol,
    )


def per_example_hessians(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example losses, gradients and Hessians over the trainable parameters (flat, in order).

    Each example's loss is ``loss_fn(model(x_j[None]), y_j[None])`` (a mean-reducing loss on a batch of
    one); its Hessian comes from ``torch.func.jacrev`` of ``torch.func.grad``, vmapped over ``chunk_size``
    examples at a time.
    The model is evaluated functionally (never modified) in its current train/eval mode; use eval mode
    for dropout or BatchNorm. Memory: n d^2 numbers, so this is for small models.

    Returns:
        (losses (n,), gradients (n, d), hessians (n, d, d)), in the model's dtype and device.

    Raises:
        InputTypeError: if ``model`` is not an ``nn.Module`` or ``inputs`` is not a floating tensor.
        InputDataError: for a model without trainable parameters or mismatched inputs and targets.

    Example:
        >>> net = torch.nn.utils.skip_init(torch.nn.Linear, 2, 1, bias=False, dtype=torch.float64)
        >>> _ = torch.nn.init.zeros_(net.weight)
        >>> x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
        >>> _, _, H = per_example_hessians(net, torch.nn.functional.mse_loss, x, torch.zeros(1, 1).double())
        >>> H[0]  # 2 x x^T
        tensor([[2., 4.],
                [4., 8.]], dtype=torch.float64)
    """
    net = FlatModel.of(model, "model")
    check_tensor("inputs", inputs)
    if not isinstance(targets, torch.Tensor):
        raise InputTypeError(f"targets must be a torch.Tensor; got {type(targets).__name__}.")
    if inputs.shape[0] != targets.shape[0] or inputs.shape[0] < 1:
        raise InputDataError(
            f"inputs and targets must hold the same number n >= 1 of examples; got {inputs.shape[0]} and "
            f"{targets.shape[0]}."
        )
    chunk = check_int_in_range("chunk_size", chunk_size, low=1)

    def example_loss(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_fn(net(w, x.unsqueeze(0)), y.unsqueeze(0))

    value = torch.func.vmap(example_loss, in_dims=(None, 0, 0))
    grad = torch.func.vmap(torch.func.grad(example_loss), in_dims=(None, 0, 0))
    # reverse over reverse (jacrev of grad): no forward-mode AD, whose first use makes torch warn
    hessian = torch.func.vmap(torch.func.jacrev(torch.func.grad(example_loss)), in_dims=(None, 0, 0))
    losses, grads, hessians = [], [], []
    w = net.point
    for start in range(0, inputs.shape[0], chunk):
        x, y = inputs[start : start + chunk], targets[start : start + chunk]
        losses.append(value(w, x, y).detach())
        grads.append(grad(w, x, y).detach())
        hessians.append(hessian(w, x, y).detach())
    return torch.cat(losses), torch.cat(grads), torch.cat(hessians)


def model_linear_stability(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    learning_rate: float,
    batch_size: int | None = None,
    sampling: str = "without_replacement",
    tolerance: float = 1e-8,
    chunk_size: int = 64,
) -> LinearStability:
    """:func:`linear_stability` of a model at its current weights, on a data set of n examples.

    The per-example Hessians come from :func:`per_example_hessians` (``loss_fn`` reduces by the mean,
    the training loss is the mean over the n examples); the result also carries the loss, the gradient
    norm and the largest per-example gradient norm at the point, which vanish at an interpolating
    minimum (the premise of the analysis).

    Raises:
        As :func:`per_example_hessians` and :func:`linear_stability`.

    Example:
        >>> net = torch.nn.utils.skip_init(torch.nn.Linear, 1, 1, bias=False, dtype=torch.float64)
        >>> _ = torch.nn.init.zeros_(net.weight)
        >>> x = torch.tensor([[1.0], [2.0]], dtype=torch.float64)  # H_j = 2 x_j^2 = 2, 8
        >>> gd = model_linear_stability(net, torch.nn.functional.mse_loss, x, 0 * x, learning_rate=0.3)
        >>> sgd = model_linear_stability(
        ...     net, torch.nn.functional.mse_loss, x, 0 * x, learning_rate=0.3, batch_size=1
        ... )  # H = 5, Sigma = 9, c = 1: (1 - 1.5)^2 + 0.09 * 9 = 1.06
        >>> gd.sharpness, gd.stable, sgd.stable, gd.max_example_gradient_norm
        (5.0, True, False, 0.0)
    """
    losses, grads, hessians = per_example_hessians(model, loss_fn, inputs, targets, chunk_size=chunk_size)
    result = linear_stability(
        hessians, learning_rate=learning_rate, batch_size=batch_size, sampling=sampling, tolerance=tolerance
    )
    return dataclasses.replace(
        result,
        loss=float(losses.mean()),
        gradient_norm=float(grads.mean(dim=0).norm()),
        max_example_gradient_norm=float(grads.norm(dim=1).max()),
    )

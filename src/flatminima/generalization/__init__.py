"""Generalization: nonvacuous PAC-Bayes bounds, the uniform stability of SGD, the linear stability of minima.

* :mod:`.nonvacuous` (Dziugaite and Roy 2017): :func:`dziugaite_roy_bound` optimizes a Gaussian posterior
  N(w, diag(s)) around a trained network against the PAC-Bayes-kl bound with a prior N(w0, lambda I) at
  the initialization (lambda from a grid, paid for by a union bound) and returns every term of the final
  bound in a :class:`NonvacuousBound`; in :mod:`.digits`, :func:`binary_digits_split` and
  :func:`digits_nonvacuous_bound` run the whole experiment on scikit-learn's bundled digits (label
  1[digit >= 5]).
* :mod:`.kl`: :func:`bernoulli_kl` and its inverses :func:`kl_inverse_upper`, :func:`kl_inverse_lower`;
  :func:`gaussian_kl`, the KL divergence between the posterior and the prior.
* :mod:`.stability` (Hardt, Recht and Singer 2016): :func:`sgd_stability` trains on S and on S^(i) with one
  batch order and returns the divergence and held-out loss differences over the steps in a
  :class:`StabilityResult`, with Theorem 3.8's bound (2 L^2 / n) sum_t alpha_t for convex smooth losses;
  :func:`logistic_loss`, :func:`logistic_regression_constants`.
* :mod:`.linear_stability` (Wu, Ma and E 2018): :func:`linear_stability` (from per-example Hessians or one
  Hessian) and :func:`model_linear_stability` (from a model, a loss and data) tell whether a minimum is
  linearly stable for GD and SGD(eta, B), with sharpness, non-uniformity and the exact second-moment
  growth factor in a :class:`LinearStability`; :func:`per_example_hessians`, :func:`noise_factor`,
  :func:`second_moment_map`.

Every random function takes an explicit ``torch.Generator``; nothing touches the global RNG.
"""

from flatminima.generalization.digits import binary_digits_split, digits_nonvacuous_bound
from flatminima.generalization.kl import bernoulli_kl, gaussian_kl, kl_inverse_lower, kl_inverse_upper
from flatminima.generalization.linear_stability import (
    LinearStability,
    linear_stability,
    model_linear_stability,
    noise_factor,
    per_example_hessians,
    second_moment_map,
)
from flatminima.generalization.nonvacuous import NonvacuousBound, dziugaite_roy_bound
from flatminima.generalization.stability import (
    StabilityResult,
    logistic_loss,
    logistic_regression_constants,
    sgd_stability,
)

__all__ = [
    "LinearStability",
    "NonvacuousBound",
    "StabilityResult",
    "bernoulli_kl",
    "binary_digits_split",
    "digits_nonvacuous_bound",
    "dziugaite_roy_bound",
    "gaussian_kl",
    "kl_inverse_lower",
    "kl_inverse_upper",
    "linear_stability",
    "logistic_loss",
    "logistic_regression_constants",
    "model_linear_stability",
    "noise_factor",
    "per_example_hessians",
    "second_moment_map",
    "sgd_stability",
]

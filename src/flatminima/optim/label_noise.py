r"""Label noise for square-loss training of any model (Blanc et al. 2020; Damian, Ma, Lee 2021).

Label-noise SGD replaces each target y_i of the sampled minibatch by y_i + eps_i with fresh, independent
eps_i (uniform on {-sigma, +sigma} in Blanc et al.; Gaussian N(0, sigma^2) is also common) and takes an
ordinary SGD step on the square loss. At a zero-loss point the added gradient noise has covariance
proportional to sigma^2 / B times the Gauss-Newton matrix (= the Hessian there), which makes SGD drift
along the zero-loss manifold towards smaller tr grad^2 L: Damian et al. show convergence to stationary
points of L + lambda R with R ~ tr grad^2 L / 4 for small steps and lambda proportional to eta sigma^2 / B.

Use: ``loss = ((model(x) - perturb_labels(y, noise_level=sigma, generator=g)) ** 2).mean()`` with any
optimizer (plain ``torch.optim.SGD`` gives label-noise SGD).

References:
    G. Blanc, N. Gupta, G. Valiant, P. Valiant. Implicit regularization for deep neural networks driven
    by an Ornstein-Uhlenbeck like process. COLT 2020.
    A. Damian, T. Ma, J. D. Lee. Label noise SGD provably prefers flat global minimizers. NeurIPS 2021.
"""

from __future__ import annotations

import torch

from flatminima._checks import check_real, check_tensor
from flatminima.optim._random import check_distribution, noise_like, require_generator


def perturb_labels(
    targets: torch.Tensor,
    *,
    noise_level: float,
    generator: torch.Generator,
    distribution: str = "rademacher",
) -> torch.Tensor:
    r"""Return targets + eps with fresh i.i.d. eps of standard deviation ``noise_level``.

    Args:
        targets: real-valued targets (any shape; floating dtype).
        noise_level: sigma >= 0, the standard deviation of each eps_i.
        generator: the random stream (required).
        distribution: ``"rademacher"`` (eps uniform on {-sigma, +sigma}, Blanc et al.) or ``"gaussian"``.

    Returns:
        A new tensor with the dtype and device of ``targets``.

    Raises:
        InputDataError: if ``noise_level`` is negative or ``distribution`` unknown.
        InputTypeError: if ``generator`` is missing or ``targets`` is not a floating tensor.

    Example:
        >>> y = torch.zeros(4)
        >>> perturb_labels(y, noise_level=0.5, generator=torch.Generator().manual_seed(0)).abs()
        tensor([0.5000, 0.5000, 0.5000, 0.5000])
    """
    generator = require_generator("perturb_labels", generator)
    sigma = check_real("noise_level", noise_level, low=0.0)
    distribution = check_distribution(distribution)
    check_tensor("targets", targets, finite=False)
    if sigma == 0.0:
        return targets.clone()
    return targets + sigma * noise_like(targets, distribution, generator=generator)

"""Theory curves for the experiments: where convex relaxations start to recover (phase transitions).

* :func:`nuclear_norm_statistical_dimension`: the descent cone of the nuclear norm at a rank-r
  d1 x d2 matrix (Amelunxen, Lotz, McCoy & Tropp 2014, Prop. 4.7), the Gaussian-measurement count at
  which nuclear-norm minimization starts to recover;
* :func:`symmetric_nuclear_norm_statistical_dimension`: the same on symmetric matrices (the quadratic
  network's relaxation);
* :func:`psd_trace_statistical_dimension`: trace minimization over the PSD cone (covariance estimation,
  phase retrieval).
"""

from flatminima.theory.statistical_dimension import (
    marchenko_pastur_singular_value_density,
    nuclear_norm_statistical_dimension,
    psd_trace_statistical_dimension,
    symmetric_nuclear_norm_statistical_dimension,
)

__all__ = [
    "marchenko_pastur_singular_value_density",
    "nuclear_norm_statistical_dimension",
    "psd_trace_statistical_dimension",
    "symmetric_nuclear_norm_statistical_dimension",
]

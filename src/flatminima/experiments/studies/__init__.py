"""Neural-network studies of flatness and generalization on digits, registered as reproductions.

* ``keskar-batch``: large vs small batch, epsilon-sharpness, Hessian, gap (Keskar et al. 2017);
* ``fantastic-measures``: Kendall tau of flatness measures and norm baselines with the generalization gap
  over a grid of models, overall and granulated (Jiang et al. 2020);
* ``dinh-reparam``: layer rescaling changes Hessian measures but not the function (Dinh et al. 2017);
* ``noise-scale``: final sharpness and test accuracy against learning rate / batch size (Jastrzebski et
  al. 2018);
* ``landscape-digits``: 1-D interpolation, filter-normalized and Hessian 2-D slices, basin widths of a
  small- and a large-batch digits MLP (Li et al. 2018);
* ``landscape-sensing``: flat vs norm-minimal vs gradient-descent solutions of matrix sensing, basin
  widths along scaled random directions (Ding et al. 2024);
* ``flat-algorithms``: which flat-minimum algorithm (GD, SGD, SAM, Entropy-SGD, label-noise SGD, SWA,
  trace penalties) reaches the flat solution of matrix sensing and a quadratic network.
"""

from __future__ import annotations

from flatminima.experiments.studies import (
    dinh,
    fantastic,
    flat_algorithms,
    keskar,
    landscapes,
    noise_scale,
    sensing_landscape,
)
from flatminima.experiments.study import Study

STUDIES: dict[str, Study] = {
    "keskar-batch": Study(
        "keskar-batch",
        "large vs small batch on digits: epsilon-sharpness, lambda_max, trace, gap (Keskar et al. 2017)",
        keskar.QUICK,
        keskar.FULL,
        keskar.run,
    ),
    "dinh-reparam": Study(
        "dinh-reparam",
        "ReLU layer rescaling: same function, Hessian measures move, adaptive ones do not (Dinh et al. 2017)",
        dinh.QUICK,
        dinh.FULL,
        dinh.run,
    ),
    "fantastic-measures": Study(
        "fantastic-measures",
        "Kendall tau (overall, granulated) of flatness and norm measures with the gap (Jiang et al. 2020)",
        fantastic.QUICK,
        fantastic.FULL,
        fantastic.run,
    ),
    "noise-scale": Study(
        "noise-scale",
        "final sharpness and test accuracy against learning rate / batch size (Jastrzebski et al. 2018)",
        noise_scale.QUICK,
        noise_scale.FULL,
        noise_scale.run,
    ),
    "landscape-digits": Study(
        "landscape-digits",
        "digits MLP landscapes: interpolation, filter-normalized and Hessian slices, basin widths",
        landscapes.QUICK,
        landscapes.FULL,
        landscapes.run,
    ),
    "landscape-sensing": Study(
        "landscape-sensing",
        "matrix sensing landscapes: flat vs norm-minimal vs GD solutions, scaled basin widths",
        sensing_landscape.QUICK,
        sensing_landscape.FULL,
        sensing_landscape.run,
    ),
    "flat-algorithms": Study(
        "flat-algorithms",
        "which flat-minimum algorithm (SAM, label noise, Entropy-SGD, ...) reaches the flat solution",
        flat_algorithms.QUICK,
        flat_algorithms.FULL,
        flat_algorithms.run,
    ),
}

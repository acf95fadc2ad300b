"""Neural-network studies of flatness and generalization on digits, registered as reproductions.

* ``keskar-batch``: large vs small batch, epsilon-sharpness, Hessian, gap (Keskar et al. 2017);
* ``fantastic-measures``: Kendall tau of flatness measures and norm baselines with the generalization gap
  over a grid of models, overall and granulated, with bootstrap intervals (Jiang et al. 2020);
* ``random-labels``: 0-100 % random labels at several training-set sizes: test error, flatness measures
  and expected sharpness against the PAC-Bayes KL term (Zhang et al. 2017; Neyshabur et al. 2017);
* ``width-sweep``: test error and flatness / capacity measures against hidden width at ~zero training
  error (Neyshabur, Tomioka & Srebro 2015);
* ``hochreiter-mdl``: flat-box description length of small- and large-batch minima against test error
  (Hochreiter & Schmidhuber 1997);
* ``dinh-reparam``: layer rescaling changes Hessian measures but not the function (Dinh et al. 2017);
* ``noise-scale``: final sharpness and test accuracy against learning rate / batch size (Jastrzebski et
  al. 2018);
* ``landscape-digits``: 1-D interpolation, filter-normalized and Hessian 2-D slices, basin widths of a
  small- and a large-batch digits MLP (Li et al. 2018);
* ``landscape-sensing``: flat vs norm-minimal vs gradient-descent solutions of matrix sensing, basin
  widths along scaled random directions (Ding et al. 2024);
* ``flat-algorithms``: which flat-minimum algorithm (GD, SGD, SAM, Entropy-SGD, label-noise SGD, SWA,
  trace penalties) reaches the flat solution of matrix sensing and a quadratic network;
* ``wen-xor``: do the flattest zero-loss minimizers of two-layer ReLU MLPs on XOR (with / without bias,
  GD / SAM, many initializations) generalize? Rank correlations with bootstrap intervals (Wen et al. 2023);
* ``dauphin-index``: critical points of a tanh MLP on pooled digits by Levenberg-Marquardt on grad L = 0:
  index against loss, and the spectrum's bulk against the semicircle (Dauphin et al. 2014);
* ``choromanska-minima``: spread of the test losses of the minima reached from random initializations
  against hidden width (Choromanska et al. 2015);
* ``stability-escape``: escape probability and time of SGD started at zero-loss minima of matrix sensing
  and digits networks against lambda_max, non-uniformity, Frobenius / trace and the exact linear-stability
  growth factor (Wu, Ma & E 2018; Wu et al. 2022-23);
* ``schedules``: monotone (constant, step decay, cosine) vs non-monotone (cyclic, warm restarts, burst)
  learning rates: final sharpness and test accuracy on digits, scaled trace on sensing (Seong et al. 2018);
* ``dziugaite-roy``: every term of the nonvacuous PAC-Bayes bound of a binary digits MLP against its
  held-out error, per seed and against the training-set size (Dziugaite & Roy 2017).
"""

from __future__ import annotations

from flatminima.experiments.studies import (
    choromanska_minima,
    dauphin_index,
    dinh,
    dziugaite_roy,
    fantastic,
    flat_algorithms,
    hochreiter_mdl,
    keskar,
    landscapes,
    noise_scale,
    random_labels,
    schedules_study,
    sensing_landscape,
    stability_escape,
    wen_xor,
    width_sweep,
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
    "random-labels": Study(
        "random-labels",
        "0-100 % random labels: test error, flatness, expected sharpness vs KL (Zhang 2017; Neyshabur 2017)",
        random_labels.QUICK,
        random_labels.FULL,
        random_labels.run,
    ),
    "width-sweep": Study(
        "width-sweep",
        "test error and flatness / capacity measures against hidden width (Neyshabur et al. 2015)",
        width_sweep.QUICK,
        width_sweep.FULL,
        width_sweep.run,
    ),
    "hochreiter-mdl": Study(
        "hochreiter-mdl",
        "flat-box description length of small- vs large-batch minima (Hochreiter & Schmidhuber 1997)",
        hochreiter_mdl.QUICK,
        hochreiter_mdl.FULL,
        hochreiter_mdl.run,
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
    "wen-xor": Study(
        "wen-xor",
        "XOR two-layer MLPs with / without bias: do the flattest zero-loss minimizers generalize? (Wen 2023)",
        wen_xor.QUICK,
        wen_xor.FULL,
        wen_xor.run,
    ),
    "dauphin-index": Study(
        "dauphin-index",
        "critical points of a tanh MLP: index against loss, bulk vs the semicircle (Dauphin et al. 2014)",
        dauphin_index.QUICK,
        dauphin_index.FULL,
        dauphin_index.run,
    ),
    "choromanska-minima": Study(
        "choromanska-minima",
        "test losses of minima from many initializations concentrate with width (Choromanska et al. 2015)",
        choromanska_minima.QUICK,
        choromanska_minima.FULL,
        choromanska_minima.run,
    ),
    "stability-escape": Study(
        "stability-escape",
        "SGD escape from zero-loss minima against linear stability (Wu, Ma & E 2018; Wu et al. 2022-23)",
        stability_escape.QUICK,
        stability_escape.FULL,
        stability_escape.run,
    ),
    "schedules": Study(
        "schedules",
        "monotone vs cyclic / warm-restart / burst learning rates: final sharpness (Seong et al. 2018)",
        schedules_study.QUICK,
        schedules_study.FULL,
        schedules_study.run,
    ),
    "dziugaite-roy": Study(
        "dziugaite-roy",
        "nonvacuous PAC-Bayes bound on binary digits, every term, against held-out error (2017)",
        dziugaite_roy.QUICK,
        dziugaite_roy.FULL,
        dziugaite_roy.run,
    ),
}

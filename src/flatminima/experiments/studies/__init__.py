"""Neural-network studies of flatness and generalization on digits, registered as reproductions.

* ``keskar-batch``: large vs small batch, epsilon-sharpness, Hessian, gap (Keskar et al. 2017);
* ``dinh-reparam``: layer rescaling changes Hessian measures but not the function (Dinh et al. 2017).
"""

from __future__ import annotations

from flatminima.experiments.studies import dinh, keskar
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
}

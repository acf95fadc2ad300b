"""``torch.optim``-compatible training that seeks flat minima, for any PyTorch model.

* :class:`SAM` (``adaptive=True``: ASAM): a wrapper around a base optimizer; BatchNorm statistics are
  not updated in the perturbed pass, gradients are unscaled once under a ``GradScaler``;
* :class:`EntropySGD`: SGLD inner loop, gamma scoping, the paper's moving-average convention;
* :class:`ReplicatedSGD`: y replicas coupled elastically to their centre (robust ensembles);
* :class:`SWA`: equal-weight averaging of a base optimizer's iterates (``torch.optim.swa_utils``'
  averaging);
* :mod:`~flatminima.optim.schedules`: step-size schedules, non-monotonic ones included (cyclic, warm
  restarts, a large-rate burst), usable with ``torch.optim.lr_scheduler.LambdaLR``;
* :func:`perturb_labels`: label noise for label-noise SGD on a square loss;
* :func:`hutchinson_trace_penalty`: a differentiable Hutchinson estimate of the Hessian trace
  (double backpropagation) to add to a loss;
* :func:`sam_perturbation`: the SAM / ASAM ascent step as a function.

These optimizers are the only implementation of each algorithm: the objective-level solvers of
:mod:`flatminima.solvers.nonconvex` run them. Every random draw comes from an explicit
``torch.Generator``.
"""

from flatminima.optim.entropy_sgd import EntropySGD
from flatminima.optim.label_noise import perturb_labels
from flatminima.optim.penalty import PenaltyEstimate, hutchinson_trace_penalty
from flatminima.optim.replicated import ReplicatedSGD
from flatminima.optim.sam import SAM, sam_perturbation
from flatminima.optim.schedules import (
    SCHEDULES,
    BurstSchedule,
    ConstantSchedule,
    CyclicSchedule,
    StepDecaySchedule,
    WarmRestartSchedule,
    make_schedule,
)
from flatminima.optim.swa import SWA

__all__ = [
    "SAM",
    "SCHEDULES",
    "SWA",
    "BurstSchedule",
    "ConstantSchedule",
    "CyclicSchedule",
    "EntropySGD",
    "PenaltyEstimate",
    "ReplicatedSGD",
    "StepDecaySchedule",
    "WarmRestartSchedule",
    "hutchinson_trace_penalty",
    "make_schedule",
    "perturb_labels",
    "sam_perturbation",
]

"""Nonconvex (factor-space) solvers: the algorithms that are said to seek flat minima.

Every solver takes its hyperparameters in the constructor and the data at run time:
``solver.run(objective, init, *, generator) -> NonconvexResult`` (frozen: ``params``, ``status``,
``iterations``, ``wall_time``, ``history`` with the loss and the exact scaled trace along the way).
Stochastic solvers require a ``torch.Generator`` and are reproducible given it.

=========================== ======================================================================
registry name               algorithm
=========================== ======================================================================
``gd``                      gradient descent, heavy-ball / Nesterov momentum (implicit-bias baseline)
``large_step_gd``           GD with a large step; records sharpness vs. the 2/eta stability limit
``sgd``                     minibatch SGD over measurements (noise scale eta / b)
``sam``, ``asam``           sharpness-aware minimization and its adaptive variant
``entropy_sgd``             Entropy-SGD (SGLD inner loop, gamma scoping)
``label_noise_sgd``         SGD with fresh label noise (Blanc et al.; Damian et al.)
``replicated_sgd``          replicated SGD: replicas coupled elastically to their centre (robust ensembles)
``swa``                     stochastic weight averaging
``trace_penalty``           GD on f + lam * (scaled) trace, closed form (a D-weighted weight decay)
``hutchinson_penalty``      GD on f + lam * Hutchinson trace estimate (double backprop; any loss)
=========================== ======================================================================

Each algorithm exists once, as a ``torch.optim`` optimizer for any model in :mod:`flatminima.optim`
(``torch.optim.SGD`` for the plain descents): a solver builds that optimizer over the objective's
parameter tensors, and the one loop of :meth:`NonconvexSolver.run` steps it with a closure that puts the
objective's gradient into ``.grad``. When to stop and what to record is one dataclass shared by every
solver, :class:`RunSettings` (``settings=``, or its fields as keywords), which also holds the step-size
``schedule`` (:mod:`flatminima.optim.schedules`: cyclic, warm restarts, a large-rate burst).
"""

from flatminima.solvers.nonconvex._oracles import LeastSquaresObjective
from flatminima.solvers.nonconvex.base import NonconvexSolver, RunSettings
from flatminima.solvers.nonconvex.descent import (
    GradientDescent,
    LargeStepGradientDescent,
    StochasticGradientDescent,
    top_hessian_eigenvalue,
)
from flatminima.solvers.nonconvex.entropy import EntropySGD
from flatminima.solvers.nonconvex.label_noise import LabelNoiseSGD
from flatminima.solvers.nonconvex.penalty import (
    HutchinsonPenaltyDescent,
    TracePenaltyDescent,
    trace_penalty_gradient,
    trace_penalty_value,
)
from flatminima.solvers.nonconvex.replicated import ReplicatedSGD
from flatminima.solvers.nonconvex.result import NonconvexResult
from flatminima.solvers.nonconvex.sam import (
    AdaptiveSharpnessAwareMinimization,
    SharpnessAwareMinimization,
)
from flatminima.solvers.nonconvex.swa import StochasticWeightAveraging

#: registry: name -> solver class (used by sweeps, the study and the CLI).
NONCONVEX_SOLVERS: dict[str, type[NonconvexSolver]] = {
    cls.name: cls
    for cls in (
        GradientDescent,
        LargeStepGradientDescent,
        StochasticGradientDescent,
        SharpnessAwareMinimization,
        AdaptiveSharpnessAwareMinimization,
        EntropySGD,
        LabelNoiseSGD,
        ReplicatedSGD,
        StochasticWeightAveraging,
        TracePenaltyDescent,
        HutchinsonPenaltyDescent,
    )
}
#: alias of :data:`NONCONVEX_SOLVERS` under the registry name the design uses.
SOLVERS = NONCONVEX_SOLVERS

__all__ = [
    "NONCONVEX_SOLVERS",
    "SOLVERS",
    "AdaptiveSharpnessAwareMinimization",
    "EntropySGD",
    "GradientDescent",
    "HutchinsonPenaltyDescent",
    "LabelNoiseSGD",
    "LargeStepGradientDescent",
    "LeastSquaresObjective",
    "NonconvexResult",
    "NonconvexSolver",
    "ReplicatedSGD",
    "RunSettings",
    "SharpnessAwareMinimization",
    "StochasticGradientDescent",
    "StochasticWeightAveraging",
    "TracePenaltyDescent",
    "top_hessian_eigenvalue",
    "trace_penalty_gradient",
    "trace_penalty_value",
]

"""Curvature matrices beyond the Hessian: the generalized Gauss-Newton and two Fisher matrices.

For a network f(x; w) with outputs f_n = f(x_n; w), Jacobians J_n = df_n/dw and a loss
L(w) = (1/N) sum_n l(f_n, y_n), the Hessian splits as

    H = (1/N) sum_n J_n^T H_n J_n + (1/N) sum_n sum_k (dl/df_{n,k}) d^2 f_{n,k}/dw^2,   H_n = d^2 l / df_n^2.

The first term is the generalized Gauss-Newton matrix G (Schraudolph 2002): positive semi-definite for a
convex loss in the outputs, and equal to H where the model is linear or the residuals vanish. Each matrix
here is a :class:`~flatminima.curvature.linear_operator.LinearOperator` sum_b J_b^T M_b J_b / N (see
:mod:`.curvature_outputs`), applied without forming J: a Jacobian-vector product (``torch.func.jvp``),
the output-space matrix, then a vector-Jacobian product (``torch.func.vjp``), vmapped over blocks of
vectors and streamed over the batches. Quadratic forms v^T C v = (J v)^T M (J v) (all Hutchinson needs)
take the Jacobian-vector product only.

* :class:`GeneralizedGaussNewtonOperator`: M_n = H_n / N.
* :class:`FisherOperator`: F = (1/N) sum_n E_{y ~ p(y|x_n)} g_n(y) g_n(y)^T, the Fisher of the model's
  predictive distribution (categorical softmax for cross-entropy, unit-variance Gaussian for squared
  error), a Monte Carlo estimate with S labels per example drawn once when the operator is built. For
  both losses E F = G (Martens 2020: the outputs are natural parameters of an exponential family).
* :class:`EmpiricalFisherOperator`: (1/N) sum_n g_n g_n^T with g_n = J_n^T dl_n/df_n the gradient of
  example n's loss at its true label. It is not the Fisher (Kunstner, Hennig, Balles 2019: its
  preconditioning can distort the geometry and it vanishes at an interpolating minimum even where the
  Fisher does not); Wu, Zhu and E (2017) use it in place of the Hessian at minima of low loss.

:func:`curvature_operator` picks one by name; every estimator and :func:`~flatminima.curvature.measure`
accept the result. Like :class:`~flatminima.curvature.hessian.HessianOperator`, each operator has
parameter groups (:meth:`OutputCurvatureOperator.select` gives the diagonal block C_gg).
Their shared base :class:`OutputCurvatureOperator` (structure and products) lives in
:mod:`.curvature_base` and is re-exported here.

References:
    N. N. Schraudolph. Fast curvature matrix-vector products for second-order gradient descent. Neural
    Computation 14(7), 2002.
    J. Martens. New insights and perspectives on the natural gradient method. JMLR 21, 2020.
    F. Kunstner, P. Hennig, L. Balles. Limitations of the empirical Fisher approximation for natural
    gradient descent. NeurIPS 2019.
    L. Wu, Z. Zhu, W. E. Towards understanding generalization of deep learning: perspective of loss
    landscapes. arXiv:1706.10239, 2017.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from flatminima._checks import check_generator, check_int_in_range
from flatminima.curvature.curvature_base import LossFunction as LossFunction
from flatminima.curvature.curvature_base import OutputCurvatureOperator as OutputCurvatureOperator
from flatminima.curvature.curvature_outputs import (
    OutputMatrix,
    outer_products,
    output_hessian,
    sample_labels,
    true_label_gradients,
)
from flatminima.curvature.hessian import HessianOperator
from flatminima.errors import ConfigurationError

#: the curvature matrices :func:`curvature_operator` builds.
CURVATURES: tuple[str, ...] = ("hessian", "ggn", "fisher", "empirical_fisher")


class GeneralizedGaussNewtonOperator(OutputCurvatureOperator):
    """The generalized Gauss-Newton matrix G = (1/N) sum_n J_n^T H_n J_n of a model's dataset loss.

    H_n is the Hessian of example n's loss in its output: diag(p_n) - p_n p_n^T for cross-entropy,
    (2/D) I for the mean squared error over D outputs. G is positive semi-definite and, unlike the
    Hessian, has no term from the curvature of the network itself.

    Args:
        model: the network; it is deep-copied and never modified.
        loss_fn: ``torch.nn.functional.cross_entropy`` / ``mse_loss`` or ``nn.CrossEntropyLoss()`` /
            ``nn.MSELoss()`` at their defaults (reduction="mean"); cross-entropy needs (batch, classes)
            logits and integer class targets.
        batches: (inputs, targets) pairs covering the dataset, materialized once.
        mode: "train" or "eval" (see ``HessianOperator.from_model``); dropout is supported in eval mode
            only. If None, eval mode, with a :class:`CurvatureWarning` for BatchNorm or dropout.
        vectorize: apply blocks of vectors with ``torch.func.vmap`` (a loop when False).
        process_group: None (the default group if ``torch.distributed`` is initialized, else this
            process), ``"local"`` or a ``ProcessGroup``: under a group of several processes ``batches``
            is this rank's shard and every product is summed over the ranks (see
            ``HessianOperator.from_model``).

    Raises:
        InputTypeError: if ``model`` is not an ``nn.Module`` or ``loss_fn`` is not callable.
        ConfigurationError: for an unsupported loss or mode, or dropout in train mode.
        InputDataError: for malformed batches, outputs or targets, or no trainable parameter.

    Example:
        >>> net = torch.nn.Linear(2, 1, bias=False).double()
        >>> x = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
        >>> y = torch.zeros(2, 1, dtype=torch.float64)
        >>> G = GeneralizedGaussNewtonOperator(net, torch.nn.functional.mse_loss, [(x, y)])
        >>> G.dense()  # a linear model: G = H = (2/N) X^T X
        tensor([[2., 1.],
                [1., 1.]], dtype=torch.float64)

    References:
        Schraudolph (2002); Martens (2020).
    """

    curvature: ClassVar[str] = "ggn"

    def _output_matrix(self, outputs: torch.Tensor, targets: torch.Tensor) -> OutputMatrix:
        return output_hessian(self.loss_kind, outputs)


class FisherOperator(OutputCurvatureOperator):
    """The Fisher F = (1/N) sum_n E_{y ~ p(y|x_n)} g_n(y) g_n(y)^T by Monte Carlo over sampled labels.

    g_n(y) = J_n^T r_n(y) with r_n(y) the score of label y in the output: cross-entropy samples
    y ~ Categorical(softmax(f_n)), r = softmax(f_n) - e_y; squared error samples the unit-variance
    Gaussian y ~ N(f_n, I), whose negative log-likelihood (1/2) ||f - y||^2 the loss (1/D) ||f - y||^2
    is c = 2/D times, and the Fisher of the loss is c times that of the likelihood, c J_n^T J_n. So
    E F = G for both losses and F is on the scale of the loss, like H and G. The ``num_samples``
    labels per example are drawn once, here, in batch order (kept in :attr:`samples`), so every product
    sees the same matrix: an unbiased, positive semi-definite estimate of the Fisher; a new
    ``generator`` state gives a new draw.

    Args:
        model, loss_fn, batches, mode, vectorize: as :class:`GeneralizedGaussNewtonOperator`.
        generator: draws the labels (required); each rank draws its own batches' labels, so seed it
            differently per rank (e.g. ``seed + rank``) under a process group.
        num_samples: S, labels per example (>= 1).
        process_group: as :class:`GeneralizedGaussNewtonOperator`.

    Raises:
        InputTypeError: if ``generator`` is missing, and as :class:`GeneralizedGaussNewtonOperator`.
        InputDataError: if ``num_samples`` < 1, and as :class:`GeneralizedGaussNewtonOperator`.

    Example:
        >>> net = torch.nn.Linear(3, 2).double()
        >>> x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> y = torch.tensor([0, 1, 1, 0, 1])
        >>> g = torch.Generator().manual_seed(1)
        >>> F = FisherOperator(net, torch.nn.functional.cross_entropy, [(x, y)], generator=g, num_samples=4)
        >>> (F.size, F.num_samples, bool(torch.linalg.eigvalsh(F.dense()).min() > -1e-12))
        (8, 4, True)

    References:
        Martens (2020); Kunstner, Hennig, Balles (2019).
    """

    curvature: ClassVar[str] = "fisher"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFunction,
        batches: Iterable[Any],
        *,
        generator: torch.Generator | None = None,
        num_samples: int = 1,
        mode: str | None = None,
        vectorize: bool = True,
        process_group: Any = None,
    ) -> None:
        self._generator = check_generator("generator", generator)
        self.num_samples = check_int_in_range("num_samples", num_samples, low=1)
        self._sampled: list[torch.Tensor] = []
        super().__init__(model, loss_fn, batches, mode=mode, vectorize=vectorize, process_group=process_group)
        #: the sampled labels per batch: class indices (B, S) for cross-entropy, targets
        #: (B, S, *output shape) for squared error.
        self.samples: tuple[torch.Tensor, ...] = tuple(self._sampled)

    def _output_matrix(self, outputs: torch.Tensor, targets: torch.Tensor) -> OutputMatrix:
        labels, scores = sample_labels(self.loss_kind, outputs, self.num_samples, generator=self._generator)
        self._sampled.append(labels)
        return outer_products(scores)


class EmpiricalFisherOperator(OutputCurvatureOperator):
    """The empirical Fisher (1/N) sum_n g_n g_n^T, g_n the gradient of example n's loss at its label.

    g_n = J_n^T r_n with r_n = dl_n/df_n (p_n - e_{y_n} for cross-entropy, (2/D) (f_n - y_n) for squared
    error), exactly the per-example gradient ``torch.func.vmap(torch.func.grad(...))`` gives, without
    storing it: products cost one Jacobian-vector and one vector-Jacobian product per batch. The rank
    is at most N.

    Kunstner, Hennig and Balles (2019) show that this matrix is not the Fisher: it uses the true labels
    instead of the model's, so it captures the gradient noise rather than the curvature, vanishes with
    the residuals at an interpolating minimum (where the Fisher and G do not) and can distort
    preconditioned updates. Wu, Zhu and E (2017) use it in place of the Hessian at minima of low loss;
    compare the two on your model rather than assume it.

    Args:
        model, loss_fn, batches, mode, vectorize, process_group: as
            :class:`GeneralizedGaussNewtonOperator`.

    Raises:
        As :class:`GeneralizedGaussNewtonOperator`.

    Example:
        >>> net = torch.nn.Linear(2, 1, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = net.weight.copy_(torch.tensor([[1.0, 1.0]]))
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        >>> y = torch.zeros(2, 1, dtype=torch.float64)
        >>> E = EmpiricalFisherOperator(net, torch.nn.functional.mse_loss, [(x, y)])
        >>> E.dense()  # g_1 = (2, 0), g_2 = (0, 2)
        tensor([[2., 0.],
                [0., 2.]], dtype=torch.float64)

    References:
        Kunstner, Hennig, Balles (2019); Wu, Zhu, E (2017).
    """

    curvature: ClassVar[str] = "empirical_fisher"

    def _output_matrix(self, outputs: torch.Tensor, targets: torch.Tensor) -> OutputMatrix:
        return outer_products(true_label_gradients(self.loss_kind, outputs, targets)[:, None, :])


def curvature_operator(
    model: nn.Module,
    loss_fn: LossFunction,
    batches: Iterable[Any],
    *,
    curvature: str = "hessian",
    mode: str | None = None,
    generator: torch.Generator | None = None,
    num_samples: int | None = None,
    vectorize: bool = True,
    ad_mode: str | None = None,
    process_group: Any = None,
) -> HessianOperator | OutputCurvatureOperator:
    """The curvature matrix ``curvature`` of a model's dataset loss, as a linear operator.

    Args:
        model: the network; it is deep-copied and never modified.
        loss_fn: ``loss_fn(outputs, targets)`` with reduction="mean"; any such loss for "hessian",
            cross-entropy or mean squared error for the others (see :class:`GeneralizedGaussNewtonOperator`).
        batches: (inputs, targets) pairs covering the dataset.
        curvature: "hessian" (``HessianOperator.from_model``), "ggn"
            (:class:`GeneralizedGaussNewtonOperator`), "fisher" (:class:`FisherOperator`) or
            "empirical_fisher" (:class:`EmpiricalFisherOperator`).
        mode: "train" or "eval", or None for eval mode with a warning when it matters.
        generator: draws the Fisher's labels (required for "fisher") and, for "hessian", the dropout
            masks of mode="train"; unused otherwise.
        num_samples: labels per example of the Fisher (default 1); only for "fisher".
        vectorize: apply blocks of vectors with ``torch.func.vmap``.
        ad_mode: the Hessian's differentiation mode (see ``HessianOperator``); only for "hessian".
        process_group: None (the default group if ``torch.distributed`` is initialized), ``"local"``
            or a ``ProcessGroup``: ``batches`` is then this rank's shard and every product is summed
            over the ranks (see ``HessianOperator.from_model``).

    Raises:
        ConfigurationError: for an unknown ``curvature``, or ``num_samples`` / ``ad_mode`` given for a
            matrix that does not use it; otherwise as the operator built.

    Example:
        >>> net = torch.nn.Linear(2, 1).double()
        >>> x, y = torch.ones(4, 2, dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64)
        >>> mse = torch.nn.functional.mse_loss
        >>> H = curvature_operator(net, mse, [(x, y)], curvature="hessian", mode="eval")
        >>> G = curvature_operator(net, mse, [(x, y)], curvature="ggn", mode="eval")
        >>> bool(torch.allclose(H.dense(), G.dense()))  # a linear model: G = H
        True
    """
    if not isinstance(curvature, str) or curvature not in CURVATURES:
        raise ConfigurationError(
            f"curvature must be one of {', '.join(map(repr, CURVATURES))}; got curvature={curvature!r}."
        )
    if num_samples is not None and curvature != "fisher":
        raise ConfigurationError(
            f"num_samples applies to curvature='fisher' only; got num_samples={num_samples!r} with "
            f"curvature={curvature!r}."
        )
    if ad_mode is not None and curvature != "hessian":
        raise ConfigurationError(
            f"ad_mode applies to curvature='hessian' only; got ad_mode={ad_mode!r} with "
            f"curvature={curvature!r}."
        )
    if curvature == "hessian":
        return HessianOperator.from_model(
            model,
            loss_fn,
            batches,
            mode=mode,
            generator=generator,
            vectorize=vectorize,
            ad_mode="reverse" if ad_mode is None else ad_mode,
            process_group=process_group,
        )
    if curvature == "ggn":
        return GeneralizedGaussNewtonOperator(
            model, loss_fn, batches, mode=mode, vectorize=vectorize, process_group=process_group
        )
    if curvature == "fisher":
        return FisherOperator(
            model,
            loss_fn,
            batches,
            generator=generator,
            num_samples=1 if num_samples is None else num_samples,
            mode=mode,
            vectorize=vectorize,
            process_group=process_group,
        )
    return EmpiricalFisherOperator(
        model, loss_fn, batches, mode=mode, vectorize=vectorize, process_group=process_group
    )

"""Type aliases shared by the curvature modules.

* ``Params``: parameters (or tangents, gradients, probes shaped like them) by name, as
  ``torch.func.functional_call`` takes them;
* ``LossClosure``: a function of the parameters returning one scalar loss (a batch's term of the
  dataset loss, or an objective's value).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Params = dict[str, torch.Tensor]
LossClosure = Callable[[Params], torch.Tensor]

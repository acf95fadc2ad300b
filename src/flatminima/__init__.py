"""flatminima: a toolkit for the science of flat minima (do they generalize, which algorithms find them).

Layers (data flows one way): ``operators`` -> ``problems`` -> ``objectives`` -> {``curvature``,
``solvers``} -> ``experiments`` -> ``cli``; ``numerics`` (the shared numerical kernels: Lanczos, L-BFGS),
``errors`` and ``random`` are leaves every layer may import. Heavy optional dependencies are imported
lazily.

References:
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024. arXiv:2203.03756.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flatminima")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]

"""Measurement operators A: R^{d1 x d2} -> R^m with adjoints and rescaling matrices D1, D2."""

from flatminima.operators.base import MeasurementOperator, symmetric_sqrt
from flatminima.operators.dense import DenseOperator
from flatminima.operators.rank_one import BilinearOperator, SymmetricRankOneOperator
from flatminima.operators.structured import EntryMask, IdentityOperator
from flatminima.operators.vector import VectorOperator

__all__ = [
    "BilinearOperator",
    "DenseOperator",
    "EntryMask",
    "IdentityOperator",
    "MeasurementOperator",
    "SymmetricRankOneOperator",
    "VectorOperator",
    "symmetric_sqrt",
]

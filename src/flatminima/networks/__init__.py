"""Neural networks for the flatness studies: data (digits, XOR), ReLU MLPs, a deterministic trainer.

Every random function takes an explicit ``torch.Generator``; nothing touches the global RNG.
"""

from flatminima.networks.data import Dataset, load_digits_split, xor_split
from flatminima.networks.models import linear_layers, mlp, parameter_count, rescale_layers
from flatminima.networks.training import TrainingResult, cross_entropy, evaluate, train_classifier

__all__ = [
    "Dataset",
    "TrainingResult",
    "cross_entropy",
    "evaluate",
    "linear_layers",
    "load_digits_split",
    "mlp",
    "parameter_count",
    "rescale_layers",
    "train_classifier",
    "xor_split",
]

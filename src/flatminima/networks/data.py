"""Small classification data sets for the neural-network studies: digits (real) and XOR (synthetic).

:func:`load_digits_split` reads scikit-learn's bundled ``load_digits`` (1,797 8x8 grey images, 10 classes;
nothing is downloaded), splits it by a permutation drawn from an explicit generator, and standardizes
every pixel by the training mean and standard deviation (pixels constant on the training set are only
centred). :func:`xor_split` draws the noisy XOR problem: x ~ U[-1, 1]^2, y = 1[x_1 x_2 > 0].

References:
    E. Alpaydin, C. Kaynak. Optical recognition of handwritten digits. UCI repository, 1998 (the
    scikit-learn ``load_digits`` data).
"""

from __future__ import annotations

import dataclasses

import torch

from flatminima._checks import check_generator, check_int_in_range, check_real
from flatminima.errors import InputDataError, InputTypeError

#: the number of images in scikit-learn's digits data.
NUM_DIGITS = 1797


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A train/test split: inputs (n, features) in a floating dtype and integer class labels (n,)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_features(self) -> int:
        """The input dimension."""
        return int(self.x_train.shape[1])

    @property
    def num_classes(self) -> int:
        """The number of classes (largest label + 1)."""
        return int(max(int(self.y_train.max()), int(self.y_test.max()))) + 1

    @property
    def num_train(self) -> int:
        """The number of training examples."""
        return int(self.x_train.shape[0])


def _check_dtype(dtype: object) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InputTypeError(f"dtype must be a floating torch.dtype; got dtype={dtype!r}.")
    return dtype


def load_digits_split(
    *,
    generator: torch.Generator,
    test_fraction: float = 0.3,
    num_train: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> Dataset:
    """The digits data split by a random permutation, standardized by training statistics.

    Args:
        generator: draws the permutation (required; the split is reproducible from its seed).
        test_fraction: the share of the 1,797 images held out, in (0, 1).
        num_train: keep only the first ``num_train`` training images of the permutation (None: all).
        dtype: the inputs' floating dtype (float64 by default).

    Returns:
        A :class:`Dataset`.

    Raises:
        InputTypeError: if ``generator`` is missing or ``dtype`` is not floating.
        InputDataError: if ``test_fraction`` is not in (0, 1) or ``num_train`` is out of range.

    Example:
        >>> data = load_digits_split(generator=torch.Generator().manual_seed(0))
        >>> data.x_train.shape, data.num_classes
        (torch.Size([1258, 64]), 10)
    """
    generator = check_generator("generator", generator)
    fraction = check_real("test_fraction", test_fraction, low=0.0, high=1.0, low_open=True, high_open=True)
    dtype = _check_dtype(dtype)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float64)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    n_test = max(1, round(fraction * x.shape[0]))
    available = x.shape[0] - n_test
    if available < 1:
        raise InputDataError(f"test_fraction must leave a training image; got test_fraction={fraction}.")
    if num_train is not None:
        check_int_in_range("num_train", num_train, low=1, high=available, high_name="the training split")
    order = torch.randperm(x.shape[0], generator=generator, device=generator.device).cpu()
    test, train = order[:n_test], order[n_test:]
    if num_train is not None:
        train = train[:num_train]
    mean = x[train].mean(0)
    std = x[train].std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    xs = (x - mean) / std
    return Dataset(xs[train].to(dtype), y[train], xs[test].to(dtype), y[test])


def xor_split(
    num_train: int,
    num_test: int,
    *,
    generator: torch.Generator,
    label_noise: float = 0.0,
    dtype: torch.dtype = torch.float64,
) -> Dataset:
    """Noisy XOR: x ~ U[-1, 1]^2, y = 1[x_1 x_2 > 0], training labels flipped with prob. ``label_noise``.

    Raises:
        InputTypeError: if ``generator`` is missing or ``dtype`` is not floating.
        InputDataError: if a size is < 1 or ``label_noise`` is not in [0, 0.5).

    Example:
        >>> data = xor_split(8, 4, generator=torch.Generator().manual_seed(0))
        >>> data.x_train.shape, data.num_classes
        (torch.Size([8, 2]), 2)
    """
    generator = check_generator("generator", generator)
    check_int_in_range("num_train", num_train, low=1)
    check_int_in_range("num_test", num_test, low=1)
    noise = check_real("label_noise", label_noise, low=0.0, high=0.5, high_open=True)
    dtype = _check_dtype(dtype)
    x = 2.0 * torch.rand(num_train + num_test, 2, generator=generator, dtype=torch.float64) - 1.0
    y = (x[:, 0] * x[:, 1] > 0).to(torch.int64)
    flip = torch.rand(num_train, generator=generator, dtype=torch.float64) < noise
    y_train = torch.where(flip, 1 - y[:num_train], y[:num_train])
    return Dataset(x[:num_train].to(dtype), y_train, x[num_train:].to(dtype), y[num_train:])

"""Streaming data: HessianOperator.from_model re-reads its batches at every pass and never stores them."""

from __future__ import annotations

import gc
import tracemalloc
import weakref
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from curvature_cases import dense_hessian, mlp_case
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from flatminima.curvature import HessianOperator, gradient_variance, hutchinson_trace
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError

F = nn.functional


def _loader(case, batch_size: int, **options) -> DataLoader:
    return DataLoader(TensorDataset(case.x, case.y), batch_size=batch_size, **options)


@pytest.mark.parametrize("ad_mode", ["reverse", "forward"])
def test_a_dataloader_of_50_batches_equals_the_concatenated_batch(ad_mode: str) -> None:
    case = mlp_case(0, n=150)
    loader = _loader(case, 3)
    assert len(loader) == 50
    streamed = HessianOperator.from_model(case.net, F.cross_entropy, loader, mode="eval", ad_mode=ad_mode)
    whole = HessianOperator.from_model(
        case.net, F.cross_entropy, [(case.x, case.y)], mode="eval", ad_mode=ad_mode
    )
    assert streamed.source is not None and streamed.source.num_examples == 150
    assert len(streamed.source.batches) == 50
    V = torch.randn(whole.size, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(streamed.matmat(V), whole.matmat(V), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(streamed.matvec(V[:, 0]), whole.matvec(V[:, 0]), rtol=1e-10, atol=1e-10)
    dense = streamed.dense()
    torch.testing.assert_close(dense, dense_hessian(case.loss, case.params()), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(torch.trace(dense), torch.trace(whole.dense()), rtol=1e-10, atol=1e-10)
    # the Taylor-mode quadratic forms (used by Hutchinson) stream too
    assert streamed._closed_quadratic_forms is not None
    one = hutchinson_trace(streamed, 20, generator=torch.Generator().manual_seed(2))
    other = hutchinson_trace(whole, 20, generator=torch.Generator().manual_seed(2))
    assert abs(one.value - other.value) <= 1e-10 * abs(other.value)
    value, grad = streamed.value_and_grad_at(streamed.point)
    expected_value, expected_grad = whole.value_and_grad_at(whole.point)
    torch.testing.assert_close(value, expected_value, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)


def test_gradient_variance_and_random_access_stream_too() -> None:
    case = mlp_case(1, n=40)
    streamed = HessianOperator.from_model(case.net, F.cross_entropy, _loader(case, 8), mode="eval")
    listed = HessianOperator.from_model(case.net, F.cross_entropy, case.batches([8] * 5), mode="eval")
    for unit in ("example", "batch"):
        torch.testing.assert_close(
            gradient_variance(streamed, unit=unit),
            gradient_variance(listed, unit=unit),
            rtol=1e-10,
            atol=1e-12,
        )
    assert streamed.source is not None
    inputs, targets = streamed.source.batches[3]
    torch.testing.assert_close(inputs, case.x[24:32])
    torch.testing.assert_close(targets, case.y[24:32])


class _FreshBatches:
    """A re-iterable dataset whose every pass allocates new batches (in numpy, so tracemalloc sees them).

    It records how many of the batches it has handed out are still alive whenever it hands out
    another one: a consumer that stores the batches keeps them all alive.
    """

    def __init__(self, count: int, size: int = 64, features: int = 400, seed: int = 0) -> None:
        self.count, self.size, self.features, self.seed = count, size, features, seed
        self.alive: list[weakref.ref[np.ndarray]] = []
        self.max_alive = 0
        self.passes = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.passes += 1
        rng = np.random.default_rng(self.seed)
        for _ in range(self.count):
            inputs = rng.standard_normal((self.size, self.features))
            targets = rng.integers(0, 3, self.size)
            self.alive = [ref for ref in self.alive if ref() is not None]
            self.max_alive = max(self.max_alive, len(self.alive))
            self.alive.append(weakref.ref(inputs))
            yield torch.from_numpy(inputs), torch.from_numpy(targets)

    @property
    def batch_bytes(self) -> int:
        return self.size * self.features * 8


def _measure(count: int, ad_mode: str) -> tuple[int, int, float]:
    """(most batches alive while another was read, peak traced bytes, the top eigen-estimate)."""
    torch.manual_seed(0)  # module initialization only
    net = nn.Sequential(nn.Linear(400, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    data = _FreshBatches(count)
    gc.collect()
    tracemalloc.start()
    try:
        H = HessianOperator.from_model(net, F.cross_entropy, data, mode="eval", ad_mode=ad_mode)
        V = torch.randn(H.size, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        result = H.matmat(V)
        H.quadratic_forms(V)
        H.value_and_grad_at(H.point)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data.passes >= 4
    return data.max_alive, peak, float(result.abs().sum())


@pytest.mark.parametrize("ad_mode", ["reverse", "forward"])
def test_memory_does_not_grow_with_the_number_of_batches(ad_mode: str) -> None:
    _measure(1, ad_mode)  # warm up: torch's lazy initialization would dominate the first peak
    few_alive, few_peak, _ = _measure(5, ad_mode)
    many_alive, many_peak, _ = _measure(50, ad_mode)
    # storing the batches would keep all earlier batches of a pass alive (49 of 50)
    assert few_alive <= 2 and many_alive <= 2
    batch_bytes = _FreshBatches(1).batch_bytes
    # storing them would add 45 batches (about 9 MB) to the peak; allow a few batches of slack
    assert many_peak - few_peak < 4 * batch_bytes, (few_peak, many_peak)


def test_a_one_shot_generator_is_rejected() -> None:
    case = mlp_case(2)
    with pytest.raises(
        InputTypeError, match=r"^batches must be an iterable of \(inputs, targets\) pairs; got int\.$"
    ):
        HessianOperator.from_model(case.net, F.cross_entropy, 5, mode="eval")
    batches = case.batches([10, 20])
    for one_shot in (
        (b for b in batches),
        iter(batches),
        zip(case.x.split(10), case.y.split(10), strict=True),
    ):
        with pytest.raises(InputTypeError, match=r"batches must be re-iterable .* got a one-shot"):
            HessianOperator.from_model(case.net, F.cross_entropy, one_shot, mode="eval")


class _Reiterable:
    """An object whose __iter__ is a generator function: a fresh generator at every pass."""

    def __init__(self, batches) -> None:
        self.batches = batches

    def __iter__(self):
        yield from self.batches


def test_an_object_returning_fresh_generators_is_accepted() -> None:
    case = mlp_case(3)
    H = HessianOperator.from_model(case.net, F.cross_entropy, _Reiterable(case.batches([7, 23])), mode="eval")
    torch.testing.assert_close(H.dense(), dense_hessian(case.loss, case.params()), rtol=1e-10, atol=1e-12)


class _OncePerInstance(IterableDataset):
    """An IterableDataset that does not restart: its second pass is empty."""

    def __init__(self, batches) -> None:
        self.iterator = iter(batches)

    def __iter__(self):
        return self.iterator


def test_a_stream_that_does_not_restart_fails_on_its_second_pass() -> None:
    case = mlp_case(4)
    loader = DataLoader(_OncePerInstance(case.batches([10, 20])), batch_size=None)
    H = HessianOperator.from_model(case.net, F.cross_entropy, loader, mode="eval")  # the first pass
    with pytest.raises(
        InputDataError, match=r"yielded 0 batches on this pass but 2 on the first; .*re-iterable"
    ):
        H.matvec(H.point)


class _Resizing:
    """Batches whose sizes change from one pass to the next."""

    def __init__(self, case) -> None:
        self.case, self.passes = case, 0

    def __iter__(self):
        self.passes += 1
        sizes = [10, 20] if self.passes == 1 else [15, 15]
        return iter(self.case.batches(sizes))


def test_batches_that_change_between_passes_are_rejected() -> None:
    case = mlp_case(5)
    H = HessianOperator.from_model(case.net, F.cross_entropy, _Resizing(case), mode="eval")  # the first pass
    with pytest.raises(InputDataError, match=r"batches\[0\] has 15 examples on this pass but 10 examples"):
        H.value()


def _dropout_net() -> nn.Module:
    torch.manual_seed(0)  # module initialization only
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, 3)).double()


def test_dropout_masks_are_a_function_of_the_seed_and_the_batch_index() -> None:
    case = mlp_case(6, n=30)
    net = _dropout_net()

    def build(batches):
        return HessianOperator.from_model(
            net, F.cross_entropy, batches, mode="train", generator=torch.Generator().manual_seed(3)
        )

    listed = build(case.batches([10, 10, 10]))
    streamed = build(_loader(case, 10))
    assert listed.source is not None and streamed.source is not None
    for index in range(3):
        torch.testing.assert_close(listed.source.model[2].masks[index], streamed.source.model[2].masks[index])
    masks = listed.source.model[2].masks
    assert not torch.equal(masks[0], masks[1])  # one mask per batch
    V = torch.randn(listed.size, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(streamed.matmat(V), listed.matmat(V), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(streamed.matmat(V), streamed.matmat(V), rtol=0, atol=0)  # every pass alike
    other = HessianOperator.from_model(
        net, F.cross_entropy, _loader(case, 10), mode="train", generator=torch.Generator().manual_seed(4)
    )
    assert other.source is not None
    assert not torch.equal(other.source.model[2].masks[0], masks[0])  # another seed, other masks


def test_shuffled_loaders_are_rejected_in_train_mode_and_exact_in_eval_mode() -> None:
    case = mlp_case(7, n=40)
    shuffled = _loader(case, 8, shuffle=True, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ConfigurationError, match=r"mode='train' needs the same batches at every pass"):
        HessianOperator.from_model(
            _dropout_net(),
            F.cross_entropy,
            shuffled,
            mode="train",
            generator=torch.Generator().manual_seed(0),
        )
    H = HessianOperator.from_model(case.net, F.cross_entropy, shuffled, mode="eval")
    torch.testing.assert_close(H.dense(), dense_hessian(case.loss, case.params()), rtol=1e-10, atol=1e-12)

# ruff: noqa: E402, D400, D415  (a notebook: imports where they are first used; a Markdown title)
r"""# Measure the flatness of your own network

`flatminima.curvature` measures any PyTorch model: you bring the `nn.Module`, a loss function that
averages over its batch, and the data; it builds the Hessian of the **dataset** loss

\[
L(w) = \frac{1}{N} \sum_{n=1}^{N} \ell\big(f(x_n; w), y_n\big)
\]

as a matrix-free linear operator and computes every flatness measure from it, each stochastic one with
its standard error. Here the model is a small ReLU MLP trained on scikit-learn's bundled handwritten
digits (1,797 8x8 images, 10 classes; nothing is downloaded), written in plain PyTorch: nothing of
flatminima is needed until the measuring starts.
"""

# %% [markdown]
# ## A network and its data
#
# Every random draw comes from an explicit `torch.Generator`, so the page is the same at every build.
# float64 keeps the curvature numbers clean; float32 works as well.

# %%
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

g = torch.Generator().manual_seed(0)
digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float64)
y = torch.tensor(digits.target, dtype=torch.int64)
order = torch.randperm(len(y), generator=g)
train, test = order[:1000], order[1000:]
mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-6)  # standardize by training statistics
x = (x - mean) / std

net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).double()
with torch.no_grad():  # initial weights from our generator (nn.Linear would use the global RNG)
    for p in net.parameters():
        bound = 1 / p.shape[-1] ** 0.5 if p.ndim == 2 else 0.1
        p.copy_((2 * torch.rand(p.shape, generator=g, dtype=p.dtype) - 1) * bound)

optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
for _epoch in range(30):
    for batch in torch.randperm(len(train), generator=g).split(100):
        optimizer.zero_grad()
        F.cross_entropy(net(x[train[batch]]), y[train[batch]]).backward()
        optimizer.step()


def accuracy(index: torch.Tensor) -> float:
    """Share of the images in ``index`` the network classifies correctly."""
    with torch.no_grad():
        return float((net(x[index]).argmax(1) == y[index]).double().mean())


with torch.no_grad():
    train_loss = float(F.cross_entropy(net(x[train]), y[train]))
print(f"parameters: {sum(p.numel() for p in net.parameters())}")
print(f"training loss {train_loss:.4f}; accuracy: train {accuracy(train):.3f}, test {accuracy(test):.3f}")

# %% [markdown]
# ## The Hessian of the training loss
#
# `HessianOperator.from_model` deep-copies the model (yours is never modified) and streams the batches
# of a re-iterable data source (a list of `(inputs, targets)` pairs or a `DataLoader` without shuffling)
# at every product, weighting each batch loss by its size, so the operator is the Hessian of the mean
# loss over all 1,000 training images. The **mode is explicit**: `"eval"` or `"train"` (BatchNorm batch
# statistics, fixed dropout masks); this network has neither, and we say `"eval"`.

# %%
from flatminima.curvature import HessianOperator

loader = DataLoader(TensorDataset(x[train], y[train]), batch_size=250, shuffle=False)
H = HessianOperator.from_model(net, F.cross_entropy, loader, mode="eval")
print(f"H is {H.size} x {H.size}; parameter groups: {list(H.groups('parameter'))}")

# %% [markdown]
# ## Hutchinson's trace estimate, with its error bar
#
# \(\operatorname{tr} H = \mathbb{E}[z^\top H z]\) for Rademacher probes \(z\); the estimate is the mean of
# the quadratic forms over the probes, and its standard error is their standard deviation over
# \(\sqrt{N}\). For an MLP like this one the quadratic forms come from second-order Taylor mode (one
# forward pass for many probes). Doubling the probes shrinks the error bar by about \(\sqrt 2\); with
# `rtol=` the estimator adds probes until the relative standard error is reached. (`exact_trace(H)`
# spends one Hessian-vector product per parameter: fine for a few thousand parameters, and the
# reference the estimates are tested against.)

# %%
from flatminima.curvature import hutchinson_trace

for probes in (10, 40, 160):
    estimate = hutchinson_trace(H, probes, generator=torch.Generator().manual_seed(1))
    print(f"{probes:4d} probes: tr H = {estimate.value:8.3f} +- {estimate.stderr:.3f}")
adaptive = hutchinson_trace(H, 1000, rtol=0.01, generator=torch.Generator().manual_seed(2))
print(
    f"rtol=0.01: tr H = {adaptive.value:8.3f} +- {adaptive.stderr:.3f} "
    f"after {adaptive.num_samples} probes (converged: {adaptive.converged})"
)

# %% [markdown]
# ## Many measures at once: `measure()`
#
# `measure(operator, names, groups=..., generator=g)` returns a tidy table, one row per measure and
# parameter group (`"all"` first): the value, its standard error (NaN for deterministic measures), the
# number of Hessian-vector products it cost, and Lanczos' deterministic error bound where there is one.
# Every measure is checked for applicability before any work is done. The definitions and references
# of every measure: [Flatness measures](../flatness-measures.md).

# %%
import pandas as pd

from flatminima.curvature import measure

pd.set_option("display.width", 120)
table = measure(
    H,
    ["hutchinson_trace", "lanczos_top_eigenvalue", "hutchinson_squared_frobenius_norm"],
    groups="parameter",
    options={
        "lanczos_top_eigenvalue": {"tol": 1e-3},
        "hutchinson_squared_frobenius_norm": {"num_probes": 30},
    },
    generator=torch.Generator().manual_seed(3),
)
columns = ["name", "group", "value", "stderr", "num_matvecs", "error_bound"]
print(table.to_pandas()[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))

# %% [markdown]
# Measures of the loss itself perturb the weights instead of multiplying by \(H\): Keskar et al.'s
# \(\epsilon\)-sharpness (a percentage) and the worst-case sharpness in a \(\rho\)-ball, plain or
# adaptive as in ASAM. (The PAC-Bayes noise scale \(\sigma\) of Jiang et al., `pac_bayes_sigma` and the
# bounds built on it, bisects on Monte Carlo estimates of the loss and takes longer.)

# %%
loss_table = measure(
    H,
    ["epsilon_sharpness", "worst_case_sharpness", "adaptive_worst_case_sharpness"],
    generator=torch.Generator().manual_seed(4),
)
loss_frame = loss_table.to_pandas()[["name", "value", "stderr"]]
print(loss_frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))

# %% [markdown]
# ## Gauss-Newton and Fisher: `curvature=`
#
# The Hessian of a network splits into the generalized Gauss-Newton matrix \(G\) (positive
# semi-definite for a convex loss) plus a term weighted by the residuals. `curvature_operator` builds
# the matrix by name, `"hessian"`, `"ggn"`, `"fisher"` (labels sampled from the model's predictive
# distribution, `num_samples` per example, so it needs a generator) or `"empirical_fisher"` (the true
# labels: *not* the Fisher), and every spectral measure accepts it; the `curvature` column of the table
# says which matrix was measured.

# %%
from flatminima.curvature import curvature_operator

rows = []
for name in ("hessian", "ggn", "fisher", "empirical_fisher"):
    sampling = {"num_samples": 16, "generator": torch.Generator().manual_seed(5)} if name == "fisher" else {}
    C = curvature_operator(net, F.cross_entropy, loader, curvature=name, mode="eval", **sampling)
    result = measure(
        C,
        ["hutchinson_trace", "lanczos_top_eigenvalue"],
        options={"hutchinson_trace": {"num_probes": 50}, "lanczos_top_eigenvalue": {"tol": 1e-3}},
        generator=torch.Generator().manual_seed(6),
    )
    rows.append(result.to_pandas()[["curvature", "name", "value", "stderr"]])
print(pd.concat(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))

# %% [markdown]
# Near a minimum of the cross-entropy the residual term is small, so the Hessian and the Gauss-Newton
# matrix nearly agree, and the Fisher is an unbiased Monte Carlo estimate of the Gauss-Newton matrix
# (its expectation, for cross-entropy). The empirical Fisher (the second moment of the per-example
# gradients at the true labels) is a different object altogether: it vanishes with the residuals.
#
# ## Flatness is not invariant: Dinh et al.'s rescaling
#
# Multiplying the first layer by \(\alpha\) and dividing the second by \(\alpha\) leaves a ReLU network's
# function unchanged, yet moves its Hessian: the trace of the first block scales by \(1/\alpha^2\), the
# second by \(\alpha^2\). Measures with an adaptive neighbourhood (ASAM's) are designed not to move.

# %%
from flatminima.networks import rescale_layers

for alpha in (1.0, 10.0):
    scaled = rescale_layers(net, 0, alpha)
    H_alpha = HessianOperator.from_model(scaled, F.cross_entropy, loader, mode="eval")
    result = measure(
        H_alpha,
        ["hutchinson_trace", "adaptive_worst_case_sharpness"],
        generator=torch.Generator().manual_seed(7),
    ).to_pandas()
    same = torch.allclose(scaled(x[test]), net(x[test]), atol=1e-10)
    values = ", ".join(f"{row.name} = {row.value:.4g}" for row in result.itertuples())
    print(f"alpha = {alpha:4.1f}: same function: {same}; {values}")

# %% [markdown]
# ## What else
#
# * Per-layer or per-module numbers: `groups="module"`, or a mapping of names to parameter selectors.
# * Eigenvalues and the spectral density: `lanczos_eigenvalues`, `lanczos_spectral_density`.
# * Data sharded over `torch.distributed` ranks: the same calls, every product all-reduced
#   (`torchrun --nproc-per-node 2 examples/distributed_trace.py`).
# * Training that seeks flat minima: `flatminima.optim` (`SAM`, `EntropySGD`, `SWA`, label noise, a
#   differentiable Hutchinson trace penalty).

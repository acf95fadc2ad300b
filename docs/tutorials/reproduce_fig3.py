# ruff: noqa: E402, D400, D415  (a notebook: imports where they are first used; a Markdown title)
r"""# Reproduce the paper's Figure 3

Figure 3 of Ding, Drusvyatskiy, Fazel and Harchaoui (*Flat minima generalize for low-rank matrix
recovery*, 2024) is the headline result: over a grid of dimensions \(d\) and measurement ratios
\(m/d\), how often does the **flat solution** recover the ground truth \(M\) exactly, and how often
does **nuclear-norm minimization** (NNM)? For Gaussian matrix sensing the two heat maps coincide: the
flattest zero-loss factorization is as good as the best convex method, and both switch from failure to
exact recovery at the same number of measurements.

This tutorial runs the quick version of panel (a), Gaussian sensing, through the Python API, the same
code path as the command

```bash
flatminima reproduce fig3-sensing --quick
```

The quick grid is \(d \in \{8, 12, 16\}\), \(m/d \in \{2, 4, \dots, 12\}\), rank 2, 10
measurement draws per cell (one ground truth per cell, \(\|M\|_F = 1\)), both solvers on every draw:
360 certified convex solves. A trial succeeds iff its solve is certified and \(\|X - M\|_F < 10^{-6}\).
"""

# %% [markdown]
# ## Run the reproduction
#
# `reproduce` runs the reproduction's sweeps into a SQLite store (here `results/flatminima.sqlite`),
# on a local Dask cluster with one single-threaded worker per core, then writes
# `results/fig3-sensing.csv` (one row per trial) and `results/fig3-sensing.png` from the store, and
# returns the summary table. The figure it writes is shown below the cell: the success frequency per
# cell, white = always recovered, flat solution on the left and nuclear norm on the right. The two
# panels agree cell by cell, up to a draw or two at the phase transition.

# %%
import time

from flatminima.experiments.runner import reproduce

start = time.perf_counter()
outcome = reproduce("fig3-sensing", quick=True, out_dir="results", progress=False)
print(f"finished in {time.perf_counter() - start:.0f} s")
for sweep in outcome.sweeps:
    print(
        f"sweep {sweep.name}: {sweep.total} trials, {sweep.completed} run, "
        f"{sweep.failed} failed, {sweep.skipped} already stored"
    )
print(f"wrote {outcome.csv} and {outcome.figure}; store: {outcome.store}")

# %% [markdown]
# ## The summary table
#
# `outcome.table` is the summary the command prints, as `(headers, rows)`: where each solver's phase
# transition lies for each \(d\) (the number of measurements at which half of the draws recover
# \(M\), with a confidence interval), how it compares with the statistical dimension, and the success
# frequencies. A solve without a certificate, or with singular \(D_1, D_2\), counts as failed *and* as
# not recovered.

# %%
headers, rows = outcome.table
widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
for line in [headers, *rows]:
    print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)))

# %% [markdown]
# ## The trials themselves
#
# The CSV holds one row per trial: the grid cell (`dim`, `measurements_per_dim`), the draw, the method,
# the certified status and residual of its solve, the recovery error \(\|X - M\|_F\), and `success`.
# The success frequency per cell, for both solvers side by side:

# %%
import pandas as pd

frame = pd.read_csv(outcome.csv)
table = frame.pivot_table(
    index="measurements_per_dim", columns=["label", "dim"], values="success", aggfunc="mean"
)
print(table.sort_index(ascending=False).to_string(float_format=lambda v: f"{v:.1f}"))
print()
print("largest relative KKT residual of any certified solve:", f"{frame['max_relative_residual'].max():.1e}")
print("solver statuses:", frame["solver_status"].value_counts().to_dict())

# %% [markdown]
# ## Where theory puts the transition
#
# For Gaussian measurements, NNM recovers a rank-\(r\) \(d_1 \times d_2\) matrix once \(m\) exceeds
# the statistical dimension \(\delta\) of the nuclear norm's descent cone (Amelunxen, Lotz, McCoy and
# Tropp 2014). `flatminima.theory` evaluates it; the observed 50% points sit right above \(\delta/d\).

# %%
from flatminima.theory import nuclear_norm_statistical_dimension

for d in (8, 12, 16):
    delta = nuclear_norm_statistical_dimension(d, d, 2)
    print(f"d = {d:2d}: statistical dimension {delta:6.1f} measurements, m/d = {delta / d:.2f}")

# %% [markdown]
# ## Resuming is free
#
# Every finished trial is committed to the store as it completes, so running the same reproduction
# again (after Ctrl-C, a crash, or just to redraw the figure) recomputes nothing:

# %%
again = reproduce("fig3-sensing", quick=True, out_dir="results", progress=False)
print({sweep.name: (sweep.skipped, sweep.completed) for sweep in again.sweeps}, "(skipped, run)")

# %% [markdown]
# ## Going further
#
# * The full-size panel: `flatminima reproduce fig3-sensing` (\(d \in \{10, \dots, 50\}\),
#   \(m/d \in \{2, 4, \dots, 16\}\)); add `--workers N` for a larger local cluster or
#   `--scheduler tcp://host:8786` for an existing Dask cluster ([a sweep on a
#   cluster](sweep_on_a_cluster.md)).
# * The other panels: `fig3-bilinear` (rank-one projections \(A_i = a_i b_i^T\)), `fig3-completion`
#   (Bernoulli(\(p\)) entry masks, where the flat solution is the weighted trace norm with the
#   empirical marginals) and `fig3-quadratic` (quadratic-activation networks); `fig4-regularity` for the
#   norm gap and balancedness of Theorem 3.3.
# * `flatminima reproduce --list` lists every named reproduction, including the network studies.

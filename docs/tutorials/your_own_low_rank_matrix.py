# ruff: noqa: E402, D400, D415  (a notebook: imports where they are first used; a Markdown title)
r"""# Recover your own low-rank matrix, without a ground truth

The reproductions draw a ground truth \(M\) and check the answer against it. With your own data there is
no \(M\): you have a measurement operator \(\mathcal A\) and observations \(b\), and want the flat
solution, the flattest zero-loss factorization \(X = L R^\top\) with \(\mathcal A(X) = b\), together with
evidence that the solver found it. This tutorial completes a partially observed matrix: build the
instance from data, solve, read the certificate, take the factors, and judge the answer on entries held
out of the solve.
"""

# %% [markdown]
# ## Your data
#
# Any partially observed matrix will do: a boolean mask of the observed entries and their values. Here
# the values come from a hidden rank-2 matrix (standing in for ratings, measurements, a kernel, ...),
# so that we can look at it once at the very end; nothing before that uses it. We hold 10% of the
# observed entries out of the solve, to judge the answer on entries it never saw.

# %%
import torch

g = torch.Generator().manual_seed(0)
d1, d2, rank = 50, 40, 2
hidden = torch.randn(d1, rank, generator=g, dtype=torch.float64) @ torch.randn(
    rank, d2, generator=g, dtype=torch.float64
)

observed = torch.rand(d1, d2, generator=g) < 0.45  # which entries you have
held_out = observed & (torch.rand(d1, d2, generator=g) < 0.10)  # kept aside for checking
used = observed & ~held_out
values = hidden[used]  # the observations: the row-major order of the mask's True entries
print(
    f"{int(observed.sum())} of {d1 * d2} entries observed:",
    f"{int(used.sum())} used, {int(held_out.sum())} held out",
)

# %% [markdown]
# ## An instance from data
#
# For matrix completion the operator is the entry mask, `EntryMask.from_mask(mask)`, and the
# observations are the observed values in the row-major order of the mask's `True` entries (for
# sensing it would be `DenseOperator(A)` with sensing matrices `A` of shape \((m, d_1, d_2)\)).
# `Instance.from_data` infers the kind from the operator and validates everything on entry: the
# length and finiteness of the observations, one dtype and device. The ground truth is optional.

# %%
from flatminima.operators import EntryMask
from flatminima.problems import Instance

instance = Instance.from_data(EntryMask.from_mask(used), values)
print(instance.kind, instance.num_measurements, "ground truth:", instance.ground_truth)
print("unobserved rows:", instance.metadata["empty_rows"], "columns:", instance.metadata["empty_columns"])

# %% [markdown]
# Bad input is refused at once with one line naming the argument, the requirement and the value:

# %%
from flatminima.errors import InputDataError

broken = values.clone()
broken[7] = float("nan")
try:
    Instance.from_data(EntryMask.from_mask(used), broken)
except InputDataError as error:  # also a ValueError
    print(f"{type(error).__name__}: {error}")

# %% [markdown]
# ## The rescaling matrices
#
# The flat solution weighs the matrix by the rescaling matrices of the operator,
# \(D_1^2 = \frac{1}{m d_2} \sum_l A_l A_l^\top\) and \(D_2^2 = \frac{1}{m d_1} \sum_l A_l^\top A_l\),
# built from the operator alone. For an entry mask they are diagonal: the square roots of the observed
# counts per row and per column, normalized. Rows observed more often weigh more; their spread is
# measured by \(\kappa(D_1, D_2)\), which enters the regularity bounds of Theorem 3.3.

# %%
from flatminima.objectives import kappa

D1, D2 = instance.operator.rescaling()
rows = used.sum(1).double()
m = instance.num_measurements
print("D1 is diagonal:", bool(torch.equal(D1, torch.diag(torch.diagonal(D1)))))
print("D1^2 = diag(row counts) / (m d2):", bool(torch.allclose(torch.diagonal(D1) ** 2, rows / (m * d2))))
print(f"observations per row from {int(rows.min())} to {int(rows.max())}")
print(f"kappa(D1, D2) = {kappa(instance):.3f}  (alpha1 I <= D1, D2 <= alpha2 I, kappa = alpha2 / alpha1)")

# %% [markdown]
# ## Solve and certify
#
# `solve_flat` solves the convex relaxation
# \(P_\text{flat}:\ \min \|D_1 X D_2\|_* \ \text{s.t.}\ \mathcal A(X) = b\), whose solutions are exactly
# the end-to-end matrices of the flat solutions (Theorem 3.2). The answer comes with a KKT
# **certificate** computed from the returned primal-dual pair: primal residual
# \(\|\mathcal B(Z) - b\|\), dual residual \(\max(0, \|\mathcal B^*(\lambda)\|_\text{op} - 1)\) and duality
# gap. The status is `converged` only when all three relative residuals meet the tolerance, so with no
# ground truth the certificate is how you know the solve is right.

# %%
from flatminima.solvers import solve_flat

result = solve_flat(instance)
print(
    f"status: {result.status.value}, rank {result.rank},",
    f"{result.iterations} iterations, {result.wall_time:.2f} s",
)
print("message:", result.message)
for key, value in result.certificate.as_dict().items():
    print(f"  {key:26s} {value}")

# %% [markdown]
# ## The flat factors
#
# `result.factors(k)` maps the solution back to factors of width \(k\) by Theorem 3.2:
# \(L = D_1^{-1} U \Sigma^{1/2}\), \(R = D_2^{-1} V \Sigma^{1/2}\) (zero-padded to width \(k\)). They fit
# the data exactly, and among all factorizations with zero loss they have the smallest scaled Hessian
# trace, \(\operatorname{str} = 2(\|D_1 L\|_F^2 + \|D_2 R\|_F^2) = 4 \|D_1 X D_2\|_*\). Any other
# factorization of the same matrix is sharper, e.g. the unbalanced \((2L, R/2)\).

# %%
from flatminima.objectives import BilinearFactorization

k = 10
L, R = result.factors(k)
objective = BilinearFactorization(instance, width=k)
X = result.matrix
print(f"loss at the flat factors: {float(objective.value((L, R))):.2e}")
print(f"scaled trace at (L, R):       {float(objective.scaled_trace((L, R))):.6f}")
print(f"4 ||D1 X D2||_*:              {float(4 * torch.linalg.matrix_norm(D1 @ X @ D2, ord='nuc')):.6f}")
print(f"scaled trace at (2 L, R / 2): {float(objective.scaled_trace((2 * L, R / 2))):.6f}")

# %% [markdown]
# ## Judging the answer without the truth
#
# The recovery metrics need the ground truth and say so, in one line:

# %%
from flatminima.errors import MissingGroundTruthError

try:
    result.recovery_error(instance.ground_truth)
except MissingGroundTruthError as error:
    print(f"{type(error).__name__}: {error}")

# %% [markdown]
# What you can always do is predict the entries you held out. Nuclear-norm minimization (NNM), the
# other convex baseline, is solved the same way for comparison.

# %%
from flatminima.solvers import solve_nuclear_norm

nnm = solve_nuclear_norm(instance)
scale = float(values.pow(2).mean().sqrt())
for name, answer in (("flat", result), ("nuclear norm", nnm)):
    error = answer.matrix[held_out] - hidden[held_out]
    rms = float(error.pow(2).mean().sqrt())
    print(
        f"{name:13s} {answer.status.value}, rank {answer.rank}:",
        f"held-out RMS error {rms:.1e} (RMS entry {scale:.2f})",
    )

# %% [markdown]
# Both predict every held-out entry to solver precision here: 40% of the entries of a rank-2
# \(50 \times 40\) matrix are well above the completion threshold. (With too few observations the
# certified solution has a higher rank than the truth, and the held-out error says so.) Only now, at
# the very end, do we look at the hidden matrix itself:

# %%
relative = torch.linalg.matrix_norm(X - hidden) / torch.linalg.matrix_norm(hidden)
print(f"||X - M||_F / ||M||_F = {float(relative):.1e}")

# %% [markdown]
# ## Noisy observations, other operators
#
# * Noisy data: `solve_flat(instance, eps=...)` solves
#   \(\min \|D_1 X D_2\|_*\ \text{s.t.}\ \|\mathcal A(X) - b\|_2 \le \epsilon\).
# * Sensing matrices: `Instance.from_data(DenseOperator(A), b)` with `A` of shape \((m, d_1, d_2)\);
#   rank-one designs `BilinearOperator(a, b)` and symmetric `SymmetricRankOneOperator(x)` never form
#   the \((m, d_1, d_2)\) tensor.
# * A row or column with no observation makes \(D_1\) or \(D_2\) singular: \(P_\text{flat}\) is then
#   undefined, and `solve_flat` raises a `SingularRescalingError` naming the empty rows and columns.
# * `backend="cvxpy"` solves the same program with CVXPY and Clarabel (the `reference` extra), as a
#   cross-check of the torch solver.

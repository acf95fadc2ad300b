# ruff: noqa: E402, D400, D415  (a notebook: imports where they are first used; a Markdown title)
r"""# Run a sweep on a cluster

A sweep is a grid of problem parameters, times a number of measurement draws per grid cell, times a
list of solvers, written down as a TOML file ([the format](../reference/sweep-format.md)).
`flatminima sweep SPEC.toml --store S.sqlite` runs it into a SQLite store that resumes; the same
command sends the trials to a Dask cluster with `--scheduler tcp://HOST:8786`, for example one that
dask-jobqueue starts on SLURM.

This page runs a tiny grid for real, first in-process, then on a Dask cluster reached through its
scheduler address exactly as on a real cluster (here the cluster lives on this machine), and shows
the SLURM part as text at the end.
"""

# %% [markdown]
# ## A spec
#
# Matrix completion, flat solution (`flat`) against nuclear-norm minimization (`nuclear_norm`), two
# dimensions, two observation probabilities, three draws per cell: \(2 \times 2 \times 3 \times 2 = 24\)
# trials. Every random stream of a trial derives from `seed` and the trial's parameters, so the same
# spec gives the same numbers on any machine and in any order.

# %%
from pathlib import Path

SPEC = """\
name = "tiny-completion"
description = "Bernoulli(p) completion, rank 2: flat vs nuclear norm (tiny grid)"
seed = 0
draws = 3
truth = "cell"        # one ground truth per grid cell, fresh masks per draw
tolerance = 1e-6      # success iff ||X - M||_F < 1e-6 with a certified solve

[problem]
name = "matrix_completion"
rank = 2

[grid]
dim = [8, 12]
probability = [0.5, 0.9]

[[solvers]]
name = "flat"

[[solvers]]
name = "nuclear_norm"

[figure]
kind = "success"
x = "dim"
y = "probability"
"""
Path("tiny.toml").write_text(SPEC)

# %% [markdown]
# `load_spec` validates the file the way the CLI does, before anything runs (every error is one line
# naming the field path), and expands it lazily into trials, each with a content hash as its key:

# %%
from flatminima.experiments import load_spec

spec = load_spec("tiny.toml")
print(f"{spec.name}: {spec.num_trials} trials")
first = next(iter(spec.iter_trials()))
print("first trial:", first.problem, dict(first.cell), first.label, "draw", first.draw, "key", first.key[:12])

# %% [markdown]
# ## Run it, in this process
#
# `--in-process` runs the trials one by one in the driver (no Dask): the simplest way to debug a spec.
# A small helper runs the command and shows what it prints.

# %%
import os
import subprocess
import sys


def flatminima(*args: str) -> int:
    """Run the ``flatminima`` command line (as ``python -m flatminima.cli``) and print its output."""
    done = subprocess.run(
        [sys.executable, "-m", "flatminima.cli", *args], capture_output=True, text=True, env=os.environ.copy()
    )
    print(f"$ flatminima {' '.join(args)}")
    print((done.stdout + done.stderr).rstrip())
    print(f"[exit status {done.returncode}]")
    return done.returncode


flatminima("sweep", "tiny.toml", "--store", "tiny.sqlite", "--in-process", "--no-progress")

# %% [markdown]
# Run the same command again and nothing is recomputed: the store holds every finished trial (each
# committed as it completes), so a sweep killed at any point resumes where it stopped.

# %%
flatminima("sweep", "tiny.toml", "--store", "tiny.sqlite", "--in-process", "--no-progress")

# %% [markdown]
# ## Run it on a Dask cluster, by address
#
# On a cluster the driver (the `flatminima sweep` process) submits the trials to the Dask scheduler
# and writes every finished record into the store itself: the workers never touch the store, so it can
# stay on the driver's local disk. Here we start a small cluster on this machine and hand its
# scheduler's `tcp://` address to the CLI, exactly as you would with a cluster's address.
#
# Growing a sweep is allowed (more draws, more grid values, more solvers): raising `draws` from 3 to 5
# adds 16 trials; the 24 stored ones are skipped. (Changing anything else under the same name is
# refused: a sweep's identity includes its spec.)

# %%
from distributed import LocalCluster

Path("tiny.toml").write_text(SPEC.replace("draws = 3", "draws = 5"))
with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
    address = cluster.scheduler_address
    status = flatminima(
        "sweep", "tiny.toml", "--store", "tiny.sqlite", "--scheduler", address, "--no-progress"
    )
assert status == 0

# %% [markdown]
# Addresses are checked before anything runs; the dashboard's `http://` address is a common mistake:

# %%
flatminima("sweep", "tiny.toml", "--store", "tiny.sqlite", "--scheduler", "http://login01:8787")

# %% [markdown]
# ## Look at the results
#
# `plot` draws every sweep of a store by its `[figure]` hints and `export` writes one row per trial
# (CSV or Parquet). Both open the store read-only.

# %%
flatminima("plot", "tiny.sqlite", "--out", "figures")
flatminima("export", "tiny.sqlite", "--out", "tiny.csv")

import pandas as pd

frame = pd.read_csv("tiny.csv")
print(frame.groupby(["label", "dim", "probability"])["success"].agg(["mean", "count"]).to_string())

# %% [markdown]
# ## On SLURM, with dask-jobqueue
#
# Nothing above changes on a cluster except where the scheduler comes from. Install flatminima in an
# environment that the compute nodes see (the workers import it to run a trial), then start a
# scheduler whose workers are SLURM jobs. With dask-jobqueue
# (`pip install dask-jobqueue`), a small script on the login node keeps the cluster alive:
#
# ```python
# # cluster.py: run on the login node, e.g. inside tmux; Ctrl-C ends the jobs
# import time
#
# from dask_jobqueue import SLURMCluster
#
# cluster = SLURMCluster(
#     cores=16,            # one job = one node: 16 worker processes of one thread each
#     processes=16,
#     memory="64GB",
#     walltime="04:00:00",
#     queue="normal",      # your partition
#     account="myproject", # your account
#     job_script_prologue=["source ~/flatminima/.venv/bin/activate"],
#     scheduler_options={"port": 8786},
# )
# cluster.scale(jobs=8)  # 8 nodes, 128 single-threaded workers
# print("scheduler:", cluster.scheduler_address, flush=True)
# while True:
#     time.sleep(60)
# ```
#
# and the driver runs where the store should live:
#
# ```bash
# flatminima sweep spec.toml --store spec.sqlite --scheduler tcp://login01:8786
# flatminima reproduce fig3-sensing --scheduler tcp://login01:8786     # the full Figure 3a
# ```
#
# Without dask-jobqueue, start the pieces by hand: `dask scheduler` on one node, and
# `dask worker tcp://login01:8786 --nworkers 16 --nthreads 1` in each batch job.
#
# What to know:
#
# * **One thread per worker.** Each trial is a small dense solve; run many single-threaded workers
#   rather than few multi-threaded ones (the local cluster of `--workers N` limits torch, OpenMP and
#   MKL to one thread per worker process for the same reason).
# * **The store stays with the driver.** Only the driver writes it; keep it on a local disk (SQLite
#   over a network file system is discouraged).
# * **Several drivers, one store.** Two `flatminima sweep` commands on the same store share the work:
#   each claims trials with a lease (10 minutes, renewed while it lives), so no trial is run twice and
#   none is lost; a driver whose host dies lets its claims expire.
# * **Interrupts.** Ctrl-C stops the driver with status 130 and one line saying how many trials are
#   stored; rerunning the same command resumes. A worker that dies is replaced and its trials are
#   rescheduled; a trial that keeps killing workers is stored as failed, and the sweep goes on.
# * **Size limits are checked first**: more than 1,000,000 trials needs `--max-trials N`.

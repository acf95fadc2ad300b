"""Run a job on two (or more) gloo ranks in spawned processes and collect what each rank returns.

The teardown order matters. An operator built under a process group holds that group; if it is still
alive when ``destroy_process_group`` runs (a local of the function that calls it), the group's gloo
threads are torn down at interpreter exit instead, and about one run in six then aborts after the job
has finished ("terminate called without an active exception", SIGABRT). So the job runs in its own
function (its operators are released when it returns), the ranks meet at a barrier (no rank tears
down while another still talks to it), and only then is the group destroyed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import distributed

#: seconds the ranks get to finish before the test fails (a collective waiting for a missing rank).
DEADLINE = 120


def _rank_main(rank: int, job: Callable[[int], Any], world_size: int, folder: str) -> None:
    torch.set_num_threads(1)
    distributed.init_process_group(
        "gloo",
        init_method=f"file://{folder}/init",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),
    )
    try:
        torch.save(job(rank), Path(folder) / f"rank{rank}.pt")
        distributed.barrier()
    finally:
        distributed.destroy_process_group()


def run_ranks(job: Callable[[int], Any], folder: Path, world_size: int = 2) -> list[Any]:
    """``[job(0), job(1), ...]``, each computed on its own rank of one gloo group (``job`` must pickle)."""
    context = torch.multiprocessing.start_processes(
        _rank_main, args=(job, world_size, str(folder)), nprocs=world_size, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + DEADLINE
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {world_size} ranks did not finish within {DEADLINE} s")
    return [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in range(world_size)]

"""Hessian trace and top eigenvalue of an MLP, the data sharded across torch.distributed ranks.

Run: ``torchrun --nproc-per-node 2 examples/distributed_trace.py`` (gloo on CPU, NCCL with one GPU per
rank); ``python examples/distributed_trace.py`` runs the same measurement in one process.

Every rank builds the same model and the same dataset (from the same seeds), keeps its shard of the
batches through a ``DistributedSampler`` (no shuffling; 512 examples divide evenly, so no example is
repeated), and builds the operator: ``HessianOperator.from_model`` sees that ``torch.distributed`` is
initialized, sums the number of examples over the ranks, and all-reduces every Hessian-vector product.
The estimators then run unchanged on every rank with identically seeded generators and print the same
numbers as one process with all the data.
"""

from __future__ import annotations

import os

import torch
from torch import distributed, nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from flatminima.curvature import HessianOperator, hutchinson_trace, lanczos_eigenvalues


def main() -> dict[str, float]:
    """Measure the trace and top eigenvalue of the Hessian on this rank's shard; return them."""
    launched = "RANK" in os.environ  # set by torchrun
    cuda = torch.cuda.is_available()
    if launched:
        distributed.init_process_group("nccl" if cuda else "gloo")
    rank = distributed.get_rank() if launched else 0
    device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    try:
        g = torch.Generator().manual_seed(0)  # the same model and data on every rank
        net = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 3)).double()
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        x = torch.randn(512, 10, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (512,), generator=g)
        net, dataset = net.to(device), TensorDataset(x.to(device), y.to(device))
        sampler = DistributedSampler(dataset, shuffle=False) if launched else None
        loader = DataLoader(dataset, batch_size=64, sampler=sampler)

        H = HessianOperator.from_model(net, nn.functional.cross_entropy, loader, mode="eval")
        assert H.source is not None
        # every rank makes every call (each one all-reduces), with the same seeds
        loss = float(H.value())
        trace = hutchinson_trace(H, 200, generator=torch.Generator().manual_seed(1))
        top = float(lanczos_eigenvalues(H, 1, generator=torch.Generator().manual_seed(2)).eigenvalues[0])
        results = {"loss": loss, "trace": trace.value, "stderr": trace.stderr, "top": top}
        if rank == 0:
            ranks = distributed.get_world_size() if launched else 1
            shard, total = H.source.batches.num_examples, H.source.num_examples
            print(f"{ranks} rank(s); rank 0 holds {shard} of the {total} examples")
            print(f"loss              {loss:.12f}")
            print(
                f"Hutchinson trace  {trace.value:.12f} +- {trace.stderr:.2g} ({trace.num_matvecs} products)"
            )
            print(f"top eigenvalue    {top:.12f}")
        return results
    finally:
        if launched:
            distributed.destroy_process_group()


if __name__ == "__main__":
    main()

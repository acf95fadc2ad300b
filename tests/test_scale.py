"""Scale: a 2000 x 2000 bilinear sensing instance with 50,000 measurements stays under 2 GB.

Runs in a fresh subprocess so that the peak resident memory (ru_maxrss, which includes the torch runtime)
belongs to this workload alone.
"""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import json, resource, torch
from flatminima.problems import BilinearSensing
from flatminima.objectives import BilinearFactorization
g = torch.Generator().manual_seed(0)
instance = BilinearSensing(shape=(2000, 2000), rank=5, num_measurements=50_000).sample(generator=g)
objective = BilinearFactorization(instance, width=10)
L = torch.randn(2000, 10, generator=g, dtype=torch.float64)
R = torch.randn(2000, 10, generator=g, dtype=torch.float64)
trace = float(objective.hessian_trace((L, R)))
D1_sq, D2_sq = instance.operator.rescaling_squares()
expected = 2 * 2000 * (float((L * (D1_sq @ L)).sum()) + float((R * (D2_sq @ R)).sum()))
peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"trace": trace, "expected": expected, "peak_mib": peak_mib}))
"""


def test_bilinear_2000_fits_in_2_gb() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert abs(result["trace"] - result["expected"]) <= 1e-10 * abs(result["expected"])
    assert result["peak_mib"] < 2048, f"peak resident memory {result['peak_mib']:.0f} MiB"

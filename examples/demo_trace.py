"""Exact Hessian trace of Gaussian matrix sensing at the ground truth and at a random point.

Run: ``python examples/demo_trace.py`` (the same as ``flatminima demo``).
"""

from __future__ import annotations

from flatminima.demo import DemoReport, run_demo


def main(quick: bool = True) -> DemoReport:
    """Run the demo; ``quick`` uses d = 20, otherwise d = 60."""
    dim = 20 if quick else 60
    report = run_demo(dim=dim, rank=2, num_measurements=20 * dim, width=dim, seed=0)
    print(report)
    return report


if __name__ == "__main__":
    main(quick=False)

"""Speed of `bayescale.analysis.design`: scoring 1,000 candidate runs against one target.

Prints one table. A Chinchilla fit (4 chains x 1000 draws: 4000 draws) to a simulated
IsoFLOP ladder; 1,000 candidates (``design_grid`` with 25 budgets x 40 sizes) scored against
the loss at 100x the largest run's compute, with 32 simulated outcomes each (candidates x
outcomes x draws = 128 million weights), for the exact law and with misfit. Cold = the first
call (JAX compilation included); warm = the best and the median of 5 later calls. The last
rows time a greedy batch of 5 runs (5 scoring passes). ``uptime``'s load average is printed
with the table: the machine may be shared.

Usage: python benchmarks/design_speed.py [--draws 1000] [--outcomes 32]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import numpy as np  # noqa: E402


def timed(fn, repeats=5):
    t = time.perf_counter()
    fn()
    cold = time.perf_counter() - t
    walls = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
    return cold, float(np.min(walls)), float(np.median(walls))


def main() -> None:
    import bayescale as bs
    from bayescale.model.simulation import isoflop_design

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000, help="draws per chain (4 chains)")
    parser.add_argument("--outcomes", type=int, default=32)
    args = parser.parse_args()
    runs = bs.simulate("chinchilla", design=isoflop_design(np.geomspace(6e18, 6e19, 3), 5), seed=3)
    target = {"loss_at": {"n_params": 2.2e9, "n_tokens": 4.5e11}}  # ~100x the largest compute
    rows = []
    for misfit in (False, True):
        fit = bs.fit(
            runs, misfit=misfit, num_warmup=500, num_samples=args.draws, progress_bar=False, seed=0
        )
        grid = bs.design_grid(fit, budgets=25, sizes=40, spread=1.2)
        n = len(grid) * args.outcomes * fit.posterior.sizes["draw"] * fit.posterior.sizes["chain"]
        for batch in (1, 5):
            cold, best, med = timed(
                lambda fit=fit, grid=grid, batch=batch: bs.design(
                    fit, grid, target, batch=batch, n_outcomes=args.outcomes
                ),
                repeats=5 if batch == 1 else 2,
            )
            rows.append(
                (
                    "misfit" if misfit else "exact",
                    len(grid),
                    batch,
                    n / 1e6,
                    cold,
                    best,
                    med,
                )
            )
    load = os.getloadavg()
    print(f"load average (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"cores: {os.cpu_count()}")
    print(
        f"{'model':8} {'candidates':>10} {'batch':>5} {'weights (M)':>11} {'cold s':>7} "
        f"{'warm best s':>11} {'warm median s':>13}"
    )
    for r in rows:
        print(
            f"{r[0]:8} {r[1]:>10} {r[2]:>5} {r[3]:>11.0f} {r[4]:>7.2f} {r[5]:>11.2f} {r[6]:>13.2f}"
        )


if __name__ == "__main__":
    main()

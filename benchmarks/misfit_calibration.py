"""Calibration of the misfit model on simulated ladders where the law is exact.

The design of `tests/statistical/test_misfit_coverage.py`: simulated IsoFLOP ladders of the
Chinchilla law (Epoch's parameters), each fitted with the misfit model and with the exact law
(4 chains x 500 warm-up + 500 draws) on the runs at or below the 2/3 quantile of compute; the
24 runs of the three larger budgets are forecast. Prints the coverage of the misfit model's 50%
and 90% predictive intervals, the median ratio of its in-range 90% interval width to the exact
law's, and the number of ladders with a convergence warning.

Usage: python benchmarks/misfit_calibration.py [--ladders 20] [--p-exact 0.5]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import numpy as np  # noqa: E402

DRAWS = dict(num_warmup=500, num_samples=500, progress_bar=False)


def interval(fit, at, prob, seed):
    import bayescale as bs

    q = bs.forecast(fit, at, seed=seed, warn=False).quantiles([(1 - prob) / 2, (1 + prob) / 2])
    return q.to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ladders", type=int, default=20, help="simulated ladders (seeds 0..)")
    parser.add_argument("--p-exact", type=float, default=0.0, help="Misfit(p_exact=...)")
    args = parser.parse_args()

    import bayescale as bs
    from bayescale.errors import ConvergenceWarning

    spec = bs.Misfit(p_exact=args.p_exact)
    inside, ratios, problems, t0 = {0.5: [], 0.9: []}, [], 0, time.perf_counter()
    for seed in range(args.ladders):
        runs = bs.simulate("chinchilla", seed=seed)
        cut = np.quantile(runs["compute"], 2 / 3)
        train, held = runs[runs["compute"] <= cut], runs[runs["compute"] > cut]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            misfit = bs.fit(train, "chinchilla", misfit=spec, seed=seed, **DRAWS)
            exact = bs.fit(train, "chinchilla", seed=seed, **DRAWS)
        problems += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        at, fitted = held[["n_params", "n_tokens"]], train[["n_params", "n_tokens"]]
        y = held["loss"].to_numpy()
        for prob in inside:
            lo, hi = interval(misfit, at, prob, seed).T
            inside[prob].append((lo < y) & (y < hi))
        widths = [np.diff(interval(f, fitted, 0.9, seed), axis=1).ravel() for f in (misfit, exact)]
        ratios.append(widths[0] / widths[1])
    n = sum(len(v) for v in inside[0.5])
    print(f"misfit p_exact={args.p_exact}: {args.ladders} ladders, {n} held-out runs")
    print(f"{'coverage 50%':>14} {'coverage 90%':>14} {'width ratio':>12} {'warnings':>9} {'s':>6}")
    print(
        f"{np.concatenate(inside[0.5]).mean():14.3f} {np.concatenate(inside[0.9]).mean():14.3f} "
        f"{np.median(np.concatenate(ratios)):12.3f} {problems:9d} "
        f"{time.perf_counter() - t0:6.0f}"
    )


if __name__ == "__main__":
    main()

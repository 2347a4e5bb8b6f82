"""Fitting speed on Epoch's 240 Chinchilla rows: bayescale's NUTS against the literature.

Prints one table. Rows:
- literature: Huber (delta=1e-3) + SciPy L-BFGS-B (analytic gradients) from each of 4500
  grid starts as in Epoch's replication, plus 4000 bootstrap refits for intervals; both
  timed on a sample of starts / refits in this process and scaled.
- bayescale NUTS, 4 chains x 1000 warm-up + 1000 draws: cold (a fresh process: import, compile,
  sample; without and with JAX's persistent compilation cache, as the CLI uses) and warm (a
  second fit in the same process), with min bulk ESS, ESS/s and divergences.
- bayescale MAP + Laplace and the Huber point fit (warm).

Usage: python benchmarks/fit_speed.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402
from scipy.special import huber, logsumexp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

COLD = """
import os, time, json
t0 = time.perf_counter()
import bayescale as bs
from bayescale.io.datasets import load_dataset
df = load_dataset("chinchilla_epoch_240", data_dir={data!r})
{cache}
f = bs.fit(df, "chinchilla", seed=0)
print(json.dumps({{"wall": time.perf_counter() - t0}}))
"""
CACHE = (
    "import jax; jax.config.update('jax_compilation_cache_dir', {d!r}); "
    "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)"
)


def literature_objective(x, log_n, log_d, log_l, delta=1e-3):
    """Summed Huber loss of log residuals and its analytic gradient (a fair, fast baseline)."""
    a, b, e, alpha, beta = x
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    pred = logsumexp(terms, axis=0)
    r = pred - log_l
    dr = np.clip(r, -delta, delta)  # derivative of huber(delta, r)
    w = np.exp(terms - pred)  # softmax weights: d pred / d term
    grad = np.array(
        [
            np.sum(dr * w[0]),
            np.sum(dr * w[1]),
            np.sum(dr * w[2]),
            -np.sum(dr * w[0] * log_n),
            -np.sum(dr * w[1] * log_d),
        ]
    )
    return huber(delta, r).sum(), grad


def time_literature(df, n_sample_starts=150, n_sample_boot=40):
    log_n, log_d, log_l = (np.log(df[c].to_numpy()) for c in ("n_params", "n_tokens", "loss"))
    grid = [
        np.array([a, b, e, al, be])
        for a in np.arange(0, 30, 5.0)
        for b in np.arange(0, 30, 5.0)
        for e in np.arange(-1, 1.5, 0.5)
        for al in np.arange(0, 2.5, 0.5)
        for be in np.arange(0, 2.5, 0.5)
    ]
    rng = np.random.default_rng(0)
    picks = rng.choice(len(grid), n_sample_starts, replace=False)
    t = time.perf_counter()
    for i in picks:
        scipy.optimize.minimize(
            literature_objective, grid[i], args=(log_n, log_d, log_l), jac=True, method="L-BFGS-B"
        )
    per_start = (time.perf_counter() - t) / n_sample_starts
    best = np.array([6.17795598, 7.64273236, 0.59711196, 0.348, 0.366])
    t = time.perf_counter()
    for _ in range(n_sample_boot):
        idx = rng.integers(0, len(log_n), len(log_n))
        scipy.optimize.minimize(
            literature_objective,
            best,
            args=(log_n[idx], log_d[idx], log_l[idx]),
            jac=True,
            method="L-BFGS-B",
        )
    per_boot = (time.perf_counter() - t) / n_sample_boot
    return per_start * len(grid), per_boot * 4000


def cold(data, cache_dir=None):
    cache = CACHE.format(d=str(cache_dir)) if cache_dir else ""
    code = COLD.format(data=str(data), cache=cache)
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    del out
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data", default=os.environ.get("BAYESCALE_DATA", ROOT.parent / "shared" / "data")
    )
    parser.add_argument("--skip-cold", action="store_true")
    args = parser.parse_args()

    import arviz_stats as azs

    import bayescale as bs
    from bayescale.io.datasets import load_dataset

    df = load_dataset("chinchilla_epoch_240", data_dir=args.data)
    rows = []
    grid_s, boot_s = time_literature(df)
    lit = grid_s + boot_s
    rows.append(("literature: Huber grid (4500 starts)", grid_s, None, None, None))
    rows.append(("literature: + 4000 bootstrap refits", lit, None, None, None))
    if not args.skip_cold:
        rows.append(("bayescale NUTS cold, no compile cache", cold(args.data), None, None, None))
        with tempfile.TemporaryDirectory() as d:
            cold(args.data, d)  # fill the cache
            rows.append(
                ("bayescale NUTS cold, warm compile cache", cold(args.data, d), None, None, None)
            )
    bs.fit(df, "chinchilla", seed=0)  # compile
    for seed in (1, 2):
        t = time.perf_counter()
        fit = bs.fit(df, "chinchilla", seed=seed)
        wall = time.perf_counter() - t
        ess = float(min(azs.ess(fit.posterior, method="bulk")[k] for k in fit.param_names))
        div = int(fit.tree["sample_stats"]["diverging"].sum())
        rows.append((f"bayescale NUTS warm (seed {seed})", wall, ess, ess / wall, div))
    bs.fit(df, "chinchilla", method="map", num_samples=4000)
    t = time.perf_counter()
    bs.fit(df, "chinchilla", method="map", num_samples=4000)
    rows.append(
        ("bayescale MAP + Laplace (4000 draws), warm", time.perf_counter() - t, None, None, None)
    )
    bs.fit(df, "chinchilla", method="huber")
    t = time.perf_counter()
    bs.fit(df, "chinchilla", method="huber")
    rows.append(
        (
            "bayescale Huber point fit (best 64 of 4500 starts), warm",
            time.perf_counter() - t,
            None,
            None,
            None,
        )
    )

    print(
        f"Chinchilla law, {len(df)} Epoch rows, {os.cpu_count()} CPUs, "
        f"jax devices: {__import__('jax').local_device_count()}"
    )
    print(f"{'set-up':<58} {'wall s':>8} {'vs lit.':>8} {'min ESS':>8} {'ESS/s':>8} {'div':>4}")
    for name, wall, ess, rate, div in rows:
        ratio = f"{wall / lit:8.3f}"
        ess_s = f"{ess:8.0f}" if ess is not None else f"{'':>8}"
        rate_s = f"{rate:8.0f}" if rate is not None else f"{'':>8}"
        div_s = f"{div:4d}" if div is not None else f"{'':>4}"
        print(f"{name:<58} {wall:8.2f} {ratio} {ess_s} {rate_s} {div_s}")


if __name__ == "__main__":
    main()

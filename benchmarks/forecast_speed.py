"""Speed of forecasts and compute-optimal allocations over 4000 posterior draws.

Prints one table. Rows: `forecast` at 10,000 (N, D) points (law mean, and predictive with
Student-t noise), `Forecast.summary` on it, `compute_optimal` at 100 budgets (closed form and
the numerical optimiser), `compute_for_loss`. Cold = the first call in this process (JAX
compilation included); warm = the best and the median of 5 later calls. Each has a baseline
computed in this process: a plain NumPy loop over draws (float64), NumPy's quantile/mean/sd for
the summary, or SciPy's scalar minimiser / root finder per draw and budget (timed on a sample
and scaled). The last row is what a user sweeping a grid waits for: the predictive forecast
and its summary in one call (baseline: the two baselines' sum). Host devices: as many as
``XLA_FLAGS`` sets (4 here, as the CLI does); forecasts and the numerical optimiser spread
their work over min(devices, cores) of them.

Usage: python benchmarks/forecast_speed.py [--data ../shared/data] [--fit saved_fit.nc]
[--forecast-only]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N_POINTS, N_BUDGETS, REPEATS = 10_000, 100, 5


def timed(fn, repeats=REPEATS):
    t = time.perf_counter()
    fn()
    cold = time.perf_counter() - t
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return cold, float(np.min(walls)), float(np.median(walls)), float(np.min(cpus))


def baseline_forecast(p, n, d, predictive, seed=0):
    """NumPy, one draw at a time (vectorised over points), float64."""
    rng = np.random.default_rng(seed)
    out = np.empty((p["E"].size, n.size))
    for s in range(p["E"].size):
        loss = p["E"][s] + p["A"][s] * n ** -p["alpha"][s] + p["B"][s] * d ** -p["beta"][s]
        if predictive:
            loss = loss * np.exp(p["sigma"][s] * rng.standard_t(4.0, n.size))
        out[s] = loss
    return out


def baseline_closed_form(p, compute):
    out = np.empty((p["E"].size, compute.size))
    for s in range(p["E"].size):
        a, b = p["alpha"][s], p["beta"][s]
        g = (a * p["A"][s] / (b * p["B"][s])) ** (1 / (a + b))
        out[s] = g * (compute / 6) ** (b / (a + b))
    return out


def baseline_numerical(p, compute, sample=200):
    """SciPy bounded scalar minimisation per (draw, budget), on ``sample`` pairs, scaled."""
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, [p["E"].size, compute.size], size=(sample, 2))
    t = time.perf_counter()
    for s, j in pairs:
        ck = compute[j] / 6

        def f(x, s=s, ck=ck):
            n = np.exp(x)
            return np.log(
                p["E"][s] + p["A"][s] * n ** -p["alpha"][s] + p["B"][s] * (ck / n) ** -p["beta"][s]
            )

        half = 0.5 * np.log(ck)
        scipy.optimize.minimize_scalar(
            f, bounds=(half - 9.2, half + 4.6), method="bounded", options={"xatol": 1e-10}
        )
    return (time.perf_counter() - t) / sample * p["E"].size * compute.size


def baseline_root(p, target, sample=50):
    """SciPy brentq per draw on L*(C) (closed-form inner optimum), on ``sample`` draws, scaled."""
    t = time.perf_counter()
    for s in range(sample):
        a, b = p["alpha"][s], p["beta"][s]
        g = (a * p["A"][s] / (b * p["B"][s])) ** (1 / (a + b))

        def gap(log_ck, s=s, a=a, b=b, g=g):
            n = g * np.exp(log_ck * b / (a + b))
            d = np.exp(log_ck) / n
            return p["E"][s] + p["A"][s] * n**-a + p["B"][s] * d**-b - target

        if gap(92.0) < 0:
            scipy.optimize.brentq(gap, 23.0, 92.0, xtol=1e-12)
    return (time.perf_counter() - t) / sample * p["E"].size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data", default=os.environ.get("BAYESCALE_DATA", ROOT.parent / "shared" / "data")
    )
    parser.add_argument(
        "--fit", help="a fit saved by Fit.save (default: fit Epoch's 240 rows, with the misfit)"
    )
    parser.add_argument(
        "--forecast-only", action="store_true", help="time the forecast rows only (no allocation)"
    )
    args = parser.parse_args()

    import bayescale as bs
    from bayescale.analysis.allocate import compute_for_loss, compute_optimal
    from bayescale.analysis.forecast import forecast
    from bayescale.io.datasets import load_dataset

    if args.fit:
        fit = bs.load_fit(args.fit)
    else:
        fit = bs.fit(load_dataset("chinchilla_epoch_240", data_dir=args.data), "chinchilla")
    draws = fit.draws()
    n_draws = draws["E"].size
    rng = np.random.default_rng(1)
    n = np.exp(rng.uniform(np.log(1e8), np.log(1e12), N_POINTS))
    d = np.exp(rng.uniform(np.log(1e9), np.log(1e13), N_POINTS))
    at = {"n_params": n, "n_tokens": d}
    budgets = np.geomspace(1e18, 1e27, N_BUDGETS)
    rows = []

    def add(name, size, fn, base):
        rows.append((name, size, *timed(fn), base))

    t = time.perf_counter()
    baseline_forecast(draws, n, d, predictive=False)
    base_mean = time.perf_counter() - t
    t = time.perf_counter()
    base_draws = baseline_forecast(draws, n, d, predictive=True)
    base_pred = time.perf_counter() - t
    add(
        "forecast, kind='mean'",
        N_POINTS,
        lambda: forecast(fit, at, kind="mean", warn=False),
        base_mean,
    )
    add("forecast, kind='predictive'", N_POINTS, lambda: forecast(fit, at, warn=False), base_pred)
    fc = forecast(fit, at, warn=False)
    t = time.perf_counter()
    np.quantile(base_draws, [0.5, 0.05, 0.95], axis=0)
    base_draws.mean(axis=0)
    base_draws.std(axis=0, ddof=1)
    base_summary = time.perf_counter() - t
    del base_draws
    add("Forecast.summary() (quantiles, sd, ...)", N_POINTS, fc.summary, base_summary)

    if args.forecast_only:
        forecast_rows(fit, at, rows, base_pred + base_summary)
        report(fit, n_draws, rows)
        return
    t = time.perf_counter()
    baseline_closed_form(draws, budgets)
    base_cf = time.perf_counter() - t
    add("compute_optimal, closed form", N_BUDGETS, lambda: compute_optimal(fit, budgets), base_cf)
    add(
        "compute_optimal, numerical",
        N_BUDGETS,
        lambda: compute_optimal(fit, budgets, method="numerical"),
        baseline_numerical(draws, budgets),
    )
    target = 2.0
    base_root = baseline_root(draws, target)
    add("compute_for_loss, closed form", 1, lambda: compute_for_loss(fit, target), base_root)
    add(
        "compute_for_loss, numerical",
        1,
        lambda: compute_for_loss(fit, target, method="numerical"),
        base_root,
    )

    forecast_rows(fit, at, rows, base_pred + base_summary)
    report(fit, n_draws, rows)


def forecast_rows(fit, at, rows, base):
    """The last row: the predictive forecast and its summary in one call."""
    from bayescale.analysis.forecast import forecast

    name = "forecast, predictive, then summary()"
    rows.append((name, N_POINTS, *timed(lambda: forecast(fit, at, warn=False).summary()), base))


def report(fit, n_draws, rows):
    import jax

    misfit = "exact law" if fit.misfit is None else "with the misfit"
    print(
        f"{n_draws} posterior draws ({fit.method}, {misfit}), {os.cpu_count()} CPUs, jax "
        f"{jax.__version__}, host devices: {jax.local_device_count()}, load average "
        f"{os.getloadavg()[0]:.1f}; warm = best and median of {REPEATS} calls"
    )
    head = (
        f"{'task':<44} {'size':>6} {'cold s':>7} {'best s':>7} {'median s':>8} {'cpu s':>6} "
        f"{'items/s':>9} {'baseline s':>10} {'speed-up':>8}"
    )
    print(head)
    print("-" * len(head))
    for name, size, cold, best, median, cpu, base in rows:
        rate = size * n_draws / best
        print(
            f"{name:<44} {size:>6} {cold:7.3f} {best:7.3f} {median:8.3f} {cpu:6.3f} {rate:9.3g} "
            f"{base:10.3f} {base / best:8.1f}"
        )
    print("cpu s: CPU seconds of the process (all threads), least over the warm calls;")
    print("items/s: (draw, point) or (draw, budget) pairs per second (best warm call);")
    print("speed-up: baseline / best warm call. Timings on a shared machine vary with its load.")


if __name__ == "__main__":
    main()

"""Many curves at once: bs.fit_many (one vectorised sampler) against a Python loop of bs.fit.

Simulates ``--curves`` power-law curves of ``--points`` runs each (E, alpha varied per curve,
seeds fixed), fits each independently with 4 chains x 500 warm-up + 500 draws, and prints one
table:

- fit_many: wall time of the whole call in this process (compilation, per-curve set-up,
  sampling and the diagnostics table), for each ``--chunk-size``;
- loop: ``bs.fit`` on the first ``--loop`` curves in the same process; the first fit (which
  compiles) is reported apart, and the loop over all curves is extrapolated as first + (n - 1)
  x the mean of the others (its divergence and r_hat columns are over the measured curves);
- the ratio, and the divergences and r_hat of both.

The machine's load average is printed with the timings: on a shared machine they are upper
bounds. Usage: python benchmarks/many_curves.py [--curves 1000] [--loop 20] [--chunk-size 0]
[--misfit]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import bayescale as bs  # noqa: E402
from bayescale.model.simulation import sweep_design  # noqa: E402

#: the number of curves of the loop (the fit_many columns "..._loop_curves" are over them)
LOOP = [20]
SETTINGS = dict(num_chains=4, num_warmup=500, num_samples=500, seed=0)


def curves(n: int, points: int) -> pd.DataFrame:
    """``n`` power-law curves over N in [1e7, 1e10], with E and alpha varied (fixed seeds)."""
    rng = np.random.default_rng(20261130)
    design = sweep_design("n_params", 1e7, 1e10, points)
    frames = []
    for i in range(n):
        truth = {"E": rng.uniform(1.5, 2.2), "A": 480.0, "alpha": rng.uniform(0.25, 0.5)}
        frame = bs.simulate("power_law", truth, design=design, seed=i)
        frames.append(frame.assign(group=f"curve{i:04d}"))
    return pd.concat(frames, ignore_index=True)


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def time_fit_many(
    runs: pd.DataFrame, size: int | None, workers: int, quiet: dict, first: bool
) -> dict:
    """One fit_many call: in this process (workers=0) or on a LocalCluster of processes."""
    n = runs["group"].nunique()
    before = load()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", **quiet)
        if workers:
            from distributed import Client, LocalCluster

            with (
                LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
                ) as cluster,
                Client(cluster) as client,
            ):
                t0 = time.perf_counter()  # the cluster's start-up is not counted
                fits = bs.fit_many(runs, "power_law", chunk_size=size, client=client, **SETTINGS)
                wall = time.perf_counter() - t0
        else:
            fits = bs.fit_many(runs, "power_law", chunk_size=size, **SETTINGS)
            wall = time.perf_counter() - t0
    diag = fits.diagnostics()
    where = f"{workers} worker processes" if workers else "this process"
    when = "first call (compiles)" if first else "warm"
    return {
        "path": f"fit_many, chunk_size={size}, {where}, {when}",
        "wall_s": wall,
        "s_per_curve": wall / n,
        "divergences": int(diag["divergences"].sum()),
        "curves_with_div": int((diag["divergences"] > 0).sum()),
        "median_max_rhat": float(diag["max_r_hat"].median()),
        "worst_max_rhat": float(diag["max_r_hat"].max()),
        "share_not_ok": float((~diag["ok"]).mean()),
        "share_not_ok_loop_curves": float((~diag["ok"]).iloc[: LOOP[0]].mean()),
        "load_before/after": f"{before} | {load()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", type=int, default=1000)
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--loop", type=int, default=20)
    parser.add_argument(
        "--misfit", action="store_true", help="fit every curve with misfit=True (both paths)"
    )
    parser.add_argument(
        "--chunk-size", type=int, nargs="*", default=[0], help="0: the default (None)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="*",
        default=[0],
        help="0: in this process; k: a Dask LocalCluster of k worker processes (one thread each)",
    )
    args = parser.parse_args()
    LOOP[0] = args.loop
    if args.misfit:
        SETTINGS["misfit"] = True
    runs = curves(args.curves, args.points)
    rows = []
    quiet = dict(category=bs.ConvergenceWarning)
    for workers in args.workers:
        for size in args.chunk_size:
            for first in (True, False) if not workers else (False,):
                rows.append(time_fit_many(runs, size or None, workers, quiet, first))
    rows = [row for row in rows if row]
    for row in rows:
        row["curves"] = args.curves

    names = sorted(runs["group"].unique())[: args.loop]
    times, max_rhat, div, with_div, not_ok = [], [], 0, 0, 0
    before = load()
    for name in names:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", **quiet)
            one = bs.fit(runs[runs["group"] == name], "power_law", progress_bar=False, **SETTINGS)
        times.append(time.perf_counter() - t0)
        table = one.summary()
        max_rhat.append(float(table["r_hat"].max()))
        n_div = int(one.tree["sample_stats"]["diverging"].values.sum())
        div, with_div = div + n_div, with_div + (n_div > 0)
        not_ok += bool(one.problems())
    warm = float(np.mean(times[1:])) if len(times) > 1 else times[0]
    loop_total = times[0] + (args.curves - 1) * warm
    rows.append(
        {
            "path": f"loop of bs.fit ({len(names)} measured: first {times[0]:.1f} s, "
            f"then {warm:.2f} s each)",
            "curves": args.curves,
            "wall_s": loop_total,
            "s_per_curve": loop_total / args.curves,
            "divergences": div,
            "curves_with_div": with_div,
            "median_max_rhat": float(np.median(max_rhat)),
            "worst_max_rhat": float(np.max(max_rhat)),
            "share_not_ok": not_ok / len(names),
            "share_not_ok_loop_curves": not_ok / len(names),
            "load_before/after": f"{before} | {load()}",
        }
    )
    table = pd.DataFrame(rows).set_index("path")
    for row in rows[:-1]:
        table.loc[row["path"], "loop_over_this"] = loop_total / row["wall_s"]
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(
            f"{args.curves} power-law curves of {args.points} runs, 4 chains x 500 warm-up + "
            f"500 draws{', misfit=True' if args.misfit else ''}; {os.cpu_count()} CPUs; loop "
            f"extrapolated from {len(names)} curves"
        )
        print(table.round(3).to_string())


if __name__ == "__main__":
    main()

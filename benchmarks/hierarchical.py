"""Grouped fits of the 20 language curves of "Revisiting neural scaling laws": speed and mixing.

Prints one table, one row per (pooling, pool): a first fit in the process (compilation
included) and a second, warm fit of the same shapes with another seed, with divergences,
the largest r_hat, the smallest bulk ESS over every reported parameter, and ESS per second
of the warm fit. The law is the power law with a floor in the number of seen examples, fitted
to the rows of the paper's ``split == "fit"``. Also prints the load average (``os.getloadavg``)
before and after: on a shared machine the wall times scale with it.

Usage: python benchmarks/hierarchical.py [--data ../shared/data] [--draws 1000]
       [--pooling partial none complete] [--pool default all]
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
from bayescale.io.datasets import load_dataset  # noqa: E402


def one(train: pd.DataFrame, pooling: str, pool: str | None, draws: int, seed: int) -> dict:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ConvergenceWarning)
        f = bs.fit(
            train,
            "power_law",
            variable="data_size",
            group="group",
            pooling=pooling,
            pool=None if pool in (None, "default") else pool,
            seed=seed,
            num_warmup=draws,
            num_samples=draws,
            progress_bar=False,
        )
    wall = time.perf_counter() - t0
    table = f.summary()
    return {
        "wall_s": wall,
        "divergences": int(f.tree["sample_stats"]["diverging"].values.sum()),
        "max_r_hat": float(table["r_hat"].max()),
        "min_ess_bulk": float(table["ess_bulk"].min()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("BAYESCALE_DATA", "../shared/data"))
    parser.add_argument("--draws", type=int, default=1000, help="warm-up = draws per chain")
    parser.add_argument("--pooling", nargs="+", default=["partial"])
    parser.add_argument("--pool", nargs="+", default=["default"])
    args = parser.parse_args()
    curves = load_dataset("revisiting_lang", data_dir=args.data)
    train = curves[curves["split"] == "fit"]
    load_before = os.getloadavg()
    rows = []
    for pooling in args.pooling:
        for pool in args.pool if pooling == "partial" else ["-"]:
            cold = one(train, pooling, None if pool == "-" else pool, args.draws, seed=0)
            warm = one(train, pooling, None if pool == "-" else pool, args.draws, seed=1)
            rows.append(
                {
                    "pooling": pooling,
                    "pool": pool,
                    "first_s": round(cold["wall_s"], 1),
                    "warm_s": round(warm["wall_s"], 1),
                    **{f"warm_{k}": v for k, v in warm.items() if k != "wall_s"},
                    "first_divergences": cold["divergences"],
                    "first_max_r_hat": cold["max_r_hat"],
                    "warm_ess_per_s": round(warm["min_ess_bulk"] / warm["wall_s"], 1),
                }
            )
    table = pd.DataFrame(rows).set_index(["pooling", "pool"])
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(
            f"{train['group'].nunique()} curves, {len(train)} runs; 4 chains x {args.draws} "
            f"warm-up + {args.draws} draws"
        )
        print(table.round(3))
    print(
        f"load average (1, 5, 15 min) before {np.round(load_before, 2).tolist()}, "
        f"after {np.round(os.getloadavg(), 2).tolist()} on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()

"""Single-curve fits of the 20 Revisiting language curves: divergences, r_hat and steps.

One `bs.fit` per curve (the power law in the number of seen examples, the paper's
``split == "fit"`` rows), 4 chains x 1000 warm-up + 1000 draws, seed 0: prints one row per
curve (runs, divergences, the largest r_hat of E, alpha and A, mean leapfrog steps per
iteration) and the totals with the wall time of all 20 fits. It measures the sampler's
coordinates (`bayescale.model.geometry`); run it at an earlier commit for the "before".

Usage: python benchmarks/curve_geometry.py [--data ../shared/data] [--misfit]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data", default=os.environ.get("BAYESCALE_DATA", "../shared/data"), help="data folder"
    )
    parser.add_argument("--misfit", action="store_true", help="fit with misfit=True")
    args = parser.parse_args()
    runs = load_dataset("revisiting_lang", data_dir=args.data)
    train = runs[runs["split"] == "fit"]
    rows, t0 = [], time.perf_counter()
    for name, curve in train.groupby("group"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bs.ConvergenceWarning)
            fit = bs.fit(
                curve[["data_size", "loss"]], "power_law", variable="data_size",
                misfit=True if args.misfit else None, seed=0, progress_bar=False,
            )  # fmt: skip
        stats = fit.tree.sample_stats
        r_hat = fit.summary().loc[["E", "alpha", "A"], "r_hat"].max()
        rows.append(
            {
                "curve": name,
                "runs": len(curve),
                "divergences": int(np.asarray(stats["diverging"]).sum()),
                "max_r_hat": float(r_hat),
                "steps_per_iteration": float(np.asarray(stats["n_steps"]).mean()),
            }
        )
    wall = time.perf_counter() - t0
    table = pd.DataFrame(rows).set_index("curve")
    with pd.option_context("display.width", 160):
        print(table.round(3).to_string())
    print(
        f"\ntotal: {table['divergences'].sum()} divergences on "
        f"{(table['divergences'] > 0).sum()} curves; largest r_hat {table['max_r_hat'].max():.3f};"
        f" mean steps per iteration {table['steps_per_iteration'].mean():.1f}; "
        f"wall of the 20 fits {wall:.1f} s (the first compiles)"
    )


if __name__ == "__main__":
    main()

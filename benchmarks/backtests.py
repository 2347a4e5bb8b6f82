"""Real-data backtests of extrapolation: the law with its misfit against the exact law.

Fits on the cheaper runs and scores the forecasts of the held-out ones
(`bayescale.analysis.backtest`):
- Epoch's 240 Chinchilla rows (chinchilla law): hold out the top third of compute;
- ``epoch_raw``: the same on all 245 rows, the 5 outlying runs kept (robustness; not pooled);
- Chinchilla IsoFLOP profiles, flagged rows dropped: hold out the top one and the top two budgets;
- datablations (the 182 runs of the paper's fit, data_constrained law): the top third of compute;
- the 20 language curves of the Revisiting benchmark (power_law over data_size): their own split.
Prints one row per (data set, model) with coverage of the 50/80/90% predictive intervals,
the median |relative error| of the predictive median, divergences and the largest r_hat, then
the pooled coverage (equal weight per data set, and by run) and coverage by distance.

Usage: python benchmarks/backtests.py [--data ../shared/data] [--draws 1000] [--sets ...]
[--p-exact 0.5]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import pandas as pd  # noqa: E402

SETS = ("epoch", "iso1", "iso2", "datablations", "revisiting", "epoch_raw")


def load(name: str, data: str):
    from bayescale.io.datasets import load_dataset

    if name == "epoch":
        return load_dataset("chinchilla_epoch_240", data_dir=data), "chinchilla", {}
    if name == "epoch_raw":  # with the 5 outlying runs Epoch drops: the robustness check
        return load_dataset("chinchilla_epoch", data_dir=data), "chinchilla", {}
    if name in ("iso1", "iso2"):
        runs = load_dataset("chinchilla_isoflop_clean", data_dir=data)
        return runs, "chinchilla", {"holdout": int(name[-1]), "budget_column": "budget"}
    if name == "datablations":
        runs = load_dataset("datablations_fit182", data_dir=data).drop(columns="name")
        return runs, "data_constrained", {}
    runs = load_dataset("revisiting_lang", data_dir=data)[["data_size", "loss", "split", "group"]]
    return runs, "power_law", {"holdout": "split", "variable": "data_size"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data", default=os.environ.get("BAYESCALE_DATA", "../shared/data"), help="data folder"
    )
    parser.add_argument("--draws", type=int, default=1000, help="warm-up and draws per chain")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--models", nargs="+", default=["misfit", "exact"])
    parser.add_argument("--likelihood", default="contaminated_t", help="run noise of the fits")
    parser.add_argument(
        "--p-exact", type=float, default=0.0, help="the misfit model's Misfit(p_exact=...)"
    )
    args = parser.parse_args()

    import bayescale as bs

    rows, runs = [], []
    for name in args.sets:
        data, law, options = load(name, args.data)
        t = time.perf_counter()
        result = bs.backtest(
            data, law, models=args.models, num_warmup=args.draws, num_samples=args.draws,
            likelihood=args.likelihood, misfit=bs.Misfit(p_exact=args.p_exact),
            progress_bar=False, **options,
        )  # fmt: skip
        wall = time.perf_counter() - t
        summary = result.summary()
        for model, row in summary.iterrows():
            rows.append({"set": name, "model": model, **row.to_dict(), "wall_s": wall})
        runs.append(result.runs.assign(set=name))
    table = pd.DataFrame(rows).set_index(["set", "model"])
    all_runs = pd.concat(runs, ignore_index=True)
    cols = [c for c in table.columns if c.startswith("coverage")]
    # epoch_raw repeats epoch's runs: it is reported, not pooled
    pooled_sets = table.drop(index="epoch_raw", level="set", errors="ignore")
    all_runs = all_runs[all_runs["set"] != "epoch_raw"]
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.round(4).to_string())
        print("\nPooled coverage, equal weight per data set:")
        print(pooled_sets.groupby("model")[cols].mean().round(3).to_string())
        print("\nPooled coverage, by run:")
        pooled = all_runs.groupby("model")[[c.replace("coverage", "inside") for c in cols]]
        print(pooled.mean().round(3).to_string())
        bins = pd.cut(all_runs["distance"], [0, 0.25, 0.5, 1, float("inf")], right=False)
        print("\nCoverage of 90% intervals by decades beyond the fitted runs:")
        by = all_runs.groupby(["model", bins], observed=True)["inside_90"]
        print(pd.DataFrame({"coverage_90": by.mean(), "n": by.size()}).round(3).to_string())


if __name__ == "__main__":
    main()

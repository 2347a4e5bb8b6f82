"""The misfit scales' prior, learned across real ladders with each source left out.

Fits every visible backtest split (`backtests.py`'s sets: fit below, score above) once with the
misfit model at a wide reference prior, then scores other priors of the walk scales by
importance weights on those draws (a prior changes the posterior by the ratio of the priors):
for each candidate ``HalfNormal(level) x HalfNormal(tilt)`` the log predictive density of every
held-out run, and the coverage of its 50% and 90% intervals. The scale is chosen by the
held-out density of the *other* sources (the Chinchilla runs, datablations, the Revisiting
curves: Epoch's rows and the IsoFLOP profiles are the same lab's runs, so one source), so each
source is scored with a prior that did not see it; the shipped default is the choice over all
of them.

Usage:
  python benchmarks/misfit_prior.py fit [--data ../shared/data] [--out misfit_prior.npz]
  python benchmarks/misfit_prior.py score [--out misfit_prior.npz]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

SETS = ("epoch", "iso1", "iso2", "datablations", "revisiting")
SOURCE = {"epoch": "chinchilla", "iso1": "chinchilla", "iso2": "chinchilla"}
#: the reference prior of the fits: wider than any candidate, so the weights stay usable
REFERENCE = 0.1
GRID = (0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05)
REPLICATES = 8  # replicated losses per draw for the interval coverage


def splits(name: str, data: str):
    """``(label, train, held, law)`` of every split of a set (one per Revisiting curve)."""
    from backtests import load

    from bayescale.analysis.backtest import _check_holdout, _split

    table, law, options = load(name, data)
    holdout = _check_holdout(options.get("holdout", 1 / 3))
    by = "compute" if "compute" in table else options.get("variable", "n_params")
    groups = table["group"] if "group" in table else pd.Series("all", index=table.index)
    for group, part in table.groupby(groups, sort=True):
        train, held = _split(part, holdout, by, options.get("budget_column", "budget"))
        drop = [c for c in ("group", "split") if c in part]
        yield f"{name}/{group}", train.drop(columns=drop), held.drop(columns=drop), law, options


def fit_all(data: str, out: str, draws: int) -> None:
    import bayescale as bs
    from bayescale import streams
    from bayescale.analysis.predict import predictive
    from bayescale.io.data import from_frame

    arrays: dict[str, np.ndarray] = {}
    for name in SETS:
        for label, train, held, law, options in splits(name, data):
            t = time.perf_counter()
            spec = bs.Misfit(level=REFERENCE, tilt=REFERENCE)
            fit = bs.fit(
                train, law, misfit=spec, num_warmup=draws, num_samples=draws, seed=0,
                progress_bar=False, variable=options.get("variable"),
            )  # fmt: skip
            runs = from_frame(held)
            pred = predictive(fit, runs, rng=streams.rng(0, "forecast_misfit"))
            y = np.log(runs.loss)
            rng = np.random.default_rng(0)
            reps = np.stack([pred.sample(rng) for _ in range(REPLICATES)], axis=1)
            arrays[f"{label}|logpdf"] = pred.logpdf(y)
            arrays[f"{label}|reps"] = reps.astype(np.float32)
            arrays[f"{label}|y"] = y
            for k in ("misfit_level", "misfit_tilt"):
                if k in fit.posterior:
                    arrays[f"{label}|{k}"] = fit.posterior[k].values.reshape(-1)
            problems = "; ".join(fit.problems())
            print(f"{label}: {len(train)} fitted, {len(held)} held out, "
                  f"{time.perf_counter() - t:.1f} s {problems}", flush=True)  # fmt: skip
    np.savez_compressed(out, **arrays)


def _half_normal_logpdf(x: np.ndarray, s: float) -> np.ndarray:
    return -0.5 * (x / s) ** 2 - np.log(s)


def _half_cauchy_logpdf(x: np.ndarray, s: float) -> np.ndarray:
    return -np.log1p((x / s) ** 2) - np.log(s)


FAMILIES = {"halfnormal": _half_normal_logpdf, "halfcauchy": _half_cauchy_logpdf}


def score(out: str, family: str = "halfnormal") -> None:
    logpdf_of = FAMILIES[family]
    z = np.load(out)
    labels = sorted({k.split("|")[0] for k in z.files})
    rows = []
    for level in GRID:
        for tilt in GRID:
            for label in labels:
                x = z[f"{label}|misfit_level"]
                lw = logpdf_of(x, level) - _half_normal_logpdf(x, REFERENCE)
                if f"{label}|misfit_tilt" in z.files:
                    x = z[f"{label}|misfit_tilt"]
                    lw += logpdf_of(x, tilt) - _half_normal_logpdf(x, REFERENCE)
                w = np.exp(lw - lw.max())
                w /= w.sum()
                ess = 1.0 / np.sum(w**2)
                logpdf = z[f"{label}|logpdf"]  # (draw, run)
                m = logpdf.max(axis=0)
                lpd = m + np.log(np.sum(w[:, None] * np.exp(logpdf - m), axis=0))
                reps, y = z[f"{label}|reps"], z[f"{label}|y"]  # (draw, rep, run)
                wr = np.repeat(w / reps.shape[1], reps.shape[1])
                flat = reps.reshape(-1, reps.shape[-1])
                inside = {}
                for p in (0.5, 0.9):
                    lo = [_wquantile(flat[:, j], wr, (1 - p) / 2) for j in range(len(y))]
                    hi = [_wquantile(flat[:, j], wr, (1 + p) / 2) for j in range(len(y))]
                    inside[p] = (np.asarray(lo) <= y) & (y <= np.asarray(hi))
                name = label.split("/")[0]
                rows.append({
                    "level": level, "tilt": tilt, "set": name,
                    "source": SOURCE.get(name, name), "label": label, "n": len(y),
                    "lpd": lpd.sum(), "in50": inside[0.5].sum(), "in90": inside[0.9].sum(),
                    "ess": ess,
                })  # fmt: skip
    table = pd.DataFrame(rows)
    ref_by_set = _reference_rows(z, labels)
    by_set = table.groupby(["level", "tilt", "set", "source"], as_index=False)[
        ["n", "lpd", "in50", "in90"]
    ].sum()
    by_set["lpd_per_run"] = by_set["lpd"] / by_set["n"]
    # each source weighs the same: the mean per-run density over its sets
    by_source = by_set.groupby(["level", "tilt", "source"], as_index=False)["lpd_per_run"].mean()
    sources = sorted(by_source["source"].unique())
    print(f"min importance ESS over splits and priors: {table['ess'].min():.0f}")
    chosen = {}
    for left in [*sources, None]:
        others = by_source[by_source["source"] != left]
        total = others.groupby(["level", "tilt"])["lpd_per_run"].sum()
        chosen[left] = total.idxmax()
        print(f"left out {left or 'none (the default)'}: level {chosen[left][0]}, "
              f"tilt {chosen[left][1]}")  # fmt: skip
    scored = []
    for name, part in by_set.groupby("set"):
        level, tilt = chosen[SOURCE.get(name, name)]
        row = part[(part["level"] == level) & (part["tilt"] == tilt)].iloc[0]
        ref = ref_by_set[name]
        scored.append({
            "set": name, "prior (level, tilt)": f"{level}, {tilt}",
            "coverage_50": row["in50"] / row["n"], "coverage_90": row["in90"] / row["n"],
            "lpd_per_run": row["lpd_per_run"],
            "HN(0.03) coverage_50": ref["in50"] / ref["n"],
            "HN(0.03) coverage_90": ref["in90"] / ref["n"],
            "HN(0.03) lpd_per_run": ref["lpd_per_run"],
        })  # fmt: skip
    result = pd.DataFrame(scored).set_index("set")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("\nEach set scored with the prior chosen without its source:")
        print(result.round(3).to_string())
        print("\nPooled, equal weight per set:")
        print(result[[c for c in result.columns if "coverage" in c]].mean().round(3).to_string())


def _reference_rows(z: Any, labels: list[str]) -> dict[str, dict[str, float]]:
    """Per set: runs, log density and coverage under today's HalfNormal(0.03) priors."""
    out: dict[str, dict[str, float]] = {}
    for label in labels:
        lw = 0.0
        for k in ("misfit_level", "misfit_tilt"):
            if f"{label}|{k}" in z.files:
                x = z[f"{label}|{k}"]
                lw = lw + _half_normal_logpdf(x, 0.03) - _half_normal_logpdf(x, REFERENCE)
        w = np.exp(lw - np.max(lw))
        w /= w.sum()
        logpdf, reps, y = z[f"{label}|logpdf"], z[f"{label}|reps"], z[f"{label}|y"]
        m = logpdf.max(axis=0)
        lpd = m + np.log(np.sum(w[:, None] * np.exp(logpdf - m), axis=0))
        wr = np.repeat(w / reps.shape[1], reps.shape[1])
        flat = reps.reshape(-1, reps.shape[-1])
        row = out.setdefault(label.split("/")[0], {"n": 0, "lpd": 0.0, "in50": 0, "in90": 0})
        row["n"] += len(y)
        row["lpd"] += lpd.sum()
        for p in (0.5, 0.9):
            lo = np.array([_wquantile(flat[:, j], wr, (1 - p) / 2) for j in range(len(y))])
            hi = np.array([_wquantile(flat[:, j], wr, (1 + p) / 2) for j in range(len(y))])
            row[f"in{int(p * 100)}"] += int(((lo <= y) & (y <= hi)).sum())
    for row in out.values():
        row["lpd_per_run"] = row["lpd"] / row["n"]
    return out


def _wquantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cw, q * cw[-1])])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("fit", "score"))
    parser.add_argument(
        "--data", default=os.environ.get("BAYESCALE_DATA", "../shared/data"), help="data folder"
    )
    parser.add_argument("--out", default="misfit_prior.npz", help="draws of the fits (npz)")
    parser.add_argument("--draws", type=int, default=1000, help="warm-up and draws per chain")
    parser.add_argument("--family", default="halfnormal", choices=sorted(FAMILIES))
    args = parser.parse_args()
    if args.what == "fit":
        fit_all(args.data, args.out, args.draws)
    else:
        score(args.out, args.family)


if __name__ == "__main__":
    main()

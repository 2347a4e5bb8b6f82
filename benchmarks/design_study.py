"""Does `bayescale.analysis.design` reach a target precision with fewer FLOPs than IsoFLOP levels?

Simulated ladders, each started from the same small IsoFLOP ladder (3 budgets from 6e18 to
6e19 FLOP, 5 model sizes each, 15 runs; noise: Student-t(4) with scale 0.01 on log loss). The
target is the expected loss at the truth's compute-optimal (N, D) for 100x the largest run's
compute (6e21 FLOP); the goal is a 90% interval half as wide as the starting fit's. Two ways
to add runs, each refitted (``bs.update``, 4 chains x 500 warm-up + 500 draws) after every
step until the goal is reached:

- ``isoflop``: the ladder continued, one IsoFLOP level at a time (budgets 10^0.5 apart: 1.9e20,
  6e20, 1.9e21, 6e21 FLOP; 5 sizes each, as the starting ladder), at most 4 levels;
- ``design``: each round, ``bs.design(fit, bs.design_grid(fit), target, batch=4,
  budget=STEP, rank="width")`` picks the most informative runs (greedily, up to 4) within a
  quarter of the first IsoFLOP level's FLOPs (2.4e20), at most 8 rounds. Two other policies
  were tried on the first ladders and dropped: ranking by gain per FLOP alone picks the
  cheapest runs at the bottom of the ladder round after round and did not reach the goal
  within 48 runs; "the cheapest run expected to reach the goal, else the most informative"
  picks the largest candidates and spent more than the IsoFLOP levels.

Truths: ``exact`` (Epoch's Chinchilla parameters, fitted with the exact law) and ``misfit``
(the exponents drift slowly with scale, alpha(N) = alpha - 0.005 (log10 N - 8) and beta(D) =
beta - 0.005 (log10 D - 10), fitted with ``misfit=True``). Per simulation it records the FLOPs
each strategy spent until the goal (inf if never), whether its final 90% interval covers the
true target, and, for every design round, the width the design predicted against the width
the refit obtained.

Error budget: with 20 simulations the coverage of a nominal 90% interval has a binomial sd of
0.067 (a coverage of 0.75 or more is consistent with 0.9 at the 2-sd level); the median FLOP
ratio's sampling spread is shown by its interquartile range.

Usage: python benchmarks/design_study.py [--sims 20] [--truth exact|misfit|both] [--out f.csv]
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

TRUTH = {"E": 1.817, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
START = np.geomspace(6e18, 6e19, 3)
LEVELS = 6e19 * 10 ** (0.5 * np.arange(1, 5))  # 1.9e20 .. 6e21
SIZES, SPREAD, NOISE = 5, 1.0, 0.01
TARGET_C = 100 * START[-1]
GOAL = 0.5  # goal width as a fraction of the starting width
DRIFT = {"exact": 0.0, "misfit": 0.005}
DRAWS = dict(num_warmup=500, num_samples=500, progress_bar=False)
BATCH, ROUNDS, STEP = 4, 8, 0.25 * SIZES * LEVELS[0]  # a quarter of the first level's FLOPs


def truth_loss(n, d, drift):
    """E + A / N^alpha(N) + B / D^beta(D), exponents drifting by ``drift`` per decade."""
    ln, ld = np.log10(n), np.log10(d)
    alpha = TRUTH["alpha"] - drift * (ln - 8.0)
    beta = TRUTH["beta"] - drift * (ld - 10.0)
    return TRUTH["E"] + TRUTH["A"] * n**-alpha + TRUTH["B"] * d**-beta


def target_point(drift):
    """The truth's compute-optimal (N, D) at TARGET_C, and its loss."""
    n = np.geomspace(1e8, 1e12, 20001)
    loss = truth_loss(n, TARGET_C / (6 * n), drift)
    i = int(np.argmin(loss))
    return float(n[i]), float(TARGET_C / (6 * n[i])), float(loss[i])


def ladder(budgets):
    from bayescale.model.simulation import isoflop_design

    return isoflop_design(np.asarray(budgets, float), SIZES, SPREAD)[["n_params", "n_tokens"]]


def observe(runs, drift, rng):
    out = runs[["n_params", "n_tokens"]].copy().reset_index(drop=True)
    mean = truth_loss(out["n_params"].to_numpy(), out["n_tokens"].to_numpy(), drift)
    out["loss"] = mean * np.exp(NOISE * rng.standard_t(4.0, len(out)))
    return out


def interval(fit, target, seed):
    from bayescale.analysis.design import target_draws

    value, _ = target_draws(fit, target, seed=seed)
    lo, hi = np.quantile(value, [0.05, 0.95])
    return float(lo), float(hi)


def simulate_one(seed: int, truth: str) -> dict:
    import bayescale as bs

    drift = DRIFT[truth]
    misfit = truth == "misfit"
    n_t, d_t, loss_t = target_point(drift)
    target = {"loss_at": {"n_params": n_t, "n_tokens": d_t}}
    rng = np.random.default_rng([seed, 1])
    start = observe(ladder(START), drift, rng)
    fit0 = bs.fit(start, misfit=misfit, seed=seed, **DRAWS)
    lo, hi = interval(fit0, target, seed)
    w0 = hi - lo
    goal = GOAL * w0
    rec = {"seed": seed, "truth": truth, "width0": w0, "covered0": lo < loss_t < hi}
    # IsoFLOP levels
    fit, spent, done = fit0, 0.0, False
    for k, c in enumerate(LEVELS):
        new = observe(ladder([c]), drift, rng)
        spent += float(6 * (new["n_params"] * new["n_tokens"]).sum())
        fit = bs.update(fit, new, seed=seed + 100 * k, **DRAWS)
        lo, hi = interval(fit, target, seed)
        if hi - lo <= goal:
            done = True
            break
    rec.update(iso_flops=spent if done else math.inf, iso_steps=k + 1, iso_width=hi - lo)
    rec["iso_covered"] = lo < loss_t < hi
    # design
    fit, spent, done, calib = fit0, 0.0, False, []
    for k in range(ROUNDS):
        d = bs.design(
            fit, bs.design_grid(fit), target, batch=BATCH, budget=STEP, rank="width", seed=seed + k
        )
        picks = d.batch
        new = observe(picks, drift, rng)
        spent += float(picks["cost"].sum())
        fit = bs.update(fit, new, seed=seed + 1000 + k, **DRAWS)
        lo, hi = interval(fit, target, seed)
        calib.append((float(picks["width"].iloc[-1]), hi - lo, float(picks["ess"].min())))
        if hi - lo <= goal:
            done = True
            break
    rec.update(design_flops=spent if done else math.inf, design_steps=k + 1, design_width=hi - lo)
    rec["design_covered"] = lo < loss_t < hi
    rec["design_max_compute"] = float(fit.data.column("n_params").max())
    rec["calib"] = calib
    return rec


def report(frame: pd.DataFrame) -> None:
    print(
        f"{'truth':7} {'sims':>4} {'iso reach':>9} {'des reach':>9} {'FLOP ratio med':>14} "
        f"{'IQR':>13} {'ratio<=0.5':>10} {'cover iso':>9} {'cover des':>9} "
        f"{'pred/actual med':>15} {'(IQR)':>13} {'first round':>11}"
    )
    for truth, g in frame.groupby("truth", sort=False):
        ratio = g["design_flops"] / g["iso_flops"]
        ratio = ratio.where(np.isfinite(g["iso_flops"]) | np.isfinite(g["design_flops"]))
        q = np.nanquantile(ratio.replace(np.inf, 1e9), [0.25, 0.5, 0.75])
        cal = [a / p for c in g["calib"] for p, a, _ in c]
        first = [c[0][1] / c[0][0] for c in g["calib"]]
        qc = np.quantile(cal, [0.25, 0.5, 0.75])
        print(
            f"{truth:7} {len(g):>4} {np.isfinite(g['iso_flops']).mean():>9.2f} "
            f"{np.isfinite(g['design_flops']).mean():>9.2f} {q[1]:>14.3f} "
            f"{q[0]:>6.3f}-{q[2]:<6.3f} {(ratio <= 0.5).mean():>10.2f} "
            f"{g['iso_covered'].mean():>9.2f} {g['design_covered'].mean():>9.2f} "
            f"{qc[1]:>15.3f} {qc[0]:>6.3f}-{qc[2]:<6.3f} {np.median(first):>11.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=20)
    parser.add_argument("--first", type=int, default=0, help="first seed")
    parser.add_argument("--truth", default="both", choices=("exact", "misfit", "both"))
    parser.add_argument("--out", default=None, help="CSV of per-simulation records")
    args = parser.parse_args()
    from bayescale.errors import ConvergenceWarning

    truths = ("exact", "misfit") if args.truth == "both" else (args.truth,)
    records, t0 = [], time.perf_counter()
    for truth in truths:
        for seed in range(args.first, args.first + args.sims):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                warnings.simplefilter("ignore", bs_extrapolation())
                records.append(simulate_one(seed, truth))
            r = records[-1]
            print(
                f"# {truth} seed {seed}: w0 {r['width0']:.4f} iso {r['iso_flops']:.3g} "
                f"({r['iso_steps']}) design {r['design_flops']:.3g} ({r['design_steps']}) "
                f"calib {[(round(p, 4), round(a, 4)) for p, a, _ in r['calib']]} "
                f"[{time.perf_counter() - t0:.0f} s]",
                flush=True,
            )
            if args.out:
                pd.DataFrame(records).to_csv(args.out, index=False)
    report(pd.DataFrame(records))
    load = os.getloadavg()
    print(
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {time.perf_counter() - t0:.0f} s"
    )


def bs_extrapolation():
    from bayescale.errors import ExtrapolationWarning

    return ExtrapolationWarning


if __name__ == "__main__":
    main()

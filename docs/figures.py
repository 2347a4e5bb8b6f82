"""Draw the figures of the explanation pages into ``docs/_static/``.

Run from the repository root after a change that moves them (a few minutes on a laptop)::

    python docs/figures.py            # every figure
    python docs/figures.py pooling    # only the named ones

The Epoch and 4-digit-addition figures read the reference data through
``bayescale.io.datasets.load_dataset`` (``../shared/data`` beside the checkout, or
``$BAYESCALE_DATA``); the others use simulated runs. Seeds are fixed, so a rerun on the same
versions redraws the same figures.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import bayescale as bs  # noqa: E402
from bayescale import plots  # noqa: E402
from bayescale.io.datasets import load_dataset  # noqa: E402

STATIC = Path(__file__).resolve().parent / "_static"
DRAWS = dict(num_warmup=1000, num_samples=1000, progress_bar=False)


def _save(fig: plt.Figure, name: str) -> None:
    fig.savefig(STATIC / f"{name}.png", dpi=110)
    plt.close(fig)
    print(f"wrote {STATIC / name}.png")


def _band(ax, x, q, colour, label):  # noqa: ANN001, ANN202
    ax.fill_between(x, q["q5"], q["q95"], color=colour, alpha=0.25, lw=0, label=f"{label}: 90%")
    ax.plot(x, q["q50"], color=colour, lw=1.5, label=f"{label}: median")


def extrapolation() -> None:
    """The forecast's interval widens with the distance beyond the runs."""
    runs = bs.simulate("chinchilla", seed=1)  # 72 runs, 6e18 to 3e21 FLOP
    fit = bs.fit(runs, "chinchilla", seed=0, **DRAWS)
    compute = np.geomspace(1e19, 1e25, 40)
    n = np.sqrt(compute / (6 * 20))  # 20 tokens per parameter
    at = {"n_params": n, "n_tokens": compute / (6 * n)}
    q = bs.forecast(fit, at, warn=False, seed=0).quantiles([0.05, 0.5, 0.95])
    law = bs.forecast(fit, at, kind="mean", warn=False, seed=0).quantiles([0.05, 0.5, 0.95])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    left.axvspan(compute[0], runs["compute"].max(), color="0.9", zorder=0, label="fitted runs")
    _band(left, compute, q, "C0", "a new run")
    left.set(xscale="log", xlabel="compute C (FLOP), 20 tokens per parameter", ylabel="loss")
    left.legend(fontsize=8, frameon=False)
    left.set_title("forecast along 20 tokens per parameter", fontsize=10)
    decades = np.log10(compute / runs["compute"].max())
    for table, name, colour in ((q, "a new run (law + noise)", "C0"), (law, "the law", "C1")):
        rel = (table["q95"] - table["q5"]) / table["q50"]
        right.plot(decades, 100 * rel, color=colour, label=name)
    right.axvline(0, color="0.5", ls=":")
    right.set(xlabel="decades of compute beyond the largest run", ylabel="90% width (% of median)")
    right.set_ylim(bottom=0)
    right.legend(fontsize=8, frameon=False)
    right.set_title("width of the 90% interval", fontsize=10)
    _save(fig, "extrapolation")


def misfit() -> None:
    """Epoch's top third held out: the exact law's intervals against the law with its misfit."""
    runs = load_dataset("chinchilla_epoch_240")
    cut = runs["compute"].quantile(2 / 3)
    train, held = runs[runs["compute"] <= cut], runs[runs["compute"] > cut]
    at = held[["n_params", "n_tokens"]]
    exact = bs.fit(train, "chinchilla", seed=1, **DRAWS)
    mf = bs.fit(train, "chinchilla", misfit=True, target_accept=0.95, seed=1, **DRAWS)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True, layout="constrained")
    r = np.log10(held["n_tokens"] / held["n_params"]).to_numpy()
    for ax, f, name in ((axes[0], exact, "exact law"), (axes[1], mf, "law + misfit")):
        q = bs.forecast(f, at, warn=False, seed=1).quantiles([0.05, 0.5, 0.95])
        obs = held["loss"].to_numpy()
        lo, hi = q["q5"].to_numpy() / obs - 1, q["q95"].to_numpy() / obs - 1
        inside = (lo <= 0) & (hi >= 0)
        order = np.argsort(r)
        ax.vlines(r[order], 100 * lo[order], 100 * hi[order], color="C0", alpha=0.5)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_title(
            f"{name}: 90% intervals cover {inside.mean():.0%} of {len(obs)} runs", fontsize=10
        )
        ax.set_xlabel("log10 tokens per parameter of the held-out run")
    axes[0].set_ylabel("interval relative to the observed loss (%)")
    _save(fig, "misfit")


def breaks() -> None:
    """4-digit addition: a power law and a broken power law fitted to the first 14 points."""
    data = load_dataset("bnsl_4digit")
    fit_rows, held = data[data["split"] == "fit"], data[data["split"] == "extrapolate"]
    steep = {"c1": bs.Prior("StudentT", df=3.0, loc=0.0, scale=1.0)}
    xy = fit_rows[["data_size", "loss"]]
    fits = {
        "power law": bs.fit(xy, "power_law", variable="data_size", seed=0, **DRAWS),
        # 2000 + 2000 draws: at 1000 + 1000 the broken law's chains disagreed (r_hat 1.03)
        "one break": bs.fit(
            xy,
            "broken_power_law",
            variable="data_size",
            priors=steep,
            seed=0,
            **{**DRAWS, "num_warmup": 2000, "num_samples": 2000},
        ),  # fmt: skip
    }
    x = np.geomspace(data["data_size"].min(), data["data_size"].max() * 1.5, 80)
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    for (name, f), colour in zip(fits.items(), ("C1", "C0"), strict=True):
        q = bs.forecast(f, {"data_size": x}, warn=False, seed=0).quantiles([0.05, 0.5, 0.95])
        _band(ax, x, q, colour, name)
    ax.scatter(fit_rows["data_size"], fit_rows["loss"], c="k", s=14, zorder=5, label="fitted")
    ax.scatter(held["data_size"], held["loss"], c="r", marker="x", s=30, zorder=5, label="held out")
    ax.set(xscale="log", yscale="log", xlabel="training examples", ylabel="test cross-entropy")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("4-digit addition (Caballero et al.): the drop after ~700 examples", fontsize=10)
    _save(fig, "breaks")


def pooling() -> None:
    """Six curves that share an exponent; one has five runs. Alone it cannot extrapolate."""
    rng = np.random.default_rng(5)
    frames = []
    for g in range(6):
        size = 5 if g == 0 else 8
        x = np.geomspace(1e6, 1e6 * 10 ** (1.0 if g == 0 else 2.5), size)
        truth = {
            "E": 1.5 + 0.2 * rng.standard_normal(),
            "A": 40.0 * np.exp(0.3 * rng.standard_normal()),
            "alpha": 0.3,
        }
        law = bs.get_law("power_law")
        loss = np.asarray(law(truth, n_params=x)) * np.exp(0.01 * rng.standard_t(4, size))
        frames.append(pd.DataFrame({"data_size": x, "loss": loss, "group": f"curve {g}"}))
    curves = pd.concat(frames, ignore_index=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True, layout="constrained")
    for ax, pool in zip(axes, ("none", "partial"), strict=True):
        f = bs.fit(
            curves, "power_law", variable="data_size", group="group", pooling=pool, seed=0,
            **DRAWS,
        )  # fmt: skip
        plots.plot_groups(
            f, groups=["curve 0", "curve 1"], ax=ax, population=False, x_range=(1e6, 1e9)
        )
        ax.set_title(f"pooling={pool!r}: curve 0 has 5 runs", fontsize=10)
    _save(fig, "pooling")


def compute_optimal() -> None:
    """N_opt and D_opt with their posterior spread, against the published allocations."""
    runs = bs.simulate("chinchilla", seed=1)
    fit = bs.fit(runs, "chinchilla", seed=0, **DRAWS)
    alloc = bs.compute_optimal(fit, np.geomspace(1e19, 1e25, 25), warn=False)
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    plots.plot_allocation(alloc, ax=ax)
    ax.set_title("compute-optimal model size, simulated Chinchilla ladder", fontsize=10)
    _save(fig, "compute_optimal")


def design() -> None:
    """Candidates in the (N, D) plane, coloured by the expected width after each."""
    from bayescale.model.simulation import isoflop_design

    ladder = bs.simulate(
        "chinchilla", design=isoflop_design(np.geomspace(6e18, 6e19, 3), 5), seed=3
    )
    fit = bs.fit(ladder, "chinchilla", seed=0, **DRAWS)
    target = {"loss_at": {"n_params": 2.2e9, "n_tokens": 4.5e11}}
    d = bs.design(fit, "grid", target, rank="width", batch=3, budget=9.5e20, seed=0)
    fig, ax = plt.subplots(figsize=(6.5, 4.5), layout="constrained")
    plots.plot_design(d, ax=ax)
    ax.set_title("candidates by expected gain per FLOP; the 3 picks by width", fontsize=10)
    _save(fig, "design")


FIGURES = {f.__name__: f for f in (extrapolation, misfit, breaks, pooling, compute_optimal, design)}

if __name__ == "__main__":
    for name in sys.argv[1:] or list(FIGURES):
        FIGURES[name]()

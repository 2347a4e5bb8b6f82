"""``bayescale demo``: the main job on an embedded synthetic ladder.

The ladder is simulated inside the package from Besiroglu et al.'s (2024) published fit of the
Chinchilla law, on an IsoFLOP design of nine budgets (6e18 to 3e21 FLOP) with eight model sizes
each, Student-t noise of scale 0.01 on log loss. It is labelled synthetic everywhere it appears.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["run", "demo_data"]

#: Chinchilla (70B parameters, 1.4T tokens) and the budget of Hoffmann et al.'s Gopher
TARGET = {"n_params": 7e10, "n_tokens": 1.4e12}
BUDGETS = (1e21, 1e22, 5.88e23, 1e24, 1e25)


def demo_data(seed: int = 0) -> pd.DataFrame:
    """The synthetic ladder of the demo (72 runs)."""
    from bayescale.testing import simulate

    return simulate("chinchilla", seed=seed)


def _table(frame: pd.DataFrame) -> str:
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        return frame.to_string(float_format=lambda x: f"{x:.4g}")


def run(out: Path, *, num_warmup: int = 1000, num_samples: int = 1000, seed: int = 0) -> int:
    """Fit, forecast and allocate on the synthetic ladder; print a report, write plots to ``out``.

    Returns
    -------
    int
        The exit status (0).
    """
    import bayescale as bs
    from bayescale.testing import TRUTHS

    runs = demo_data(seed)
    truth = TRUTHS["chinchilla"]
    print("bayescale demo -- SYNTHETIC DATA")
    print(
        f"{len(runs)} synthetic training runs simulated from Epoch's published Chinchilla fit\n"
        f"(E={truth['E']}, A={truth['A']}, B={truth['B']}, alpha={truth['alpha']}, "
        f"beta={truth['beta']}) on an IsoFLOP ladder: 9 budgets from 6e18 to 3e21 FLOP,\n"
        f"8 model sizes each ({runs.n_params.min():.2g} to {runs.n_params.max():.2g} params), "
        "Student-t noise (scale 0.01) on log loss.\n"
    )
    fit = bs.fit(runs, "chinchilla", num_warmup=num_warmup, num_samples=num_samples, seed=seed)
    print(repr(fit.priors))
    print()
    print(repr(fit))
    summary = fit.summary()
    truth_sigma = {**truth, "sigma": 0.01}  # the simulated noise scale on log loss
    summary.insert(0, "truth", [truth_sigma.get(k, np.nan) for k in summary.index])
    print("\nPosterior of L(N, D) = E + A / N^alpha + B / D^beta (90% intervals)")
    print(_table(summary))
    huber = bs.fit(runs, "chinchilla", method="huber")
    point = huber.summary()["mean"]
    print("\nThe literature's point fit (Huber, delta=1e-3, L-BFGS from Epoch's 4500-start grid):")
    print("  " + ", ".join(f"{k}={point[k]:.4g}" for k in point.index))
    out.mkdir(parents=True, exist_ok=True)
    written = _forecast_and_allocate(fit, out)
    print("\nPlots written to " + str(out.resolve()) + ":")
    for path in written:
        print(f"  {path.name}")
    return 0


def _forecast_and_allocate(fit: Any, out: Path) -> list[Path]:
    """Print the forecast and allocation sections of the report; return the plot files."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import bayescale as bs
    from bayescale import plots
    from bayescale.errors import ExtrapolationWarning

    at = pd.DataFrame([TARGET])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ExtrapolationWarning)
        target = bs.forecast(fit, at, seed=0)
    row = target.summary().iloc[0]
    print(
        f"\nForecast for N = {TARGET['n_params']:.3g} params, D = {TARGET['n_tokens']:.3g} tokens"
        f" (Chinchilla's size; {row['decades_beyond']:.2g} decades beyond the ladder):"
    )
    print(
        f"  predictive loss median {row['median']:.4f}, 90% interval [{row['q5']:.4f}, "
        f"{row['q95']:.4f}], relative width {row['rel_width']:.2%}"
    )
    for w in caught:
        print(f"  note: {w.message}")
    path = np.geomspace(float(fit.data.column("compute").min()), 1e25, 40)
    alloc_path = bs.compute_optimal(fit, path)
    med = alloc_path.summary()
    grid = pd.DataFrame({"n_params": med["n_params_median"], "n_tokens": med["n_tokens_median"]})
    fan = bs.forecast(fit, grid, seed=0, warn=False)
    horizon = bs.extrapolation_horizon(fit, tolerance=0.05)
    print(
        f"  the 90% predictive interval stays narrower than 5% of the median up to "
        f"C = {horizon.compute:.3g} FLOP along the compute-optimal path"
    )
    alloc = bs.compute_optimal(fit, list(BUDGETS))
    table = alloc.summary()
    readable = pd.DataFrame({"compute (FLOP)": [f"{c:.3g}" for c in table["compute"]]})
    for name, label in (
        ("n_params", "N_opt"),
        ("n_tokens", "D_opt"),
        ("tokens_per_param", "tokens/param"),
        ("loss", "loss at optimum"),
    ):
        readable[label] = [
            f"{m:.3g} [{lo:.3g}, {hi:.3g}]"
            for m, lo, hi in zip(
                table[f"{name}_median"], table[f"{name}_q5"], table[f"{name}_q95"], strict=True
            )
        ]
    print("\nCompute-optimal allocation (posterior median [90% interval] per budget):")
    print(readable.to_string(index=False))
    ex = alloc.exponents_summary()
    print(
        f"  N_opt ~ C^a with a = {ex.loc['a', 'median']:.3f} [{ex.loc['a', 'q5']:.3f}, "
        f"{ex.loc['a', 'q95']:.3f}]; D_opt ~ C^b with b = {ex.loc['b', 'median']:.3f}"
    )
    written = []
    for name, draw in (
        ("fit.png", lambda ax: plots.plot_fit(fit, ax=ax)),
        ("forecast.png", lambda ax: plots.plot_forecast(fan, x="compute", ax=ax, fit=fit)),
        ("allocation.png", lambda ax: plots.plot_allocation(alloc_path, ax=ax)),
    ):
        fig, ax = plt.subplots(figsize=(7, 5))
        draw(ax)
        ax.set_title(f"{ax.get_title()} (synthetic ladder)", fontsize=10)
        written.append(_save(fig, out / name))
    return written


def _save(fig: Any, path: Path) -> Path:
    import os
    import tempfile

    import matplotlib.pyplot as plt

    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        plt.close(fig)
    return path

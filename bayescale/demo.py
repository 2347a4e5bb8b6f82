"""``bayescale demo``: the main job on an embedded synthetic ladder.

The ladder is simulated inside the package from Besiroglu et al.'s (2024) published fit of the
Chinchilla law, on an IsoFLOP design of nine budgets (6e18 to 3e21 FLOP) with eight model sizes
each, Student-t noise of scale 0.01 on log loss. It is labelled synthetic everywhere it appears.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayescale.files import atomic_write

__all__ = ["BUDGETS", "Demo", "TARGET", "demo_data", "run", "save_figure"]

#: Chinchilla (70B parameters, 1.4T tokens) and the budget of Hoffmann et al.'s Gopher
TARGET = {"n_params": 7e10, "n_tokens": 1.4e12}
BUDGETS = (1e21, 1e22, 5.88e23, 1e24, 1e25)


def demo_data(seed: int = 0) -> pd.DataFrame:
    """The synthetic ladder of the demo (72 runs)."""
    from bayescale.model.simulation import simulate

    return simulate("chinchilla", seed=seed)


@dataclass(frozen=True)
class Demo:
    """What the demo computed (the CLI prints it; the library never prints).

    Attributes
    ----------
    runs : DataFrame
        The synthetic ladder.
    fit, huber : Fit
        The default NUTS fit and the literature's Huber point fit.
    target : pandas.Series
        The forecast summary at `TARGET` (Chinchilla's size).
    notes : list of str
        The forecast's extrapolation warnings, as text.
    horizon : Horizon
        The extrapolation horizon at 5% relative width.
    allocation : Allocation
        Compute-optimal allocations at `BUDGETS`.
    plots : list of Path
        The plot files written.
    """

    runs: pd.DataFrame
    fit: Any
    huber: Any
    target: pd.Series
    notes: list[str]
    horizon: Any
    allocation: Any
    plots: list[Path]


def run(
    out: Path,
    *,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    num_chains: int = 4,
    seed: int = 0,
    progress_bar: bool | None = None,
) -> Demo:
    """Fit, forecast and allocate on the synthetic ladder; write the plots to ``out``."""
    import bayescale as bs

    runs = demo_data(seed)
    fit = bs.fit(
        runs,
        "chinchilla",
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        seed=seed,
        progress_bar=progress_bar,
    )
    huber = bs.fit(runs, "chinchilla", method="huber")
    out.mkdir(parents=True, exist_ok=True)
    return _forecast_and_allocate(runs, fit, huber, out)


def _forecast_and_allocate(runs: pd.DataFrame, fit: Any, huber: Any, out: Path) -> Demo:
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
    path = np.geomspace(float(fit.data.column("compute").min()), 1e25, 40)
    alloc_path = bs.compute_optimal(fit, path)
    med = alloc_path.summary()
    grid = pd.DataFrame({"n_params": med["n_params_median"], "n_tokens": med["n_tokens_median"]})
    fan = bs.forecast(fit, grid, seed=0, warn=False)
    horizon = bs.extrapolation_horizon(fit, tolerance=0.05)
    alloc = bs.compute_optimal(fit, list(BUDGETS))
    written = []
    for name, draw in (
        ("fit.png", lambda ax: plots.plot_fit(fit, ax=ax)),
        ("forecast.png", lambda ax: plots.plot_forecast(fan, x="compute", ax=ax, fit=fit)),
        ("allocation.png", lambda ax: plots.plot_allocation(alloc_path, ax=ax)),
    ):
        fig, ax = plt.subplots(figsize=(7, 5))
        draw(ax)
        ax.set_title(f"{ax.get_title()} (synthetic ladder)", fontsize=10)
        written.append(save_figure(fig, out / name))
    notes = [str(w.message) for w in caught]
    return Demo(runs, fit, huber, target.summary().iloc[0], notes, horizon, alloc, written)


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically (temporary file, then rename) and close it."""
    import matplotlib.pyplot as plt

    try:
        atomic_write(
            path,
            lambda handle: fig.savefig(handle, format="png", dpi=120, bbox_inches="tight"),
            suffix=".png",
        )
    finally:
        plt.close(fig)
    return path

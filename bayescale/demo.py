"""``bayescale demo``: the main job on an embedded synthetic ladder.

The ladder is simulated inside the package from Besiroglu et al.'s (2024) published fit of the
Chinchilla law, on an IsoFLOP design of nine budgets (6e18 to 3e21 FLOP) with eight model sizes
each, Student-t noise of scale 0.01 on log loss. It is labelled synthetic everywhere it appears.
"""

from __future__ import annotations

from pathlib import Path

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
    summary.insert(0, "truth", [truth.get(k, np.nan) for k in summary.index])
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


def _forecast_and_allocate(fit: object, out: Path) -> list[Path]:
    """Forecast and allocation sections of the report; returns the plot files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import bayescale as bs
    from bayescale import plots

    written = []
    fig, ax = plt.subplots(figsize=(7, 5))
    plots.plot_fit(fit, ax=ax)
    ax.set_title("Synthetic ladder and posterior fit (50/90% bands)")
    written.append(_save(fig, out / "fit.png"))
    del bs
    return written


def _save(fig: object, path: Path) -> Path:
    import os
    import tempfile

    import matplotlib.pyplot as plt

    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")  # type: ignore[attr-defined]
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        plt.close(fig)  # type: ignore[arg-type]
    return path

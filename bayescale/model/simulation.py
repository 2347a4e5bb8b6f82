"""Simulated training-run ladders from known parameters, for tests, demos and calibration.

`simulate` draws ``log L = log f(x; truth) + noise`` on a realistic design: an IsoFLOP ladder
like Hoffmann et al.'s (nine compute budgets from 6e18 to 3e21 FLOP, eight model sizes around
each budget's optimum) for laws of N and D, and a log-spaced sweep for one-variable laws.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from bayescale import options as opt
from bayescale import streams
from bayescale.errors import OptionError
from bayescale.model.laws import Law, get_law
from bayescale.model.likelihoods import get_likelihood

__all__ = ["TRUTHS", "isoflop_design", "simulate", "sweep_design"]

#: published (or representative) parameters per law, used as the default truth
TRUTHS: dict[str, dict[str, float]] = {
    # Besiroglu et al. 2024 (Epoch's refit of Hoffmann et al. 2022)
    "chinchilla": {"E": 1.817, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658},
    # a Kaplan-form law with an exponent ratio and scales of the order of Kaplan et al. 2020
    "kaplan": {"alpha_N": 0.076, "alpha_D": 0.095, "N_c": 8.8e13, "D_c": 5.4e13},
    # Muennighoff et al. 2023, published constants (from their logs a, b, e)
    "data_constrained": {
        "E": float(np.exp(0.6254804)),
        "A": float(np.exp(6.255414)),
        "B": float(np.exp(7.3049974)),
        "alpha": 0.3526596,
        "beta": 0.3526596,
        "R_D": 15.387756,
        "R_N": 5.309743,
    },
    "power_law": {"E": 1.8, "A": 480.0, "alpha": 0.35},
    # a BNSL-like curve: slow decay, then a steeper one after a break near x = 3e3
    "broken_power_law": {"E": 0.4, "b": 3.0, "c0": 0.1, "c1": 0.6, "d1": 3e3, "f1": 0.3},
    "m4": {"eps_inf": 0.05, "eps_0": 0.9, "alpha": 0.5, "beta": 2000.0, "c": 0.6},
}


def isoflop_design(
    budgets: np.ndarray | None = None, sizes_per_budget: int = 8, spread: float = 1.2
) -> pd.DataFrame:
    """An IsoFLOP ladder: for each budget C, model sizes log-spaced around C's optimum.

    Parameters
    ----------
    budgets : array, optional
        Compute budgets in FLOP; default nine from 6e18 to 3e21.
    sizes_per_budget : int, default 8
        Model sizes per budget.
    spread : float, default 1.2
        Half-width of the size range in decades around N_opt(C) = 0.1 * C^0.5 (about 20
        tokens per parameter).
    """
    if budgets is None:
        budgets = np.geomspace(6e18, 3e21, 9)
    rows = []
    for c in np.asarray(budgets, float):
        n_opt = np.sqrt(c / 6.0 / 20.0)
        for n in np.geomspace(n_opt / 10**spread, n_opt * 10**spread, sizes_per_budget):
            rows.append({"n_params": n, "n_tokens": c / (6.0 * n), "compute": c})
    return pd.DataFrame(rows)


def sweep_design(variable: str, low: float, high: float, n: int = 30) -> pd.DataFrame:
    """``n`` log-spaced values of one variable between ``low`` and ``high``."""
    return pd.DataFrame({variable: np.geomspace(low, high, n)})


def _default_design(law: Law) -> pd.DataFrame:
    if law.name == "data_constrained":
        rows = []
        for u in (1e9, 4e9, 16e9):
            for n in (1e8, 4e8, 1.6e9, 6.4e9):
                for epochs in (1, 2, 4, 8, 16, 32, 60):
                    rows.append({"n_params": n, "unique_tokens": u, "n_tokens": u * epochs})
        frame = pd.DataFrame(rows)
        frame["compute"] = 6.0 * frame["n_params"] * frame["n_tokens"]
        return frame
    if set(law.variables) == {"n_params", "n_tokens"}:
        return isoflop_design()
    (variable,) = law.variables
    if law.name == "broken_power_law":
        return sweep_design(variable, 1e2, 1e5, 40)
    if law.name == "m4":
        return sweep_design(variable, 1e3, 1e8, 30)
    return sweep_design(variable, 1e7, 1e10, 30)


def simulate(
    law: str | Law = "chinchilla",
    truth: Mapping[str, float] | None = None,
    design: pd.DataFrame | None = None,
    *,
    noise: float = 0.01,
    likelihood: str = "student_t",
    nu: float = 4.0,
    seed: int = 0,
    variable: str | None = None,
) -> pd.DataFrame:
    """Simulate training runs from a law with known parameters.

    Parameters
    ----------
    law : str or Law, default "chinchilla"
        The law to simulate from.
    truth : mapping, optional
        Parameter values (papers' units); default `TRUTHS` for the law.
    design : DataFrame, optional
        Inputs of the runs (canonical columns); default a realistic ladder for the law.
    noise : float, default 0.01
        Scale of the noise on log loss.
    likelihood : str, default "student_t"
        Noise distribution, a name in `bayescale.model.likelihoods.LIKELIHOODS`. The default
        simulates a ladder in which every run trained; ``"contaminated_t"`` (the fits' default
        model) adds its fraction of failed runs.
    nu : float, default 4
        Degrees of freedom of the Student-t noise.
    seed : int, default 0
        Seed of the noise.
    variable : str, optional
        Scaling variable of one-variable laws.

    Returns
    -------
    DataFrame
        The design with a ``loss`` column (and ``loss_mean``, the noiseless law).

    Examples
    --------
    >>> simulate("chinchilla", seed=0).shape
    (72, 5)
    """
    law_ = get_law(law, variable=variable)
    params = dict(TRUTHS.get(law_.name, {}) if truth is None else truth)
    missing = set(law_.param_names) - set(params)
    if missing:
        raise OptionError(
            f"truth for law {law_.name!r} lacks {sorted(missing)}; it needs "
            f"{list(law_.param_names)}."
        )
    frame = (_default_design(law_) if design is None else design).copy()
    if law_.variables == ("data_size",) and "data_size" not in frame and design is None:
        frame = frame.rename(columns={frame.columns[0]: "data_size"})
    rng = streams.rng(opt.seed(seed), "simulate")
    inputs = {v: frame[v].to_numpy(float) for v in law_.variables}
    mean = np.asarray(law_(params, **inputs), dtype=np.float64)
    eps = get_likelihood(likelihood, nu=nu).sample_observed(rng, mean.shape, noise)
    frame["loss_mean"] = mean
    frame["loss"] = mean * np.exp(noise * eps)
    return frame

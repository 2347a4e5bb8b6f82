"""Stacking: weights of several laws' predictive distributions, and draws from the mixture.

`stacking_weights` finds the weights that maximise the log score of the weighted mixture of
held-out predictive densities (Yao et al. 2018); `stack` takes them from
`bayescale.analysis.compare`
(LOO or leave-future-out) and keeps them with the fits; `stacked_predictive` draws from the
combination.

References
----------
Yao, Vehtari, Simpson and Gelman (2018), "Using stacking to average Bayesian predictive
distributions", Bayesian Analysis 13(3), doi:10.1214/17-BA1091.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayescale import options as opt
from bayescale import streams
from bayescale.analysis.common import stacking_weights
from bayescale.analysis.compare import compare
from bayescale.analysis.forecast import Forecast
from bayescale.analysis.predict import posterior_draws, predictive
from bayescale.errors import OptionError
from bayescale.inference.fit import Fit
from bayescale.io.data import ScalingData, read_points

__all__ = ["Stack", "stack", "stacked_predictive", "stacking_weights"]


@dataclass(frozen=True)
class Stack:
    """Fits of several laws with stacking weights: a weighted predictive combination.

    Attributes
    ----------
    fits : mapping of str to Fit
        The fits, by name.
    weights : mapping of str to float
        Non-negative weights summing to 1, one per fit.
    method : str
        How the weights were found (``"loo"``, ``"lfo"``, or ``"user"``).
    """

    fits: Mapping[str, Fit]
    weights: Mapping[str, float]
    method: str = "user"

    def __post_init__(self) -> None:
        if set(self.fits) != set(self.weights):
            raise OptionError(
                f"weights must name the same fits; fits are {sorted(self.fits)}, weights name "
                f"{sorted(self.weights)}."
            )
        w = np.array([float(self.weights[k]) for k in self.fits])
        if np.any(~np.isfinite(w)) or np.any(w < 0) or abs(w.sum() - 1.0) > 1e-6:
            raise OptionError(
                f"weights must be non-negative and sum to 1; received {dict(self.weights)}. "
                "Normalise them, or build the stack with bayescale.stack(fits)."
            )

    def summary(self) -> pd.DataFrame:
        """One row per fit: its law and weight."""
        rows = {
            k: {"law": f.law.name, "weight": float(self.weights[k])} for k, f in self.fits.items()
        }
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index.name = "fit"
        return table

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={float(w):.3f}" for k, w in self.weights.items())
        return f"Stack(method={self.method!r}, weights: {parts})"

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(repr(self))}</pre>" + self.summary().to_html()


def stack(fits: Mapping[str, Fit], *, method: str = "loo", **options: Any) -> Stack:
    """Stacking weights of fits to the same runs, kept with the fits.

    Parameters
    ----------
    fits : mapping of str to Fit
        Two or more fits to the same runs.
    method : {"loo", "lfo"}, default "loo"
        The held-out densities the weights maximise (see `compare`); ``"lfo"`` weights laws by
        how well they extrapolate.
    **options
        Passed to `compare` (``cutoffs``, ``max_refits``, ``seed``, ...).

    Returns
    -------
    Stack
        Draw from the combination with `stacked_predictive`.
    """
    table = compare(fits, method=method, **options)
    weights = {k: float(table.loc[k, "weight"]) for k in fits}
    total = sum(weights.values())
    return Stack(dict(fits), {k: v / total for k, v in weights.items()}, method)


def stacked_predictive(
    stack: Stack,
    at: pd.DataFrame | Mapping[str, Any],
    *,
    kind: str = "predictive",
    num_draws: int | None = None,
    seed: int = 0,
) -> Forecast:
    """Draws of the loss at new inputs from the weighted combination of the stacked fits.

    Parameters
    ----------
    stack : Stack
        The fits and their weights.
    at : DataFrame or mapping
        Inputs (canonical columns) of every law in the stack, one row per point; ``n_tokens``
        is derived as C / (6 N) from ``compute`` and ``n_params`` when absent.
    kind : {"predictive", "mean"}, default "predictive"
        ``"predictive"``: a new run's loss (law and noise); ``"mean"``: the law's loss.
    num_draws : int, optional
        Number of draws; default the largest number of posterior draws of a fit.
    seed : int, default 0
        Seed of the choice of draws and of the noise.

    Returns
    -------
    Forecast
        As `bayescale.forecast` gives: its ``draws`` hold the loss of the requested kind over
        ``chain`` (1), ``draw`` and ``point``, and ``summary()`` the intervals per point. The
        tree's ``predictions`` group also holds ``loss_mean`` (the law's loss of the same
        draws) and ``model`` (the fit each draw comes from, over ``chain, draw``); the weights
        are in its ``attrs``. The same ``seed`` picks the same posterior draws for either kind.

    Notes
    -----
    The stacked predictive density is ``sum_k w_k p_k(y | x)``. Fit ``k`` contributes
    ``round(w_k S)`` of the ``S`` draws (largest remainders, so the counts sum to ``S``),
    each a posterior draw of that fit chosen at random (with replacement only when the fit
    has fewer draws than its share), in random order.
    """
    import xarray as xr

    if kind not in ("predictive", "mean"):
        raise OptionError(f"unknown kind {kind!r}. Available: predictive, mean.")
    seed = opt.seed(seed)
    if num_draws is not None:
        num_draws = opt.count(num_draws, "num_draws")
    points = _points(at, stack.fits.values())
    names = list(stack.fits)
    draws = {k: posterior_draws(stack.fits[k]) for k in names}
    total = int(num_draws or max(len(d["sigma"]) for d in draws.values()))
    counts = _largest_remainder(np.array([stack.weights[k] for k in names]), total)
    pick = streams.rng(seed, "stack_pick")  # which draws: the same for both kinds
    noise = streams.rng(seed, "stack_noise")
    means, preds, labels = [], [], []
    for name, count in zip(names, counts, strict=True):
        if count == 0:
            continue
        fit, d = stack.fits[name], draws[name]
        n = len(d["sigma"])
        idx = pick.choice(n, size=count, replace=count > n)
        pred = predictive(
            fit,
            points,
            rng=streams.rng(seed, "check_misfit"),
            draws={k: v[idx] for k, v in d.items()},
        )
        means.append(pred.loc)
        if kind == "predictive":
            preds.append(pred.sample(noise))
        labels += [name] * count
    order = pick.permutation(total)
    log_mean = np.concatenate(means, axis=0)[order]
    dims = ("chain", "draw", "point")
    predictions = {"loss_mean": (dims, np.exp(log_mean)[None])}
    if preds:
        predictions["loss"] = (dims, np.exp(np.concatenate(preds, axis=0)[order])[None])
    predictions["model"] = (("chain", "draw"), np.asarray(labels, dtype=str)[order][None])
    frame = points.table.drop(columns="loss")
    frame.index.name = "point"
    inputs = {v for f in stack.fits.values() for v in f.law.variables} | {"compute"}
    const = {c: ("point", frame[c].to_numpy(np.float64)) for c in frame.columns if c in inputs}
    coords = {"chain": [0], "draw": np.arange(total), "point": np.arange(len(frame))}
    tree = xr.DataTree.from_dict(
        {
            "predictions": xr.Dataset(predictions, coords=coords),
            "predictions_constant_data": xr.Dataset(const, coords={"point": coords["point"]}),
        }
    )
    weights = {k: float(stack.weights[k]) for k in names}
    tree.attrs.update(
        law=" + ".join(f"{w:.2g} {k}" for k, w in weights.items()),
        kind=kind,
        seed=seed,
        method="stacking",
        weights=json.dumps(weights),
        stacking_method=stack.method,
        observed_range=json.dumps(_observed_range(stack.fits.values(), frame)),
    )
    return Forecast(tree, frame, kind)


def _observed_range(fits: Any, points: pd.DataFrame) -> dict[str, list[float]]:
    """Variable -> [min, max] over the runs of every stacked fit (the inputs the points have)."""
    out: dict[str, list[float]] = {}
    for fit in fits:
        table = fit.data.table
        for name in (*fit.law.variables, "compute"):
            if name in table and name in points:
                values = table[name].to_numpy(dtype=np.float64)
                lo, hi = out.get(name, [np.inf, -np.inf])
                out[name] = [min(lo, float(values.min())), max(hi, float(values.max()))]
    return out


def _points(at: pd.DataFrame | Mapping[str, Any], fits: Any) -> ScalingData:
    variables = dict.fromkeys(v for f in fits for v in f.law.variables)
    frame = read_points(at, tuple(variables))
    frame["loss"] = 1.0  # a placeholder: only the inputs are used
    return ScalingData(frame, "points")


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    raw = weights / weights.sum() * total
    counts = np.floor(raw).astype(int)
    short = total - counts.sum()
    counts[np.argsort(-(raw - counts))[:short]] += 1
    return counts

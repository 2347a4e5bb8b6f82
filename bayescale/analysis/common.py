"""Helpers shared by the verbs (forecast, allocate, checks, compare, stacking, breaks).

Internal: not part of the public API (not re-exported by ``bayescale``), but each function has a
documented contract, and verbs import these instead of each other's private names. It sits just
above `bayescale.inference.fit` in the layers.

Shapes: posterior draws flattened over chains are ``(draw,)``; law means are ``(draw, run)``;
noise scales ``(draw, 1)``; everything float64 unless stated.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bayescale import options as opt
from bayescale.errors import (
    ExtrapolationWarning,
    FitError,
    OptionError,
    find_stack_level,
)
from bayescale.inference.diagnostics import interval_probs
from bayescale.inference.fit import Fit, group_fit
from bayescale.model.likelihoods import Likelihood, get_likelihood

__all__ = [
    "NEWTON_STEPS",
    "decades_outside",
    "group_of",
    "warn_extrapolation",
    "interval_probs",
    "logmeanexp",
    "mixture_quantiles",
    "posterior_params",
    "predictive_moments",
    "quantile_name",
    "require_draws",
    "quietly",
    "spread_draws",
    "stacking_weights",
    "split_over_devices",
    "validate_levels",
]

#: most safeguarded Newton steps per mixture quantile (5-8 are typical)
NEWTON_STEPS = 40


def posterior_params(fit: Fit) -> dict[str, np.ndarray]:
    """The law's parameters as float64 arrays of shape ``(chain, draw)``."""
    post = fit.posterior
    return {name: np.asarray(post[name].values, dtype=np.float64) for name in fit.law.param_names}


def require_draws(fit: Fit, verb: str) -> dict[str, np.ndarray]:
    """``fit.draws()``, or a `FitError` when the fit has no posterior draws with a noise scale."""
    draws = fit.draws()
    if "sigma" not in draws or len(draws["sigma"]) < 2:
        raise FitError(
            f"{verb} needs posterior draws with a noise scale; the fit has method="
            f"{fit.method!r}. Fit with method='nuts' (or 'map')."
        )
    return draws


def spread_draws(draws: Mapping[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """``k`` draws spread evenly over the flattened posterior (one starting point per chain)."""
    n = len(next(iter(draws.values())))
    idx = np.linspace(0, n - 1, k).round().astype(int)
    return {name: np.asarray(v, np.float64)[idx] for name, v in draws.items()}


def validate_levels(levels: Sequence[float], verdict_level: float) -> tuple[float, ...]:
    """Sorted, distinct interval levels, each strictly inside (0, 1), and the verdict level's."""
    out = opt.probabilities(levels, "levels", example="(0.5, 0.9, 0.99)")
    opt.probability(verdict_level, "verdict_level")
    return out


def quantile_name(p: float) -> str:
    """Column name of the quantile at probability ``p``: ``0.05 -> "q5"``."""
    return f"q{p * 100:.10g}"


def logmeanexp(a: np.ndarray, axis: int) -> np.ndarray:
    """``log(mean(exp(a)))`` along ``axis``, stably."""
    from scipy.special import logsumexp

    return logsumexp(a, axis=axis) - math.log(a.shape[axis])


def predictive_moments(
    mu: np.ndarray, sigma: np.ndarray, noise: Likelihood
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd ``(run,)`` of the predictive mixture of log loss (sd NaN without variance)."""
    mean = mu.mean(axis=0)
    var = noise.variance()
    if not math.isfinite(var):  # nu <= 2: the predictive variance is infinite
        return mean, np.full_like(mean, np.nan)
    return mean, np.sqrt(mu.var(axis=0) + float(np.mean(sigma**2)) * var)


def mixture_quantiles(
    mu: np.ndarray, sigma: np.ndarray, noise: Likelihood, probs: np.ndarray
) -> np.ndarray:
    """Quantiles ``(prob, run)`` of the mixture over draws: safeguarded Newton on its CDF.

    Each component's quantile brackets the mixture's; Newton steps that leave the bracket are
    replaced by bisection, and the bracket shrinks at every step, so the iteration converges.
    """
    zq = noise.ppf(probs)[:, None]  # (prob, 1)
    comp = (mu.min(axis=0)[None] + sigma.min() * zq, mu.max(axis=0)[None] + sigma.max() * zq)
    lo, hi = np.minimum(*comp), np.maximum(*comp)
    mean, sd = predictive_moments(mu, sigma, get_likelihood("normal"))
    q = np.clip(mean[None] + sd[None] * zq, lo, hi)
    target = probs[:, None]
    for _step in range(NEWTON_STEPS):
        z = (q[:, None, :] - mu[None]) / sigma[None]  # (prob, draw, run)
        err = np.mean(noise.cdf(z), axis=1) - target
        dens = np.mean(noise.pdf(z) / sigma[None], axis=1)
        lo, hi = np.where(err < 0, q, lo), np.where(err < 0, hi, q)
        done = np.abs(err) < 1e-12
        if done.all():
            break
        step = q - err / np.maximum(dens, 1e-300)
        inside = (step >= lo) & (step <= hi)
        q = np.where(done, q, np.where(inside, step, 0.5 * (lo + hi)))
    return q


def split_over_devices(
    fn: Any, split: tuple[Any, ...], shared: tuple[Any, ...], n_items: int, min_items: int
) -> Any:
    """Run ``fn(*split, *shared)`` with ``split`` cut along its first axis over host devices.

    JAX runs one CPU computation on one core; with several host devices (``XLA_FLAGS=
    --xla_force_host_platform_device_count=<n>``, as the CLI and the tests set) the draws are
    cut into one chunk per device, up to the number of cores, and the chunks run in parallel.
    Below ``min_items`` draws per chunk, or with one device, it is one call. The outputs
    (a pytree of arrays over the draws) come back as NumPy arrays.
    """
    import os

    import jax

    devices = jax.local_devices()
    n_chunks = max(1, min(len(devices), os.cpu_count() or 1, n_items // max(min_items, 1)))
    if n_chunks == 1:
        return jax.tree.map(np.asarray, fn(*split, *shared))
    bounds = np.linspace(0, n_items, n_chunks + 1).astype(int)
    pending = []
    for device, start, stop in zip(devices, bounds[:-1], bounds[1:], strict=False):
        part = jax.tree.map(lambda a, start=start, stop=stop: a[start:stop], split)
        on_device, shared_on_device = jax.device_put((part, shared), device)
        pending.append(fn(*on_device, *shared_on_device))
    return jax.tree.map(lambda *parts: np.concatenate([np.asarray(p) for p in parts]), *pending)


def stacking_weights(lpd: np.ndarray) -> np.ndarray:
    """Stacking weights of models from their pointwise log predictive densities.

    Parameters
    ----------
    lpd : array of shape (n_runs, n_models)
        Held-out log predictive density of each run under each model (LOO or LFO).

    Returns
    -------
    ndarray of shape (n_models,)
        Non-negative weights summing to 1 that maximise ``sum_i log sum_k w_k exp(lpd_ik)``
        (Yao et al. 2018), the log score of the weighted predictive mixture.

    Examples
    --------
    >>> import numpy as np
    >>> lpd = np.array([[0.0, -3.0], [-3.0, 0.0], [0.0, -3.0]])  # each model wins some runs
    >>> stacking_weights(lpd).round(2).tolist()  # the optimum is (2 - e^-3) / (3 - 3 e^-3)
    [0.68, 0.32]
    """
    import scipy.optimize

    lpd = np.asarray(lpd, dtype=np.float64)
    if lpd.ndim != 2 or lpd.shape[1] < 1 or not np.all(np.isfinite(lpd)):
        raise OptionError(
            f"lpd must be a finite array of shape (n_runs, n_models); received shape {lpd.shape}."
        )
    k = lpd.shape[1]
    if k == 1:
        return np.ones(1)
    dens = np.exp(lpd - lpd.max(axis=1, keepdims=True))

    def score(w: np.ndarray) -> tuple[float, np.ndarray]:
        mix = dens @ w
        return -float(np.sum(np.log(mix))), -np.sum(dens / mix[:, None], axis=0)

    res = scipy.optimize.minimize(
        score,
        np.full(k, 1.0 / k),
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * k,
        constraints={"type": "eq", "fun": lambda w: np.sum(w) - 1.0},
    )
    w = np.clip(res.x, 0.0, None)
    return w / w.sum()


def quietly(compute: Any) -> Any:
    """Run ``compute()`` without RuntimeWarnings (constant chains give NaN diagnostics)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant chains give NaN, not noise
        return compute()


def decades_outside(
    points: pd.DataFrame, observed: Mapping[str, tuple[float, float]]
) -> pd.DataFrame:
    """Signed decades outside ``observed`` (variable -> (min, max)) per point and variable.

    Positive above the largest observed value, negative below the smallest, 0 inside.
    """
    out = {}
    for name, (low, high) in observed.items():
        x = np.log10(points[name].to_numpy(dtype=np.float64))
        above = x - np.log10(high)
        below = x - np.log10(low)
        out[name] = np.where(above > 0, above, np.where(below < 0, below, 0.0))
    table = pd.DataFrame(out, index=points.index)
    table.index.name = "point"
    return table


def warn_extrapolation(
    points: pd.DataFrame,
    observed: Mapping[str, tuple[float, float]],
    verb: str,
    hint: str,
    unit: str = "point",
) -> None:
    """One `ExtrapolationWarning` naming, per variable, the ``unit``s outside ``observed``.

    The rule of `bayescale.analysis.forecast.forecast` and
    `bayescale.analysis.allocate.compute_optimal`: any
    point outside the observed [min, max] of a variable, in signed decades.
    """
    table = decades_outside(points, observed)
    parts = []
    for name in table.columns:
        d = table[name].to_numpy()
        out = np.flatnonzero(d != 0)
        if not out.size:
            continue
        low, high = observed[name]
        head = f"{name} (observed {low:.3g} to {high:.3g}): "
        if out.size <= 5:
            detail = ", ".join(f"{unit} {i} {d[i]:+.2f}" for i in out)
        else:
            detail = (
                f"{out.size} of {len(d)} {unit}s, from {d[out].min():+.2f} to {d[out].max():+.2f}"
            )
        parts.append(head + detail)
    if parts:
        warnings.warn(
            f"{verb} beyond the observed runs, in decades outside the observed range (+ above, "
            "- below): "
            + "; ".join(parts)
            + ". The posterior grows wider with the distance; "
            + hint,
            ExtrapolationWarning,
            stacklevel=find_stack_level(),
        )


def group_of(fit: Fit, group_label: str | None, group: str | None, verb: str, seed: int = 0) -> Fit:
    """`group_fit` of the curve ``group_label``; ``group`` is that keyword's deprecated name."""
    label = opt.renamed(
        group_label, group, verb=verb, old="group", new="group_label", stacklevel=4,
        why="group names a column in every verb; a fitted curve is chosen by group_label",
    )  # fmt: skip
    return group_fit(fit, label, seed=seed)

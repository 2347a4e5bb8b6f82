"""Posterior forecasts of the loss at new runs: ``forecast(fit, at) -> Forecast``.

A forecast evaluates the law at each posterior draw and each new point (vectorised over
``(draw, point)`` in JAX) and, for ``kind="predictive"``, adds the likelihood's noise in log
space. `extrapolation_horizon` measures how far along the compute-optimal path the predictive
interval stays narrow; it builds on `bayescale.analysis.allocate` (same layer, one direction only:
forecast imports allocate).
"""

from __future__ import annotations

import functools
import html
import json
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bayescale import options as opt
from bayescale import streams
from bayescale.analysis.allocate import compute_optimal
from bayescale.analysis.common import (
    decades_outside,
    group_of,
    interval_probs,
    posterior_params,
    quantile_name,
    warn_extrapolation,
)
from bayescale.analysis.predict import misfit_blocks, posterior_draws
from bayescale.errors import OptionError
from bayescale.io.data import read_points
from bayescale.model.misfit import coordinate_columns

if TYPE_CHECKING:
    from bayescale.inference.fit import Fit
    from bayescale.model.laws import Law
    from bayescale.model.likelihoods import Likelihood
    from bayescale.model.misfit import MisfitAt

__all__ = ["Forecast", "Horizon", "KINDS", "extrapolation_horizon", "forecast"]

KINDS = ("predictive", "mean")

#: (draw, point) pairs of one block of `forecast`'s work: blocks of draws of about this size
#: keep the temporaries small beside the result and share the work among threads (the draws
#: do not depend on it)
FORECAST_CHUNK = 1 << 20


# ------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Forecast:
    """Posterior forecast of the loss at new points.

    Attributes
    ----------
    tree : xarray.DataTree
        Group ``predictions`` with ``loss_mean`` (the law's loss at each draw) and, for
        ``kind="predictive"``, ``loss`` (with the likelihood's noise), both over ``chain, draw,
        point`` in float32; group ``predictions_constant_data`` with the inputs over
        ``point``. Attributes: law, kind, likelihood, nu, seed and ``observed_range`` (JSON:
        variable -> [min, max] over the fitted runs).
    points : pandas.DataFrame
        The points (a copy, index 0..P-1 as ``point``) with the law's inputs, ``compute``
        where it can be derived, and any other columns passed.
    kind : str
        ``"predictive"`` or ``"mean"``: what `draws` holds.
    """

    tree: Any
    points: pd.DataFrame
    kind: str

    @property
    def draws(self) -> Any:
        """`xarray.Dataset`: ``loss`` (predictive or mean, as asked) over ``chain, draw, point``."""
        name = "loss" if self.kind == "predictive" else "loss_mean"
        data = self.tree["predictions"].to_dataset()[[name]]
        return data if name == "loss" else data.rename({name: "loss"})

    @property
    def observed_range(self) -> dict[str, tuple[float, float]]:
        """Variable -> (min, max) over the fitted runs."""
        return {
            k: (float(v[0]), float(v[1]))
            for k, v in json.loads(self.tree.attrs["observed_range"]).items()
        }

    def _flat(self) -> np.ndarray:
        loss = self.draws["loss"].values
        return loss.reshape(-1, loss.shape[-1])

    def quantiles(self, probs: Sequence[float] = (0.05, 0.5, 0.95)) -> pd.DataFrame:
        """Posterior quantiles of the loss per point.

        Parameters
        ----------
        probs : sequence of float, default (0.05, 0.5, 0.95)
            Probabilities in [0, 1].

        Returns
        -------
        DataFrame
            Index ``point``; one column per probability, named ``q5``, ``q50``, ``q95``, ...
        """
        probs = np.atleast_1d(np.asarray(probs, dtype=np.float64))
        if probs.ndim != 1 or not np.all((probs >= 0) & (probs <= 1)):
            raise OptionError(f"probs must be probabilities in [0, 1]; received {probs!r}.")
        q = _per_point(self._flat(), probs)["q"]
        table = pd.DataFrame(q.T, columns=[quantile_name(p) for p in probs])
        table.index.name = "point"
        return table

    def relative_width(self, ci_prob: float = 0.9) -> np.ndarray:
        """Width of the equal-tailed ``ci_prob`` interval divided by the median, per point."""
        lo, hi = interval_probs(ci_prob)
        q = _per_point(self._flat(), [lo, 0.5, hi])["q"]
        return (q[2] - q[0]) / q[1]

    def prob_below(self, target: float | np.ndarray) -> np.ndarray:
        """Posterior probability that the loss is below ``target`` (one value or one per point)."""
        flat = self._flat()
        target = np.asarray(target, dtype=np.float64)
        if target.ndim > 1 or target.size not in (1, flat.shape[1]):
            raise OptionError(
                f"target must be one loss or one per point ({flat.shape[1]}); received shape "
                f"{target.shape}."
            )
        return np.mean(flat < target, axis=0)

    def variance_shares(self) -> dict[str, np.ndarray]:
        """Where the predictive width comes from: shares of the variance of log loss per point.

        Sequential (law of total variance): ``parameter`` is the variance of the law's log loss
        over posterior draws; ``misfit`` what the law's misfit adds to it (0 for the exact
        law); ``noise`` what run noise adds on top. Shares sum to 1.
        """
        preds = self.tree["predictions"]
        total = self._log_var("loss") if "loss" in preds else None
        return self._shares(total)

    def _log_var(self, name: str) -> np.ndarray:
        """Variance over draws of the log of ``predictions[name]``, per point."""
        values = self.tree["predictions"][name].values
        return _log_variance(values.reshape(-1, values.shape[-1]))

    def _shares(self, total: np.ndarray | None) -> dict[str, np.ndarray]:
        """`variance_shares` from the variance of log ``loss`` (None: as for ``loss_mean``)."""
        preds = self.tree["predictions"]
        mean = self._log_var("loss_mean")
        law = self._log_var("loss_law") if "loss_law" in preds else mean
        total = mean if total is None else total
        parts = {
            "parameter": law,
            "misfit": np.maximum(mean - law, 0.0),
            "noise": np.maximum(total - mean, 0.0),
        }
        norm = sum(parts.values())
        norm = np.where(norm > 0, norm, 1.0)
        return {k: v / norm for k, v in parts.items()}

    def decades_beyond(self) -> pd.DataFrame:
        """Signed decades beyond the observed range per point and variable.

        Positive above the largest observed value, negative below the smallest, 0 inside.
        """
        return decades_outside(self.points, self.observed_range)

    def summary(self, ci_prob: float = 0.9, target: float | None = None) -> pd.DataFrame:
        """One row per point: inputs, mean, sd, median, interval, relative width, extrapolation.

        Parameters
        ----------
        ci_prob : float, default 0.9
            Probability mass of the equal-tailed interval.
        target : float, optional
            A target loss; adds ``prob_below``, the probability that the loss is below it.

        Returns
        -------
        DataFrame
            Index ``point``; columns: the law's inputs (and ``compute``), ``mean``, ``sd``,
            ``median``, ``q<lo>``, ``q<hi>``, ``rel_width`` ((q_hi - q_lo) / median),
            ``decades_beyond`` (the largest distance outside the observed range over the
            variables, in decades) and optionally ``prob_below``.
        """
        lo, hi = interval_probs(ci_prob)
        predictive = self.kind == "predictive"
        stats = _per_point(self._flat(), [0.5, lo, hi], moments=True, log_var=predictive)
        q = stats["q"]
        inputs = list(self.tree["predictions_constant_data"].data_vars)
        table = self.points[inputs].copy()
        table["mean"] = stats["mean"]
        table["sd"] = stats["sd"]
        table["median"] = q[0]
        table[quantile_name(lo)] = q[1]
        table[quantile_name(hi)] = q[2]
        table["rel_width"] = (q[2] - q[1]) / q[0]
        table["decades_beyond"] = self.decades_beyond().abs().max(axis=1).to_numpy()
        if predictive:
            for name, share in self._shares(stats["log_var"]).items():
                table[f"share_{name}"] = share
        if target is not None:
            table["prob_below"] = self.prob_below(target)
        table.index.name = "point"
        return table

    def __repr__(self) -> str:
        sizes = self.tree["predictions"].sizes
        beyond = self.decades_beyond().abs().max(axis=1)
        n_out = int((beyond > 0).sum())
        tail = (
            f"\n  {n_out} of {len(beyond)} points beyond the observed runs "
            f"(up to {beyond.max():.2g} decades)"
            if n_out
            else "\n  all points inside the observed range"
        )
        return (
            f"Forecast(law={self.tree.attrs['law']!r}, kind={self.kind!r}, "
            f"points={sizes['point']}, draws={sizes['chain'] * sizes['draw']}){tail}"
        )

    def _repr_html_(self) -> str:
        head = slice(0, 50)  # summarise only the rows shown
        first = Forecast(self.tree.isel(point=head), self.points.iloc[head], self.kind)
        table = first.summary()
        return f"<pre>{html.escape(repr(self))}</pre>" + table.to_html(
            float_format=lambda x: f"{x:.4g}"
        )


@dataclass(frozen=True)
class Horizon:
    """How far along the compute-optimal path the predictive interval stays narrow.

    Attributes
    ----------
    compute : float
        The largest compute (FLOP) up to which the relative width of the ``ci_prob``
        predictive interval stays below ``tolerance`` (interpolated in log compute between
        grid points). NaN if the first grid point already exceeds it; the last grid point
        if none does (then `beyond_grid` is True).
    curve : pandas.DataFrame
        Per grid point: ``compute``, ``n_params``, ``n_tokens`` (the posterior-median
        allocation), ``median``, the interval, ``rel_width`` and ``decades_beyond`` (compute
        beyond the largest observed run).
    tolerance : float
        The tolerance on the relative width.
    ci_prob : float
        Probability mass of the interval.
    max_observed_compute : float
        The largest compute among the fitted runs (NaN when the runs have none).
    """

    compute: float
    curve: pd.DataFrame
    tolerance: float
    ci_prob: float
    max_observed_compute: float

    @property
    def beyond_grid(self) -> bool:
        """True when the width stays under the tolerance over the whole grid."""
        return bool((self.curve["rel_width"] < self.tolerance).all())

    @property
    def decades(self) -> float:
        """The horizon in decades of compute beyond the largest observed run."""
        return float(np.log10(self.compute / self.max_observed_compute))

    def summary(self) -> pd.DataFrame:
        """The curve (one row per compute on the grid)."""
        return self.curve.copy()

    def __repr__(self) -> str:
        where = "beyond the grid" if self.beyond_grid else f"{self.decades:+.2g} decades"
        return (
            f"Horizon(compute={self.compute:.3g} FLOP ({where} from the largest run), "
            f"tolerance={self.tolerance:g}, ci_prob={self.ci_prob:g})"
        )

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(repr(self))}</pre>" + self.curve.to_html(
            float_format=lambda x: f"{x:.4g}"
        )


# ------------------------------------------------------------------------------ the verbs


def forecast(
    fit: Fit,
    at: pd.DataFrame | Mapping[str, Any],
    *,
    kind: str = "predictive",
    seed: int = 0,
    warn: bool = True,
    group_label: str | None = None,
    group: str | None = None,
) -> Forecast:
    r"""Posterior draws of the loss at new points.

    Parameters
    ----------
    fit : Fit
        A fit by any method (``kind="predictive"`` needs ``sigma``, absent from the Huber fit).
    at : DataFrame or mapping of arrays
        New points with canonical columns: the law's inputs (``n_params``, ``n_tokens``,
        ...). ``n_tokens`` = C / (6 N) is derived from ``compute`` and ``n_params`` when absent
        (and ``n_params`` = C / (6 D)); ``compute`` = 6 N D when absent. Scalars broadcast.
        The caller's object is not modified.
    kind : {"predictive", "mean"}, default "predictive"
        ``"predictive"``: the loss of a new run (law plus noise); ``"mean"``: the law itself.
        Both are kept in ``tree``; `Forecast.draws` holds the one asked for.
    seed : int, default 0
        Seed of the noise draws.
    warn : bool, default True
        Emit an `ExtrapolationWarning` for points beyond the observed range.
    group_label : str, optional
        For a grouped fit (``fit(..., group=<column>)``): the curve, by its label; None (the
        default) is a **new group** drawn from the population (`bayescale.inference.fit.group_fit`).
        Must be None for a fit without groups.
    group : str, optional
        Deprecated name of ``group_label`` (``group`` names a column in every verb).

    Returns
    -------
    Forecast

    Raises
    ------
    DataError
        If a needed input is missing, non-numeric, non-positive or non-finite.
    ValueError
        If ``kind`` is unknown, or ``"predictive"`` for a fit without ``sigma``.

    Warns
    -----
    ExtrapolationWarning
        Per variable: how many points lie outside the observed range and by how many
        decades.

    Notes
    -----
    For each draw s and point j, with x_j the log inputs,

    .. math::

        \log L^{mean}_{sj} = \log f(x_j; \theta_s), \qquad
        \log L^{pred}_{sj} = \log f(x_j; \theta_s) + \sigma_s \epsilon_{sj},

    with epsilon_sj iid Student-t(nu) (or standard normal), as in the likelihood. Noise for
    nu = 4 (the default) and the normal likelihood is drawn by the inverse CDF of float32
    uniforms from the stream ``forecast_noise`` of ``seed`` (`bayescale.streams`; closed form
    for t_4: with sin(theta) = 2u - 1 and phi = theta / 3,
    t = 4 sin(phi) sqrt(cos(phi) / cos(theta)); float32 error below 1e-5); other nu use
    ``Generator.standard_t``. The law is evaluated in float32 (relative error about 1e-6, far
    below any noise scale), vectorised over draws and points, in blocks of draws shared among
    one thread per CPU core (each block on its own JAX host device where there are several);
    the generators of the noise and of the misfit's walks beyond the fitted runs
    (`bayescale.model.misfit.MisfitAt`) jump to each block's first draw, so the draws do not
    depend on the blocks, the threads or the number of devices.

    Examples
    --------
    >>> import bayescale
    >>> from bayescale.analysis.forecast import forecast
    >>> fit = bayescale.fit(bayescale.simulate("chinchilla", seed=1), method="map")
    >>> fc = forecast(fit, {"n_params": 1e9, "n_tokens": 2e10}, warn=False)
    >>> fc.draws["loss"].dims
    ('chain', 'draw', 'point')
    """
    if kind not in KINDS:
        raise OptionError(f"unknown kind {kind!r}. Available: {', '.join(KINDS)}.")
    seed = opt.seed(seed)
    warn = opt.flag(warn, "warn")
    fit = group_of(fit, group_label, group, "forecast", seed=int(seed))
    post = fit.posterior
    if kind == "predictive" and "sigma" not in post:
        raise OptionError(
            f"the fit has no noise scale sigma (method={fit.method!r}), so it has no predictive "
            "distribution. Pass kind='mean', or refit with method='nuts' or 'map'."
        )
    points = _points(at, fit.law)
    observed = _observed_range(fit, points)
    if warn:
        warn_extrapolation(points, observed, "forecast", "see Forecast.decades_beyond().")
    return _forecast(fit, points, observed, kind, int(seed))


def extrapolation_horizon(
    fit: Fit,
    *,
    tolerance: float,
    ci_prob: float = 0.9,
    compute: np.ndarray | Sequence[float] | None = None,
    flops_per_param_token: float = 6.0,
    unique_tokens: float | None = None,
    seed: int = 0,
) -> Horizon:
    """The largest compute, along the compute-optimal path, with a narrow predictive interval.

    Parameters
    ----------
    fit : Fit
        A fit with ``sigma`` of a law of ``n_params`` and ``n_tokens`` (or of ``compute``
        alone).
    tolerance : float
        Largest acceptable relative width (q_hi - q_lo) / median of the predictive interval,
        for example 0.05. It must exceed the width of the noise alone (about 4.3 sigma for
        the Student-t with nu = 4 at ci_prob = 0.9).
    ci_prob : float, default 0.9
        Probability mass of the interval.
    compute : array of float, optional
        Grid of budgets (FLOP), increasing; default 10 per decade from the smallest observed
        compute to 10^6 times the largest. Budgets where the allocation is not identified
        (data-constrained law far beyond its unique data) are dropped from the curve.
    flops_per_param_token : float, default 6
        k in C = k N D.
    unique_tokens : float, optional
        Budget of unique tokens (data-constrained law only).
    seed : int, default 0
        Seed of the noise draws.

    Returns
    -------
    Horizon

    Raises
    ------
    ValueError
        If ``tolerance`` is not positive, the grid is not increasing and positive, or the law
        has neither ``n_params`` and ``n_tokens`` nor ``compute``.

    Notes
    -----
    At each budget C on the grid the run is placed at the posterior-median compute-optimal
    allocation (N*(C), D*(C) = C / (k N*)): the run one would actually train. Its predictive
    loss has width w(C) = (q_hi - q_lo) / median; the horizon is the first crossing of
    w(C) = tolerance, interpolated linearly in log C. No `ExtrapolationWarning` is raised:
    extrapolation is the point; ``curve['decades_beyond']`` reports it.

    Examples
    --------
    >>> import bayescale
    >>> from bayescale.analysis.forecast import extrapolation_horizon
    >>> fit = bayescale.fit(bayescale.simulate("chinchilla", seed=1), method="map")
    >>> h = extrapolation_horizon(fit, tolerance=0.1)
    >>> h.compute > 3e21
    True
    """
    tol = opt.positive(tolerance, "tolerance", example=0.05)
    seed = opt.seed(seed)
    lo, hi = interval_probs(ci_prob)
    data_c = fit.data.table["compute"].to_numpy(float) if "compute" in fit.data.table else None
    if compute is None:
        if data_c is None:
            raise OptionError(
                "the fitted runs have no compute column; pass compute=<grid of budgets in FLOP>."
            )
        c_min, c_max = float(data_c.min()), float(data_c.max())
        n = int(np.ceil(10 * np.log10(c_max * 1e6 / c_min))) + 1
        grid = np.geomspace(c_min, c_max * 1e6, n)
    else:
        grid = np.atleast_1d(np.asarray(compute, dtype=np.float64))
        if grid.ndim != 1 or grid.size < 2 or not np.all(np.isfinite(grid) & (grid > 0)):
            raise OptionError(
                f"compute must be a 1-D grid of at least 2 positive budgets; received {compute!r}."
            )
        if np.any(np.diff(grid) <= 0):
            raise OptionError("compute must be strictly increasing. Pass np.sort(compute).")
    law = fit.law
    if tuple(law.variables) == ("compute",):
        at = pd.DataFrame({"compute": grid})
    else:
        alloc = compute_optimal(
            fit,
            grid,
            flops_per_param_token=flops_per_param_token,
            unique_tokens=unique_tokens,
            warn=False,  # the horizon is about extrapolation
        )
        with warnings.catch_warnings():  # all-NaN budgets: no identified optimum
            warnings.simplefilter("ignore", RuntimeWarning)
            n_opt = np.nanmedian(alloc.draws["n_params"].values.reshape(-1, grid.size), axis=0)
        keep = np.isfinite(n_opt)
        if keep.sum() < 2:
            raise OptionError(
                "the compute-optimal allocation is not identified on the grid (see the "
                "ConvergenceWarning); pass compute=<a grid of smaller budgets>."
            )
        grid, n_opt = grid[keep], n_opt[keep]
        at = pd.DataFrame(
            {"n_params": n_opt, "n_tokens": grid / (flops_per_param_token * n_opt), "compute": grid}
        )
        if unique_tokens is not None:
            at["unique_tokens"] = float(unique_tokens)
    fc = forecast(fit, at, kind="predictive", seed=seed, warn=False)
    table = fc.summary(ci_prob=ci_prob)
    curve = pd.DataFrame(
        {
            "compute": grid,
            "n_params": at["n_params"].to_numpy() if "n_params" in at else np.nan,
            "n_tokens": at["n_tokens"].to_numpy() if "n_tokens" in at else np.nan,
            "median": table["median"].to_numpy(),
            quantile_name(lo): table[quantile_name(lo)].to_numpy(),
            quantile_name(hi): table[quantile_name(hi)].to_numpy(),
            "rel_width": table["rel_width"].to_numpy(),
            "decades_beyond": fc.decades_beyond()["compute"].clip(lower=0).to_numpy()
            if "compute" in fc.observed_range
            else np.nan,
        }
    )
    width = curve["rel_width"].to_numpy()
    over = np.flatnonzero(~(width < tol))
    log_c = np.log(grid)
    if over.size == 0:
        horizon = float(grid[-1])
    elif over[0] == 0:
        horizon = float("nan")
    else:
        i = over[0]
        frac = (tol - width[i - 1]) / (width[i] - width[i - 1])
        horizon = float(np.exp(log_c[i - 1] + frac * (log_c[i] - log_c[i - 1])))
    top = float(data_c.max()) if data_c is not None else float("nan")
    return Horizon(horizon, curve, tol, float(ci_prob), top)


# ------------------------------------------------------------------------------ inputs


def _points(at: Any, law: Law) -> pd.DataFrame:
    """Validated copy of the points with the law's inputs (and compute where derivable)."""
    return read_points(at, law.variables)


def _observed_range(fit: Fit, points: pd.DataFrame) -> dict[str, tuple[float, float]]:
    table = fit.data.table
    names = [v for v in (*fit.law.variables, "compute") if v in table and v in points]
    out = {}
    for name in dict.fromkeys(names):
        values = table[name].to_numpy(dtype=np.float64)
        out[name] = (float(values.min()), float(values.max()))
    return out


# ------------------------------------------------------------------------------ statistics

#: points per block of `_per_point`'s quantiles: a block of 4,000 draws stays in the CPU's cache
_BLOCK = 128


def _per_point(
    flat: np.ndarray,
    probs: Sequence[float] = (),
    *,
    moments: bool = False,
    log_var: bool = False,
) -> dict[str, np.ndarray]:
    """Statistics over the draws (axis 0) of a ``(draw, point)`` array, per point, float64.

    ``q``: the quantiles at ``probs`` (NumPy's default linear interpolation between order
    statistics, NaN for a point with a NaN draw, and infinite between two infinite ones, where
    ``numpy.quantile`` gives NaN); with ``moments``, ``mean`` and ``sd``
    (``ddof=1``; NaN for one draw); with ``log_var``, ``log_var``: the variance of the log.

    The moments are streamed over rows of draws (`_column_moments`). For the quantiles, blocks
    of points are copied with the draws contiguous and worked on in the CPU's cache, on one
    thread per core (NumPy releases the GIL): the order statistics come from in-place
    partitions around each one needed (O(draws) per point, not a sort), and their upper
    neighbours from a minimum. NumPy's ``quantile(axis=0)`` on the whole array is several
    times slower (a strided partition per point, a full-size copy).
    """
    n, n_point = flat.shape
    probs = np.asarray(probs, np.float64)
    out: dict[str, np.ndarray] = {"q": np.empty((probs.size, n_point))}
    if moments:
        out["mean"], var = _column_moments(flat, ddof=1)
        out["sd"] = np.sqrt(var)
    if log_var:
        out["log_var"] = _column_moments(flat, ddof=0, log=True)[1]
    if not probs.size:
        return out
    h = (n - 1) * probs  # NumPy's "linear" method: between order statistics floor(h) and +1
    below = np.floor(h).astype(np.int64)
    frac = h - below
    above = np.minimum(below + 1, n - 1)
    needed = sorted({int(k) for k in below} | {int(k) for k in above[frac > 0]})
    # one work array per thread: a fresh one per block would cost a page fault every 1,024
    # values
    local = threading.local()

    def block(start: int) -> None:
        cols = slice(start, min(start + _BLOCK, n_point))
        if not hasattr(local, "work"):
            local.work = np.empty((_BLOCK, n), np.float32)
        x = _transposed(flat, cols, local.work[: cols.stop - cols.start])  # (points, draws)
        nan = np.isnan(x.max(axis=1))  # (max propagates NaN)
        if x.view(np.int32).min() < 0:  # a sign bit is set
            stats = _order_statistics(x, needed)
        else:  # the bits of non-negative floats are in their order as integers: faster
            found = _order_statistics(x.view(np.int32), needed)
            stats = {k: v.view(np.float32) for k, v in found.items()}
        lo = np.stack([stats[int(k)] for k in below]).astype(np.float64)
        hi = np.stack(
            [stats[int(a if f > 0 else b)] for a, b, f in zip(above, below, frac, strict=True)]
        ).astype(np.float64)
        with np.errstate(invalid="ignore"):  # inf - inf where both are inf
            q = np.where((frac[:, None] > 0) & (hi != lo), lo + frac[:, None] * (hi - lo), lo)
        q[:, nan] = np.nan
        out["q"][:, cols] = q

    _on_threads(block, range(0, n_point, _BLOCK))
    return out


def _transposed(flat: np.ndarray, cols: slice, out: np.ndarray) -> np.ndarray:
    """``flat[:, cols].T`` copied into ``out`` (C-contiguous, float32), tile by tile.

    Copying the strided columns in one go misses the cache on every element; tiles of rows
    stay in it.
    """
    part = flat[:, cols]
    for row in range(0, part.shape[0], _TILE):
        out[:, row : row + _TILE] = part[row : row + _TILE].T
    return out


#: rows of draws per tile of `_transposed`
_TILE = 256


def _column_moments(
    values: np.ndarray, ddof: int, log: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance over the draws (axis 0) of a ``(draw, point)`` array (or of its log).

    Streamed over rows of draws (no transposed copy), vectorised along the points, on one
    thread per core over slices of points. The deviations from the first draw are float32
    (differences of nearby values are nearly exact) and summed in float64. NaN with no more
    than ``ddof`` draws.
    """
    n, n_point = values.shape
    mean, var = np.empty(n_point), np.empty(n_point)
    width = -(-n_point // (os.cpu_count() or 1))

    def part(start: int) -> None:
        cols = slice(start, min(start + width, n_point))
        block = values[:, cols]
        step = max(1, (1 << 16) // block.shape[1])
        # inf - inf, log of 0 or of a negative value, squares beyond float32
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            first = np.log(block[0]) if log else np.array(block[0], np.float32)
            first[~np.isfinite(first)] = 0.0
            total, square = np.zeros(block.shape[1]), np.zeros(block.shape[1])
            for row in range(0, n, step):
                rows = block[row : row + step]
                dev = (np.log(rows) if log else rows.astype(np.float32)) - first
                total += dev.sum(axis=0, dtype=np.float64)
                dev = dev.astype(np.float64)
                square += np.einsum("ij,ij->j", dev, dev)
            mean[cols] = first + total / n
            var[cols] = (square - total**2 / n) / (n - ddof) if n > ddof else np.nan
        np.maximum(var[cols], 0.0, out=var[cols])

    _on_threads(part, range(0, n_point, width))
    return mean, var


def _log_variance(values: np.ndarray) -> np.ndarray:
    """Variance over the draws (axis 0) of the log of a ``(draw, point)`` array, per point."""
    return _column_moments(values, ddof=0, log=True)[1]


def _on_threads(fn: Any, items: Sequence[int], limit: int | None = None) -> None:
    """``fn(item)`` for each item, on up to one thread per core (NumPy releases the GIL).

    ``limit`` caps the threads (1: in order, on the calling thread).
    """
    workers = min(len(items), os.cpu_count() or 1, limit or len(items))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fn, items))
    else:
        for item in items:
            fn(item)


def _order_statistics(x: np.ndarray, ranks: Sequence[int]) -> dict[int, np.ndarray]:
    """The order statistics of each row of ``x`` at ``ranks`` (sorted); ``x`` is reordered.

    Divide and conquer: partition the rows' range around the middle rank, then each side with
    its ranks; a rank next to the one just placed is the minimum (maximum) of its side.
    """
    found: dict[int, np.ndarray] = {}

    def select(lo: int, hi: int, ks: list[int]) -> None:
        if not ks:
            return
        i = len(ks) // 2
        k = ks[i]
        x[:, lo:hi].partition(k - lo, axis=1)
        found[k] = x[:, k].copy()
        left, right = ks[:i], ks[i + 1 :]
        if right and right[0] == k + 1:
            found[k + 1] = x[:, k + 1 : hi].min(axis=1)
            right = right[1:]
        if left and left[-1] == k - 1:
            found[k - 1] = x[:, lo:k].max(axis=1)
            left = left[:-1]
        select(lo, k, left)
        select(k + 1, hi, right)

    select(0, x.shape[1], list(ranks))
    return found


# ------------------------------------------------------------------------------ the maths


@functools.lru_cache(maxsize=32)
def _log_law_fn(law: Law) -> Any:
    """Jitted ``(params, logx) -> log loss`` of the law over ``(draw, point)``.

    Only the law runs in XLA: the exponentials and the noise are cheaper in NumPy, whose
    float32 transcendental functions are vectorised on CPU.
    """
    import jax

    # the law is vmapped over points and draws rather than broadcast over (draw, point)
    # arrays: XLA then evaluates it elementwise, which it does much faster on CPU for laws
    # built on a stacked logsumexp
    per_point = jax.vmap(law.fn, in_axes=(None, 0))
    return jax.jit(jax.vmap(per_point, in_axes=(0, None)))


#: elements per call of the noise transform's NumPy functions: their temporaries stay in the
#: CPU's cache
_NOISE_BLOCK = 1 << 14


def _noise_block(noise: Likelihood, state: Mapping[str, Any], start: int, out: np.ndarray) -> None:
    """Standardised noise (float32) for the draws at flat positions ``start`` onwards, in ``out``.

    The stream is that of one ``noise.uniforms(rng, (draws, points))`` call: its generator
    (PCG64, two float32 uniforms per 64-bit output) jumps to the block's first uniform, so
    blocks drawn in any order, on any thread, give the unblocked draw. Drawn and transformed
    a cache-sized part at a time, straight into ``out`` (no temporary of the block's size).
    """
    bits = np.random.PCG64()
    bits.state = state
    bits.advance(start // 2)
    gen = np.random.Generator(bits)
    if start % 2:
        gen.random(dtype=np.float32)
    flat = out.reshape(-1)
    for first in range(0, flat.size, _NOISE_BLOCK):
        part = flat[first : first + _NOISE_BLOCK]
        part[...] = noise.transform(noise.uniforms(gen, part.shape), xp=np)


def _predict_blocks(
    law: Law,
    flat: Mapping[str, np.ndarray],
    logx: Mapping[str, np.ndarray],
    sigma: np.ndarray | None,
    noise: Likelihood | None,
    rng: np.random.Generator | None,
    misfit: MisfitAt | None,
    out: dict[str, np.ndarray],
    rows: int,
    wide: bool,
) -> None:
    """Fill ``out`` (draw, point): the law, its mean with the misfit, and the predictive loss.

    Blocks of ``rows`` draws run on one thread per core: each evaluates the law in XLA on its
    own host device, draws its noise and the misfit meanwhile, then exponentiates into ``out``.
    Noise that cannot jump to a block (`Likelihood.inverse_cdf` False) is drawn block after
    block on one thread. Either way the result does not depend on ``rows`` or on the number of
    threads.
    """
    import jax

    fn = _log_law_fn(law)
    n_sample, n_point = next(iter(out.values())).shape
    devices = jax.local_devices()
    jump = noise is not None and noise.inverse_cdf
    state = rng.bit_generator.state if jump else None
    local = threading.local()  # the misfit's work arrays, one set per thread

    def block(index: int) -> None:
        start = index * rows
        stop = min(start + rows, n_sample)
        with jax.enable_x64(wide), np.errstate(over="ignore"):  # (a float32 loss: inf beyond)
            params = {k: v[start:stop] for k, v in flat.items()}
            device = devices[index % len(devices)]
            mu = fn(*jax.device_put((params, logx), device))  # asynchronous: noise meanwhile
            # the blocks of the outputs serve as the work arrays (float32): temporaries of a
            # block's size cost a page fault every few thousand values
            these = slice(start, stop)
            shape = (stop - start, n_point)
            eps = None if noise is None else out["loss"][these]
            if jump:
                _noise_block(noise, state, start * n_point, eps)
            elif noise is not None:
                eps[...] = noise.transform(noise.uniforms(rng, shape), xp=np)
            log_mean = None
            if misfit is not None:
                log_mean = np.empty(shape) if wide else out["loss_mean"][these]
                if not hasattr(local, "work"):
                    local.work = {}
                misfit.block(start, stop, out=log_mean, work=local.work)
            mu = np.asarray(mu)  # waits for the law
            if log_mean is None:
                log_mean = mu
            else:
                np.exp(mu, out=out["loss_law"][these], casting="unsafe")
                log_mean += mu
            if eps is not None:
                eps *= sigma[these]
                eps += log_mean
                np.exp(eps, out=eps)
            np.exp(log_mean, out=out["loss_mean"][these], casting="unsafe")

    from threadpoolctl import threadpool_limits

    blocks = range(-(-n_sample // rows))
    # the misfit's small products on one BLAS thread each: the blocks' threads share the cores
    with threadpool_limits(limits=1, user_api="blas"):
        _on_threads(block, blocks, limit=len(devices) if jump or noise is None else 1)


def _forecast(
    fit: Fit,
    points: pd.DataFrame,
    observed: Mapping[str, tuple[float, float]],
    kind: str,
    seed: int,
) -> Forecast:
    import xarray as xr

    law = fit.law
    params = posterior_params(fit)
    n_chain, n_draw = next(iter(params.values())).shape
    n_sample, n_point = n_chain * n_draw, len(points)
    # draws beyond float32's range (the amplitudes of a new group drawn from a wide population,
    # with large exponents) are forecast in float64
    top = np.finfo(np.float32).max
    wide = any(np.nanmax(np.abs(v), initial=0.0) > top for v in params.values())
    real = np.float64 if wide else np.float32
    flat = {k: v.reshape(-1).astype(real) for k, v in params.items()}
    logx = {v: np.log(points[v].to_numpy(np.float64)).astype(np.float32) for v in law.variables}
    rng = streams.rng(seed, "forecast_noise") if kind == "predictive" else None
    if kind == "predictive":
        sigma = fit.posterior["sigma"].values.reshape(-1, 1).astype(np.float32)
        noise = fit.noise
    else:
        sigma, noise = None, None
    misfit = None
    if fit.misfit is not None:
        cols = coordinate_columns(fit.misfit_coords, law.variables)
        columns = {c: points[c].to_numpy(np.float64) for c in cols}
        # its own stream: the noise draws stay the same with or without the misfit
        mf_rng = streams.rng(seed, "forecast_misfit")
        misfit = misfit_blocks(fit, columns, posterior_draws(fit), mf_rng)
    names_out = ["loss_mean"] + ["loss_law"] * (misfit is not None) + ["loss"] * (noise is not None)
    out = {name: np.empty((n_sample, n_point), np.float32) for name in names_out}
    # blocks of about FORECAST_CHUNK (draw, point) pairs: the temporaries stay small beside
    # the result, and the threads share the work
    rows = max(1, FORECAST_CHUNK // n_point)
    _predict_blocks(law, flat, logx, sigma, noise, rng, misfit, out, rows, wide)
    dims = ("chain", "draw", "point")
    shape = (n_chain, n_draw, n_point)
    coords = {"chain": np.arange(n_chain), "draw": np.arange(n_draw), "point": np.arange(n_point)}
    data = {name: (dims, values.reshape(shape)) for name, values in out.items()}
    inputs = [c for c in (*law.variables, "compute") if c in points]
    const = {c: ("point", points[c].to_numpy(np.float64)) for c in dict.fromkeys(inputs)}
    tree = xr.DataTree.from_dict(
        {
            "predictions": xr.Dataset(data, coords=coords),
            "predictions_constant_data": xr.Dataset(const, coords={"point": coords["point"]}),
        }
    )
    tree.attrs.update(
        law=law.name,
        kind=kind,
        likelihood=fit.likelihood,
        nu=fit.nu,
        seed=seed,
        method=fit.method,
        observed_range=json.dumps({k: list(v) for k, v in observed.items()}),
    )
    return Forecast(tree, points, kind)

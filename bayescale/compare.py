"""Comparing laws: PSIS-LOO and leave-future-out, stacking weights, and break detection.

``compare({"name": fit, ...}, method="loo" | "lfo") -> DataFrame`` ranks fits of several laws to
the same runs by their expected log predictive density (elpd). ``method="loo"`` estimates
leave-one-out predictions by Pareto-smoothed importance sampling (`arviz_stats.loo`), refitting
exactly the runs whose Pareto k is too high; it measures **interpolation**. ``method="lfo"``
(leave-future-out) refits each law on the runs below a cutoff of compute (or of the law's
variable) and scores the runs above it; it measures **extrapolation**, what a forecast is used
for. The table's ``weight`` column holds the stacking weights of the laws; `stack` keeps them
with the fits, and `stacked_predictive` draws from the weighted combination.

``detect_break(data, variable=...) -> BreakReport`` compares a power law with broken power laws
with one and two breaks and reports the number of breaks the evidence supports, the posterior of
each break location and of the exponents on either side.

When to use which
-----------------
LOO: to choose a noise model, find runs a law cannot explain, compare laws on a finished sweep;
it is cheap (no refit unless Pareto k is high). LFO: to choose the law you will extrapolate
with (a forecast, a compute-optimal allocation, whether a break matters for the next scale-up);
it costs one refit per law and cutoff. A law that wins LOO and loses LFO fits the middle of the
data at the expense of its ends; for forecasting, believe LFO.

References
----------
Vehtari, Gelman and Gabry (2017), "Practical Bayesian model evaluation using leave-one-out
cross-validation and WAIC", Statistics and Computing 27, doi:10.1007/s11222-016-9696-4.
Bürkner, Gabry and Vehtari (2020), "Approximate leave-future-out cross-validation for Bayesian
time series models", J. Stat. Comput. Simul. 90(14), doi:10.1080/00949655.2020.1783262.
Yao, Vehtari, Simpson and Gelman (2018), "Using stacking to average Bayesian predictive
distributions", Bayesian Analysis 13(3), doi:10.1214/17-BA1091.
Caballero, Gupta, Rish and Krueger (2023), "Broken Neural Scaling Laws", ICLR,
arXiv:2210.14891.
"""

from __future__ import annotations

import copy
import html
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bayescale.checks import (
    _fit_attrs,
    _location_scale,
    _logmeanexp,
    _make_fit,
    _Noise,
    _sample,
    _spread_draws,
    _user_priors,
)
from bayescale.data import ScalingData, from_frame
from bayescale.errors import ConvergenceWarning, DataError
from bayescale.laws import Law, get_law
from bayescale.model import OBS
from bayescale.priors import Prior, resolve_priors

if TYPE_CHECKING:
    from bayescale.fit import Fit

__all__ = [
    "BreakReport",
    "COMPARE_METHODS",
    "Stack",
    "compare",
    "detect_break",
    "stack",
    "stacked_predictive",
    "stacking_weights",
]

COMPARE_METHODS = ("loo", "lfo")
_LFO_FRACTION = 2 / 3
# convergence thresholds for the log densities a score is made of (Vehtari et al. 2021)
_MAX_RHAT = 1.01
_MIN_ESS = 400


# ------------------------------------------------------------------------------- compare


def compare(
    fits: Mapping[str, Fit],
    *,
    method: str = "loo",
    k_threshold: float = 0.7,
    max_refits: int = 10,
    cutoffs: float | Sequence[float] | None = None,
    variable: str | None = None,
    num_warmup: int | None = None,
    num_samples: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Rank fits of several laws to the same runs by their expected log predictive density.

    Parameters
    ----------
    fits : mapping of str to Fit
        Two or more NUTS (or MAP) fits to the same runs, by name.
    method : {"loo", "lfo"}, default "loo"
        ``"loo"``: PSIS leave-one-out (interpolation). ``"lfo"``: leave-future-out
        (extrapolation); see the module notes for when to use which.
    k_threshold : float, default 0.7
        LOO: runs whose Pareto k exceeds it are scored by an exact refit without them.
    max_refits : int, default 10
        LOO: most exact refits per fit (the runs with the highest k first); the ``warning``
        column stays True when high-k runs are left.
    cutoffs : float or sequence of float, optional
        LFO: values of ``variable`` at which to cut. With cutoffs ``c_1 < ... < c_m`` the law
        is refitted on the runs with ``x <= c_j`` and scored on the runs with ``c_j < x <=
        c_{j+1}`` (the last block: every run above ``c_m``), so each run is scored at most
        once, by a forecast from smaller runs only. Default: one cutoff at 2/3 of the range of
        log ``variable`` (fit on the lower two thirds, score the top third).
    variable : str, optional
        LFO: the ordering variable; default ``compute`` when every fit's data has it, else the
        laws' single input variable.
    num_warmup, num_samples : int, optional
        NUTS settings of the refits; default those of each fit.
    seed : int, default 0
        Seed of the refits.

    Returns
    -------
    DataFrame
        One row per fit, best first, with the columns of `arviz_stats.compare`: ``rank``,
        ``elpd``, ``p`` (effective number of parameters; NaN for LFO), ``elpd_diff`` (the best
        elpd minus this one), ``weight`` (stacking weights), ``se``, ``dse`` (standard error of
        ``elpd_diff``) and ``warning`` (True when the estimate may be unreliable); then
        ``method``, ``n_scored`` (runs scored), ``n_refits`` and ``problems`` (sentences, empty
        when none). LOO adds ``max_pareto_k`` and ``n_high_k`` (before refits); LFO adds
        ``cutoffs``.

    Raises
    ------
    ValueError
        If ``method`` is unknown, fewer than two fits are given, the fits were fitted to
        different runs, a fit has no log-likelihood (Huber), or a cutoff leaves too few runs.

    Notes
    -----
    Densities are of the log loss (as in each fit's ``log_likelihood`` group), so elpds of
    laws fitted to the same runs are comparable. A difference smaller than about 2 ``dse``
    (or 4 nats) does not separate two laws. LOO warnings of arviz-stats (Pareto k above its
    ``good_k``) are not re-raised: they are the ``warning``, ``max_pareto_k`` and
    ``n_high_k`` columns.

    Examples
    --------
    >>> import bayescale as bs
    >>> runs = bs.simulate("chinchilla", seed=1)
    >>> fits = {k: bs.fit(runs, k) for k in ("chinchilla", "kaplan")}  # doctest: +SKIP
    >>> bs.compare(fits, method="loo").index[0]  # doctest: +SKIP
    'chinchilla'
    """
    named = _validate_fits(fits)
    if method not in COMPARE_METHODS:
        raise ValueError(f"unknown method {method!r}. Available: {', '.join(COMPARE_METHODS)}.")
    settings = {"num_warmup": num_warmup, "num_samples": num_samples, "seed": seed}
    if method == "loo":
        results = {n: _loo(f, k_threshold, max_refits, settings) for n, f in named.items()}
        return _loo_table(results)
    fits_ = list(named.values())
    var = _lfo_variable(fits_, variable)
    cuts = _cutoffs(fits_[0].data, var, cutoffs, max(len(f.law.params) + 2 for f in fits_))
    scores = {n: _lfo(f, var, cuts, settings) for n, f in named.items()}
    return _lfo_table(scores, cuts, var)


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
        raise ValueError(
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


# -------------------------------------------------------------------------------- stacking


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
            raise ValueError(
                f"weights must name the same fits; fits are {sorted(self.fits)}, weights name "
                f"{sorted(self.weights)}."
            )
        w = np.array([float(self.weights[k]) for k in self.fits])
        if np.any(~np.isfinite(w)) or np.any(w < 0) or abs(w.sum() - 1.0) > 1e-6:
            raise ValueError(
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
) -> Any:
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
    xarray.Dataset
        ``loss`` (of the requested kind) and ``loss_mean`` (the law's loss of the same draws)
        over ``chain`` (1), ``draw`` and ``point``, and ``model`` (the fit each draw comes
        from) over ``chain, draw``; the inputs are coordinates on ``point`` and the weights
        are in ``attrs``. The same ``seed`` picks the same posterior draws for either kind.

    Notes
    -----
    The stacked predictive density is ``sum_k w_k p_k(y | x)``. Fit ``k`` contributes
    ``round(w_k S)`` of the ``S`` draws (largest remainders, so the counts sum to ``S``),
    each a posterior draw of that fit chosen at random (with replacement only when the fit
    has fewer draws than its share), in random order.
    """
    import xarray as xr

    if kind not in ("predictive", "mean"):
        raise ValueError(f"unknown kind {kind!r}. Available: predictive, mean.")
    points = _points(at, stack.fits.values())
    names = list(stack.fits)
    draws = {k: stack.fits[k].draws() for k in names}
    total = int(num_draws or max(len(d["sigma"]) for d in draws.values()))
    counts = _largest_remainder(np.array([stack.weights[k] for k in names]), total)
    pick = np.random.default_rng([seed, 0])  # which draws: the same for both kinds
    noise = np.random.default_rng([seed, 1])
    means, preds, labels = [], [], []
    for name, count in zip(names, counts, strict=True):
        if count == 0:
            continue
        fit, d = stack.fits[name], draws[name]
        n = len(d["sigma"])
        idx = pick.choice(n, size=count, replace=count > n)
        mu, sigma = _location_scale(fit.law, {k: v[idx] for k, v in d.items()}, points)
        means.append(mu)
        if kind == "predictive":
            preds.append(mu + sigma * _Noise(fit.likelihood, fit.nu).sample(noise, mu.shape))
        labels += [name] * count
    order = pick.permutation(total)
    log_mean = np.concatenate(means, axis=0)[order]
    log_loss = np.concatenate(preds, axis=0)[order] if preds else log_mean
    coords = {c: ("point", points.table[c].to_numpy()) for c in points.table.columns if c != "loss"}
    dims = ("chain", "draw", "point")
    return xr.Dataset(
        {
            "loss": (dims, np.exp(log_loss)[None]),
            "loss_mean": (dims, np.exp(log_mean)[None]),
            "model": (("chain", "draw"), np.asarray(labels, dtype=str)[order][None]),
        },
        coords={"chain": [0], "draw": np.arange(total), **coords},
        attrs={
            "kind": kind,
            "weights": json.dumps({k: float(stack.weights[k]) for k in names}),
            "stacking_method": stack.method,
        },
    )


# ------------------------------------------------------------------------ break detection


@dataclass(frozen=True)
class BreakReport:
    """Evidence for breaks in a scaling curve and the posterior of their locations.

    Attributes
    ----------
    n_breaks : int
        The number of breaks the evidence supports (0, 1 or 2), by the stated ``rule``.
    locations : pandas.DataFrame
        One row per break of the selected model (``break 1``, ...): ``median``, ``q5`` and
        ``q95`` of its location in the variable's units; ``exponent_before`` and
        ``exponent_after`` (posterior medians of the local power-law exponent on either side:
        ``c0 + c1 + ... + c_{i-1}`` and ``... + c_i``) with their ``_q5`` and ``_q95``. Empty
        when ``n_breaks`` is 0.
    comparison : pandas.DataFrame
        One row per number of breaks (index ``breaks``): LOO and LFO elpd, their differences to
        the best model with standard errors, diagnostics and ``selected`` (see `summary`).
    fits : mapping of int to Fit
        The fits, by number of breaks (0 is the power law).
    variable : str
        The scaling variable.
    rule : str
        The decision rule, in words, with its thresholds.
    """

    n_breaks: int
    locations: pd.DataFrame
    comparison: pd.DataFrame
    fits: Mapping[int, Fit]
    variable: str
    rule: str

    @property
    def fit(self) -> Fit:
        """The fit of the selected model."""
        return self.fits[self.n_breaks]

    def summary(self) -> pd.DataFrame:
        """The comparison table, one row per number of breaks.

        Columns: ``law``, ``n_params`` (with the noise scale); ``elpd_loo``, ``se_loo``,
        ``elpd_diff_loo`` (best LOO elpd minus this one), ``dse_loo``,
        ``elpd_loo_worst_chain``, ``p_loo``, ``max_pareto_k``, ``n_refits`` and
        ``warning_loo`` (True when the chains disagree about the per-run densities or runs
        keep a high Pareto k); the same for LFO (``elpd_lfo``, ``se_lfo``, ``elpd_diff_lfo``,
        ``dse_lfo``, ``elpd_lfo_worst_chain``, ``n_lfo`` runs scored, ``warning_lfo``); then
        ``problems`` (every diagnostic, in words) and ``selected``.
        """
        return self.comparison.copy()

    def problems(self) -> list[str]:
        """Diagnostic problems of the fits and estimates, one sentence each."""
        out = []
        for k, row in self.comparison.iterrows():
            if row["problems"]:
                out.append(f"{k} breaks: {row['problems']}")
        return out

    def curves(
        self,
        *,
        breaks: Sequence[int] | None = None,
        num: int = 200,
        ci_prob: float = 0.9,
        kind: str = "mean",
        seed: int = 0,
    ) -> pd.DataFrame:
        """Posterior bands of the fitted curves on a grid of the variable, for plotting.

        Parameters
        ----------
        breaks : sequence of int, optional
            Which models; default the power law and the selected broken law (the one-break
            law when no break is selected).
        num : int, default 200
            Grid points, log-spaced over the observed range.
        ci_prob : float, default 0.9
            Mass of the equal-tailed band.
        kind : {"mean", "predictive"}, default "mean"
            Band of the law's loss, or of a new run's loss (law and noise).
        seed : int, default 0
            Seed of the noise draws for ``kind="predictive"``.

        Returns
        -------
        DataFrame
            Long format: ``breaks``, the variable, ``median``, ``lower`` and ``upper``.
        """
        if kind not in ("mean", "predictive"):
            raise ValueError(f"unknown kind {kind!r}. Available: mean, predictive.")
        if breaks is None:
            breaks = (0, max(self.n_breaks, 1))
        x = self.fits[0].data.column(self.variable)
        grid = np.geomspace(x.min(), x.max(), num)
        points = ScalingData(pd.DataFrame({self.variable: grid, "loss": 1.0}))
        rng = np.random.default_rng(seed)
        lo, hi = (1 - ci_prob) / 2, (1 + ci_prob) / 2
        frames = []
        for k in breaks:
            fit = self.fits[k]
            mu, sigma = _location_scale(fit.law, fit.draws(), points)
            if kind == "predictive":
                mu = mu + sigma * _Noise(fit.likelihood, fit.nu).sample(rng, mu.shape)
            q = np.exp(np.quantile(mu, [0.5, lo, hi], axis=0))
            frames.append(
                pd.DataFrame(
                    {
                        "breaks": k,
                        self.variable: grid,
                        "median": q[0],
                        "lower": q[1],
                        "upper": q[2],
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)

    def __repr__(self) -> str:
        table = self.comparison
        lines = [
            f"BreakReport(variable={self.variable!r}, n_breaks={self.n_breaks}, "
            f"runs={self.fits[0].data.n_runs})"
        ]
        for k, row in table.iterrows():
            lines.append(
                f"  {k} breaks: LOO elpd {row['elpd_loo']:.1f} (diff {row['elpd_diff_loo']:.1f}"
                f" +- {row['dse_loo']:.1f}), LFO elpd {row['elpd_lfo']:.1f} (diff "
                f"{row['elpd_diff_lfo']:.1f} +- {row['dse_lfo']:.1f})"
                + ("  <- selected" if row["selected"] else "")
            )
        for name, row in self.locations.iterrows():
            lines.append(
                f"  {name}: {self.variable} = {row['median']:.4g} (90%: {row['q5']:.4g} to "
                f"{row['q95']:.4g}); exponent {row['exponent_before']:.3g} -> "
                f"{row['exponent_after']:.3g}"
            )
        problems = self.problems()
        lines.append("  WARNING: " + " ".join(problems) if problems else "  diagnostics: ok")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return (
            f"<pre>{html.escape(repr(self))}</pre>"
            + self.comparison.to_html(float_format=lambda x: f"{x:.4g}")
            + self.locations.to_html(float_format=lambda x: f"{x:.4g}")
        )


def detect_break(
    data: pd.DataFrame | ScalingData,
    *,
    variable: str = "n_params",
    max_breaks: int = 2,
    base: str | Law = "power_law",
    criterion: str = "loo",
    threshold_se: float = 2.0,
    threshold_nats: float = 4.0,
    cutoff: float | None = None,
    priors: Mapping[str, Prior] | None = None,
    likelihood: str = "student_t",
    nu: float = 4.0,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 500,
    k_threshold: float = 0.7,
    max_refits: int = 2,
    target_accept: float = 0.9,
    seed: int = 0,
    columns: Mapping[str, str] | None = None,
    dropna: bool = False,
) -> BreakReport:
    """Find how many breaks a scaling curve has, where, and how the exponent changes.

    Fits a power law with a floor (``E + A x^-alpha``, no break) and broken power laws
    (Caballero et al. 2023) with 1 to ``max_breaks`` breaks, compares them by PSIS-LOO and by
    leave-future-out, and applies a stated rule.

    Parameters
    ----------
    data : DataFrame or ScalingData
        One run per row with ``variable`` and ``loss``; never modified.
    variable : str, default "n_params"
        The single scaling variable (any positive numeric column: ``n_params``,
        ``n_tokens``, ``compute``, ``data_size``, ...).
    max_breaks : {1, 2}, default 2
        The most breaks considered.
    base : str or Law, default "power_law"
        The law without a break. Breaks are defined for the power-law family only (the broken
        power law reduces to ``power_law`` without breaks); other laws raise a ValueError.
    criterion : {"loo", "lfo"}, default "loo"
        The elpd the rule is applied to. LOO sees a break anywhere in the data; LFO only one
        below the cutoff, and asks whether the broken law also extrapolates better. Both are
        reported either way.
    threshold_se, threshold_nats : float, default 2 and 4
        The rule's margin (see Notes).
    cutoff : float, optional
        LFO cutoff in the variable's units (see `compare`); default 2/3 of the log range,
        moved up if needed so that more runs than the largest model has parameters (noise
        scale included) lie below it.
    priors : mapping, optional
        Priors by parameter name, applied to every model that has the parameter (for example
        ``{"c1": Prior("Normal", loc=0, scale=3)}`` for a steep break).
    likelihood, nu
        Noise model, as in `bayescale.fit`.
    num_chains, num_warmup, num_samples : int, default 4, 500, 500
        NUTS settings of every fit and refit.
    k_threshold : float, default 0.7
        Pareto k above which a run's LOO term is computed by an exact refit.
    max_refits : int, default 2
        Most exact LOO refits per model (the highest k first).
    target_accept : float, default 0.9
        NUTS target acceptance probability (above `bayescale.fit`'s 0.8: the floor and a slow
        exponent, and a sharp break, make curved posteriors).
    seed : int, default 0
        Seed of every fit.
    columns : mapping, optional
        Canonical name -> your column name.
    dropna : bool, default False
        Drop invalid runs instead of raising.

    Returns
    -------
    BreakReport

    Raises
    ------
    DataError
        If ``variable`` or ``loss`` is missing or invalid, there are too few runs for the
        largest model (it has ``3 max_breaks + 4`` parameters with the noise scale), or the
        data holds several curves (a ``group`` column with more than one value).
    ValueError
        For an unknown ``criterion``, ``max_breaks`` outside {1, 2}, or a ``base`` other than
        the power law.

    Warns
    -----
    ConvergenceWarning
        When the reported parameters of the selected model (``c0``, the ``c_i`` and
        ``d_i``) did not converge, or when the decision rests on a model whose chains
        disagree (see Notes). Other problems (such as the unidentified second break of a
        two-break fit to a one-break curve, whose labels may swap between chains) are listed
        in the ``problems`` column without a warning.

    Notes
    -----
    Rule: ``n_breaks`` is the smallest ``k`` such that no model with more breaks has an elpd
    (by ``criterion``) higher than model ``k``'s by more than ``max(threshold_se * dse,
    threshold_nats)``, where ``dse`` is the standard error of the pointwise elpd difference
    of the two models. So a break is declared only when the broken law predicts held-out
    runs better than every simpler law by more than two standard errors and four nats.

    Reliability: the elpd of a model is made of its per-run (held-out) log densities. When
    their chains disagree (r_hat above 1.01 or bulk ESS below 400 for some run; see the
    ``warning_loo`` and ``warning_lfo`` columns), the model's evidence in the rule is the elpd
    of its worst chain alone (``elpd_loo_worst_chain``), so that a break is never declared on
    the strength of one lucky chain; a `ConvergenceWarning` says when this changed the
    answer. The posterior of a break location and of the exponents is reported from the
    selected model.

    Measured error rates (``tests/statistical/test_break_rates.py``; 50 runs over three
    decades, noise 0.01 on log loss, 20 ladders per arm): no false alarm on power-law
    ladders with exponent 0.1, no miss on ladders whose exponent changes from 0.1 to 0.7 at
    3e3, and the 90% interval of the location covered the truth in 19 of 20.

    Examples
    --------
    >>> import bayescale as bs
    >>> runs = bs.simulate("broken_power_law", seed=0)
    >>> report = bs.detect_break(runs, variable="n_params")  # doctest: +SKIP
    >>> report.n_breaks  # doctest: +SKIP
    1
    """
    if criterion not in COMPARE_METHODS:
        raise ValueError(
            f"unknown criterion {criterion!r}. Available: {', '.join(COMPARE_METHODS)}."
        )
    if max_breaks not in (1, 2):
        raise ValueError(f"max_breaks must be 1 or 2; received {max_breaks!r}.")
    base_name = base.name if isinstance(base, Law) else str(base)
    if base_name != "power_law":
        raise ValueError(
            f"break detection compares a power law with broken power laws, the only laws with "
            f"breaks; received base={base_name!r}. Use base='power_law' (with "
            f"variable=<your column>), or compare your own fits with bayescale.compare."
        )
    scaling = from_frame(data, columns=columns, dropna=dropna)
    if "group" in scaling.table.columns and scaling.table["group"].nunique() > 1:
        groups = sorted(scaling.table["group"].unique())
        raise DataError(
            f"the data has {len(groups)} groups ({', '.join(groups[:5])}...); breaks are found "
            "in one curve. Run detect_break on each: {g: detect_break(frame, ...) for g, frame "
            "in data.groupby('group')}."
        )
    laws = {0: get_law("power_law", variable=variable)}
    for k in range(1, max_breaks + 1):
        laws[k] = get_law("broken_power_law", variable=variable, breaks=k)
    largest = len(laws[max_breaks].params) + 1
    scaling.require((variable,), largest, laws[max_breaks].name)
    if len(np.unique(scaling.column(variable))) < 3 + 3 * max_breaks:
        raise DataError(
            f"{variable!r} takes only {len(np.unique(scaling.column(variable)))} distinct "
            f"values; {max_breaks} breaks need at least {3 + 3 * max_breaks}. Pass "
            "max_breaks=1 or add runs at other values."
        )
    settings = {
        "num_chains": num_chains,
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "target_accept": target_accept,
        "seed": seed,
    }
    known = {p.name for law in laws.values() for p in law.params} | {"sigma"}
    unknown = sorted(set(priors or {}) - known)
    if unknown:
        raise ValueError(
            f"priors name {unknown}, which are not parameters of the compared laws; "
            f"parameters are {sorted(known)}."
        )
    fits = {
        k: _cold_fit(law, scaling, dict(priors or {}), likelihood, nu, settings)
        for k, law in laws.items()
    }
    loo = {k: _loo(f, k_threshold, max_refits, settings) for k, f in fits.items()}
    var_cut = _cutoffs(scaling, variable, cutoff, largest + 1, minimum_train=True)
    lfo = {k: _lfo(f, variable, var_cut, settings) for k, f in fits.items()}
    table = _break_table(fits, loo, lfo)
    n_breaks, n_pooled = _select(table, criterion, threshold_se, threshold_nats)
    table["selected"] = table.index == n_breaks
    rule = (
        f"the fewest breaks whose {criterion.upper()} elpd is within max({threshold_se:g} x SE "
        f"of the difference, {threshold_nats:g} nats) of the best model's; a model whose "
        "chains disagree is judged by its worst chain"
    )
    locations = _locations(fits[n_breaks], variable) if n_breaks else _locations(None, variable)
    _warn_breaks(table, fits, n_breaks, n_pooled, criterion)
    return BreakReport(n_breaks, locations, table, fits, variable, rule)


# ------------------------------------------------------------------------------- helpers


def _validate_fits(fits: Mapping[str, Fit]) -> dict[str, Fit]:
    from bayescale.fit import Fit

    if not isinstance(fits, Mapping) or len(fits) < 2:
        raise ValueError(
            "compare needs a mapping of two or more fits by name, for example "
            "{'chinchilla': fit_a, 'kaplan': fit_b}; received "
            f"{type(fits).__name__} of length {len(fits) if hasattr(fits, '__len__') else '?'}."
        )
    names = [str(k) for k in fits]
    out = list(fits.values())
    for name, f in zip(names, out, strict=True):
        if not isinstance(f, Fit):
            raise ValueError(f"{name!r} is a {type(f).__name__}, not a bayescale Fit.")
        if "log_likelihood" not in f.tree.children:
            raise ValueError(
                f"fit {name!r} (method={f.method!r}) has no log_likelihood group; compare needs "
                "posterior draws. Refit it with method='nuts'."
            )
    ref = out[0].data
    for name, f in zip(names[1:], out[1:], strict=True):
        same = f.data.n_runs == ref.n_runs and np.allclose(f.data.loss, ref.loss)
        if not same:
            raise ValueError(
                f"fits {names[0]!r} and {name!r} were fitted to different runs ({ref.n_runs} vs "
                f"{f.data.n_runs} runs); elpds are comparable only on the same runs. Refit "
                "every law to the same table."
            )
    return dict(zip(names, out, strict=True))


def _settings(fit: Fit, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Sampler settings of a refit: the given ones, else those of ``fit``."""
    post = fit.posterior
    return {
        "num_chains": int(settings.get("num_chains") or post.sizes["chain"]),
        "num_warmup": int(settings.get("num_warmup") or fit.tree.attrs.get("num_warmup", 500)),
        "num_samples": int(settings.get("num_samples") or post.sizes["draw"]),
        "target_accept": float(
            settings.get("target_accept") or fit.tree.attrs.get("target_accept", 0.8)
        ),
    }


def _density_problems(dens: np.ndarray, diverging: np.ndarray, what: str) -> str:
    """Convergence of held-out log densities ``(chain, draw, run)`` of a refit ('' if fine).

    These are what a score is made of and do not depend on how the parameters are labelled
    (two breaks may swap), so they, not the parameters, decide whether the score is reliable.
    """
    import arviz_stats as azs
    import xarray as xr

    ds = xr.Dataset({"lpd": (("chain", "draw", "run"), dens)})
    rhat = float(_quietly(lambda: azs.rhat(ds))["lpd"].max())
    ess = float(_quietly(lambda: azs.ess(ds, method="bulk"))["lpd"].min())
    out = []
    if not rhat <= _MAX_RHAT:
        out.append(f"r_hat up to {rhat:.3f}")
    if not ess >= _MIN_ESS:
        out.append(f"bulk ESS down to {ess:.0f}")
    n_div = int(np.sum(diverging))
    if n_div:
        out.append(f"{n_div} divergent transitions")
    return f"{what}: {', '.join(out)}." if out else ""


def _holdout_lpd(
    fit: Fit, samples: Mapping[str, np.ndarray], runs: ScalingData
) -> tuple[np.ndarray, np.ndarray]:
    """Log predictive density of each run of ``runs`` under draws ``samples`` (chain, draw).

    Returns the densities and the per-draw log densities ``(chain, draw, run)``.
    """
    names = (*fit.law.param_names, "sigma")
    shape = np.shape(samples["sigma"])
    draws = {k: np.asarray(samples[k], np.float64).reshape(-1) for k in names}
    mu, sigma = _location_scale(fit.law, draws, runs)
    dens = _Noise(fit.likelihood, fit.nu).logpdf(np.log(runs.loss)[None, :], mu, sigma)
    return _logmeanexp(dens, axis=0), dens.reshape(*shape, -1)


def _subset(data: ScalingData, rows: np.ndarray) -> ScalingData:
    return ScalingData(data.table[np.asarray(rows, bool)].reset_index(drop=True), data.source)


def _loo(
    fit: Fit, k_threshold: float, max_refits: int, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """PSIS-LOO of one fit, with exact refits of its highest-k runs (at most ``max_refits``)."""
    import arviz_stats as azs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # recorded in the warning column
        warnings.simplefilter("ignore", RuntimeWarning)  # a chain that never moved: see r_hat
        elpd = azs.loo(fit.tree, pointwise=True, var_name=OBS)
    k_hat = np.asarray(elpd.pareto_k.values, dtype=np.float64).copy()
    elpd_i = np.asarray(elpd.elpd_i.values, dtype=np.float64).copy()
    high = np.flatnonzero(k_hat > k_threshold)
    refit = high[np.argsort(-k_hat[high])][: max(int(max_refits), 0)]
    problems = []
    s = _settings(fit, settings)
    ll = fit.tree["log_likelihood"][OBS].values.reshape(-1, fit.data.n_runs).astype(np.float64)
    lpd_full = _logmeanexp(ll, axis=0)
    chain_i = _chain_loo(fit.tree["log_likelihood"][OBS].values)  # (chain, run)
    for j, i in enumerate(refit):
        train = np.ones(fit.data.n_runs, bool)
        train[i] = False
        samples, extra, _, _ = _sample(
            fit.law,
            fit.data,
            fit.priors,
            likelihood=fit.likelihood,
            nu=fit.nu,
            init=_spread_draws(fit.draws(), s["num_chains"]),
            jitter=0.0,
            train=train,
            centre=fit.centre,
            seed=int(settings.get("seed") or 0) + 1000 + j,
            **s,
        )
        lpd, dens = _holdout_lpd(fit, samples, _subset(fit.data, ~train))
        elpd_i[i] = lpd[0]
        chain_i[:, i] = _logmeanexp(dens[..., 0], axis=1)[: chain_i.shape[0]]
        k_hat[i] = 0.0
        problem = _density_problems(dens, extra["diverging"], f"exact LOO refit without run {i}")
        if problem:
            problems.append(problem)
    left = int(np.sum(k_hat > k_threshold))
    if left:
        problems.append(
            f"{left} runs keep Pareto k > {k_threshold:g} (max_refits={max_refits}); their LOO "
            "terms are unreliable."
        )
    out = copy.deepcopy(elpd)
    if len(refit):
        n = len(elpd_i)
        out.elpd_i = elpd.elpd_i.copy(data=elpd_i)
        out.pareto_k = elpd.pareto_k.copy(data=k_hat)
        out.elpd = float(elpd_i.sum())
        out.se = float(math.sqrt(n * np.var(elpd_i)))
        out.p = float(np.sum(lpd_full - elpd_i))
    out.warning = bool(np.any(k_hat > min(k_threshold, float(elpd.good_k))))
    return {
        "elpd": out,
        "max_pareto_k": float(np.max(np.asarray(elpd.pareto_k.values))),
        "n_high_k": int(high.size),
        "n_refits": int(len(refit)),
        "k_left": left,
        "chains": chain_i.sum(axis=1),
        "problems": " ".join(problems),
    }


def _chain_loo(ll: np.ndarray) -> np.ndarray:
    """PSIS-LOO elpd of each run from each chain alone: ``(chain, run)``.

    A chain that gives no finite estimate (one that never moved) counts as no evidence: -inf.
    """
    import arviz_base as azb
    import arviz_stats as azs

    out = []
    for chain in ll:
        tree = azb.from_dict({"log_likelihood": {OBS: chain[None]}}, dims={OBS: ["run"]})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # high k: a per-chain screen only
            warnings.simplefilter("ignore", RuntimeWarning)  # a constant chain
            try:
                out.append(azs.loo(tree, pointwise=True, var_name=OBS, reff=1.0).elpd_i.values)
            except ValueError:  # arviz-stats: "All tail values are the same" (a stuck chain)
                out.append(np.full(chain.shape[-1], -np.inf))
    values = np.asarray(out, dtype=np.float64)
    return np.where(np.isfinite(values), values, -np.inf)


def _loo_table(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    import arviz_stats as azs

    with warnings.catch_warnings():
        # arviz-stats' Pareto-k and order-statistic notes are columns of the table; its use of
        # pandas' deprecated ``inplace=`` is not ours to fix
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        table = azs.compare({k: r["elpd"] for k, r in results.items()}, method="stacking")
    table = table.copy()
    table["method"] = "loo"
    for col in ("n_scored", "max_pareto_k", "n_high_k", "n_refits", "problems"):
        table[col] = [
            results[k]["elpd"].n_data_points if col == "n_scored" else results[k][col]
            for k in table.index
        ]
    table.index.name = "model"
    return table


def _lfo_variable(fits: Sequence[Fit], variable: str | None) -> str:
    if variable is not None:
        for f in fits:
            f.data.column(variable)
        return variable
    if all("compute" in f.data.table.columns for f in fits):
        return "compute"
    variables = {v for f in fits for v in f.law.variables}
    if len(variables) == 1:
        return variables.pop()
    raise ValueError(
        f"cannot choose the LFO ordering variable: the data has no 'compute' column and the "
        f"laws use {sorted(variables)}. Pass variable=<column>."
    )


def _cutoffs(
    data: ScalingData,
    variable: str,
    cutoffs: float | Sequence[float] | None,
    min_train: int,
    minimum_train: bool = False,
) -> tuple[float, ...]:
    """Validated, sorted cutoffs; the default is 2/3 of the log range of ``variable``."""
    x = data.column(variable)
    if cutoffs is None:
        lx = np.log(x)
        cut = float(np.exp(lx.min() + _LFO_FRACTION * (lx.max() - lx.min())))
        xs = np.sort(x)
        if minimum_train and np.sum(x <= cut) < min_train and len(xs) > min_train:
            cut = float(xs[min_train - 1])
        cuts: tuple[float, ...] = (cut,)
    else:
        values = np.atleast_1d(np.asarray(cutoffs, dtype=np.float64))
        cuts = tuple(sorted(float(c) for c in values))
    for c in cuts:
        n_train, n_test = int(np.sum(x <= c)), int(np.sum(x > c))
        if n_train < min_train or n_test < 1:
            raise ValueError(
                f"LFO cutoff {variable}={c:.4g} leaves {n_train} runs to fit and {n_test} to "
                f"score; it needs at least {min_train} below it and 1 above. Choose cutoffs "
                f"between {np.sort(x)[min(min_train, len(x)) - 1]:.4g} and {x.max():.4g}."
            )
    return cuts


def _lfo(
    fit: Fit, variable: str, cutoffs: Sequence[float], settings: Mapping[str, Any]
) -> dict[str, Any]:
    """Leave-future-out scores of one law: refit below each cutoff, score the next block."""
    s = _settings(fit, settings)
    x = fit.data.column(variable)
    user = _user_priors(fit)
    scored, blocks, problems, chains = [], [], [], []
    for j, cut in enumerate(cutoffs):
        upper = cutoffs[j + 1] if j + 1 < len(cutoffs) else np.inf
        train = x <= cut
        test = (x > cut) & (x <= upper)
        if not test.any():
            continue
        train_data = _subset(fit.data, train)
        priors = resolve_priors(fit.law, train_data, user, fit.likelihood)
        samples, extra, _, _ = _sample(
            fit.law,
            fit.data,
            priors,
            likelihood=fit.likelihood,
            nu=fit.nu,
            init=None,
            jitter=1.0,
            train=train,
            seed=int(settings.get("seed") or 0) + 2000 + j,
            **s,
        )
        lpd, dens = _holdout_lpd(fit, samples, _subset(fit.data, test))
        scored.append(lpd)
        chains.append(_logmeanexp(dens, axis=1).sum(axis=1))
        blocks.append(np.flatnonzero(test))
        what = f"LFO refit below {variable}={cut:.4g}, held-out densities"
        problem = _density_problems(dens, extra["diverging"], what)
        if problem:
            problems.append(problem)
    return {
        "lpd": np.concatenate(scored),
        "runs": np.concatenate(blocks),
        "chains": np.sum(chains, axis=0),
        "n_refits": len(scored),
        "problems": " ".join(problems),
    }


def _lfo_table(
    scores: Mapping[str, Mapping[str, Any]], cutoffs: Sequence[float], variable: str
) -> pd.DataFrame:
    names = list(scores)
    lpd = np.stack([scores[k]["lpd"] for k in names], axis=1)
    weights = stacking_weights(lpd)
    elpd = lpd.sum(axis=0)
    order = np.argsort(-elpd)
    best = order[0]
    n = lpd.shape[0]
    rows = {}
    for rank, j in enumerate(order):
        diff = lpd[:, best] - lpd[:, j]
        rows[names[j]] = {
            "rank": rank,
            "elpd": float(elpd[j]),
            "p": np.nan,
            "elpd_diff": float(diff.sum()),
            "weight": float(weights[j]),
            "se": float(math.sqrt(n * np.var(lpd[:, j]))),
            "dse": float(math.sqrt(n * np.var(diff))),
            "warning": bool(scores[names[j]]["problems"]),
            "method": "lfo",
            "n_scored": n,
            "n_refits": scores[names[j]]["n_refits"],
            "problems": scores[names[j]]["problems"],
            "cutoffs": ", ".join(f"{variable}={c:.4g}" for c in cutoffs),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return table


def _points(at: pd.DataFrame | Mapping[str, Any], fits: Any) -> ScalingData:
    frame = pd.DataFrame(at).copy() if not isinstance(at, pd.DataFrame) else at.copy()
    if "n_tokens" not in frame and {"compute", "n_params"} <= set(frame.columns):
        frame["n_tokens"] = frame["compute"] / (6.0 * frame["n_params"])
    if "compute" not in frame and {"n_tokens", "n_params"} <= set(frame.columns):
        frame["compute"] = 6.0 * frame["n_params"] * frame["n_tokens"]
    frame["loss"] = 1.0  # a placeholder: only the inputs are used
    points = ScalingData(frame.reset_index(drop=True), "points")
    for f in fits:
        for v in f.law.variables:
            values = points.column(v)
            if not np.all(np.isfinite(values) & (values > 0)):
                raise DataError(f"{v!r} must be positive and finite at every point.")
    return points


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    raw = weights / weights.sum() * total
    counts = np.floor(raw).astype(int)
    short = total - counts.sum()
    counts[np.argsort(-(raw - counts))[:short]] += 1
    return counts


def _cold_fit(
    law: Law,
    data: ScalingData,
    priors: Mapping[str, Prior],
    likelihood: str,
    nu: float,
    settings: Mapping[str, int],
) -> Fit:
    """NUTS fit from jittered prior-median starts (no MAP search), sharing compiled samplers."""
    names = {p.name for p in law.params} | {"sigma"}
    priors_ = resolve_priors(law, data, {k: v for k, v in priors.items() if k in names}, likelihood)
    samples, extra, inputs, model = _sample(
        law,
        data,
        priors_,
        likelihood=likelihood,
        nu=nu,
        init=None,
        jitter=1.0,
        num_chains=settings["num_chains"],
        num_warmup=settings["num_warmup"],
        num_samples=settings["num_samples"],
        target_accept=settings["target_accept"],
        seed=settings["seed"],
    )
    attrs = {
        **_fit_attrs(
            law,
            data,
            priors_,
            likelihood,
            nu,
            inputs,
            settings["seed"],
            settings["num_warmup"],
            settings["num_chains"],
            settings["target_accept"],
        ),
        "init": "jittered prior medians, best of 32 candidates per chain",
    }
    return _make_fit(samples, extra, model, inputs, data, law, priors_, attrs)


def _quietly(compute: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant chains give NaN, not noise
        return compute()


def _pointwise_problems(fit: Fit) -> str:
    """Convergence of a fit's per-run log likelihoods: label-invariant, so it judges the elpd."""
    ll = fit.tree["log_likelihood"][OBS].values
    diverging = fit.tree["sample_stats"]["diverging"].values
    return _density_problems(ll, diverging, "per-run log likelihoods")


def _break_table(
    fits: Mapping[int, Fit],
    loo: Mapping[int, Mapping[str, Any]],
    lfo: Mapping[int, Mapping[str, Any]],
) -> pd.DataFrame:
    ks = sorted(fits)
    pointwise = {k: _pointwise_problems(fits[k]) for k in ks}
    values = {
        "loo": np.stack([np.asarray(loo[k]["elpd"].elpd_i.values, np.float64) for k in ks], 1),
        "lfo": np.stack([lfo[k]["lpd"] for k in ks], axis=1),
    }
    columns = {name: _elpd_columns(v, name) for name, v in values.items()}
    rows = {}
    for col, k in enumerate(ks):
        fit = fits[k]
        param_problems = " ".join(fit.problems())
        problems = [
            f"fit: {param_problems}" if param_problems else "",
            pointwise[k],
            loo[k]["problems"],
            lfo[k]["problems"],
        ]
        rows[k] = {
            "law": fit.law.name,
            "n_params": len(fit.law.params) + 1,
            **{c: v[col] for c, v in columns["loo"].items()},
            "elpd_loo_worst_chain": float(np.min(loo[k]["chains"])),
            "p_loo": float(loo[k]["elpd"].p),
            "max_pareto_k": loo[k]["max_pareto_k"],
            "n_refits": loo[k]["n_refits"],
            "warning_loo": bool(pointwise[k] or loo[k]["k_left"]),
            **{c: v[col] for c, v in columns["lfo"].items()},
            "elpd_lfo_worst_chain": float(np.min(lfo[k]["chains"])),
            "n_lfo": values["lfo"].shape[0],
            "warning_lfo": bool(pointwise[k] or lfo[k]["problems"]),
            "problems": " ".join(p for p in problems if p),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "breaks"
    table.attrs["pointwise"] = values
    return table


def _elpd_columns(pointwise: np.ndarray, name: str) -> dict[str, np.ndarray]:
    """Elpd, its SE, and the difference (best minus this) with its SE."""
    n = pointwise.shape[0]
    totals = pointwise.sum(axis=0)
    diff = pointwise[:, [int(np.argmax(totals))]] - pointwise
    return {
        f"elpd_{name}": totals,
        f"se_{name}": np.sqrt(n * np.var(pointwise, axis=0)),
        f"elpd_diff_{name}": diff.sum(axis=0),
        f"dse_{name}": np.sqrt(n * np.var(diff, axis=0)),
    }


def _select(
    table: pd.DataFrame, metric: str, threshold_se: float, threshold_nats: float
) -> tuple[int, int]:
    """The number of breaks by the rule, and the number the pooled estimates alone give."""
    pointwise = table.attrs["pointwise"][metric]
    pooled = table[f"elpd_{metric}"].to_numpy()
    worst = table[f"elpd_{metric}_worst_chain"].to_numpy()
    cautious = np.where(table[f"warning_{metric}"].to_numpy(), np.minimum(pooled, worst), pooled)

    def rule(evidence: np.ndarray) -> int:
        for k in range(len(pooled)):
            beaten = False
            for j in range(k + 1, len(pooled)):
                dse = math.sqrt(len(pointwise) * np.var(pointwise[:, j] - pointwise[:, k]))
                margin = max(threshold_se * dse, threshold_nats)
                beaten |= evidence[j] - pooled[k] > margin
            if not beaten:
                return int(table.index[k])
        return int(table.index[-1])  # pragma: no cover - the last model is never beaten

    return rule(cautious), rule(pooled)


def _locations(fit: Fit | None, variable: str) -> pd.DataFrame:
    columns = ["median", "q5", "q95"]
    for side in ("exponent_before", "exponent_after"):
        columns += [side, f"{side}_q5", f"{side}_q95"]
    if fit is None:
        frame = pd.DataFrame(columns=columns, dtype=float)
        frame.index.name = "break"
        return frame
    d = fit.draws()
    k = int(fit.law.options["breaks"])
    slope = d["c0"].copy()
    rows = {}
    for i in range(1, k + 1):
        before = slope.copy()
        slope = slope + d[f"c{i}"]
        loc = d[f"d{i}"]
        row = dict(zip(columns[:3], _q(loc), strict=True))
        for side, v in (("exponent_before", before), ("exponent_after", slope)):
            row.update(dict(zip((side, f"{side}_q5", f"{side}_q95"), _q(v), strict=True)))
        rows[f"break {i}"] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")[columns]
    frame.index.name = "break"
    frame.attrs["variable"] = variable
    return frame


def _q(v: np.ndarray) -> list[float]:
    return [float(x) for x in np.quantile(v, [0.5, 0.05, 0.95])]


def _warn_breaks(
    table: pd.DataFrame, fits: Mapping[int, Fit], n_breaks: int, n_pooled: int, metric: str
) -> None:
    messages = []
    if n_pooled != n_breaks:
        messages.append(
            f"the pooled {metric.upper()} estimates favour {n_pooled} breaks, but the chains "
            f"of that model disagree (see summary()['problems']); by its worst chain the "
            f"evidence supports {n_breaks}."
        )
    if n_breaks:
        reported = ["c0", *(f"{c}{i}" for i in range(1, n_breaks + 1) for c in "cd")]
        selected = _param_problems(fits[n_breaks], reported)
        if selected:
            messages.append(f"the selected {n_breaks}-break model: {selected}")
    if messages:
        warnings.warn(
            "break detection may not be trustworthy: " + " ".join(messages) + " Increase "
            "num_warmup and num_samples, or set priors that identify the breaks.",
            ConvergenceWarning,
            stacklevel=3,
        )


def _param_problems(fit: Fit, names: Sequence[str]) -> str:
    from bayescale.diagnostics import convergence_problems

    return " ".join(convergence_problems(fit.tree, var_names=list(names)))

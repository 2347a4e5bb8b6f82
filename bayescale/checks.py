r"""Posterior predictive checks of new runs, in-sample checks, and updating a fit with new runs.

``check(fit, new_runs) -> Check`` asks of each run that was not in the fit: *did the law predict
it?* For every new run it gives the predictive percentile (PIT), a standardised residual, the
two-sided tail probability, the log predictive density and whether the run falls outside the
50%, 90% and 99% predictive intervals; over all new runs, the coverage of each interval and a
calibration test of the PITs; and a plain verdict per run. ``ppc(fit)`` is the same check of
the fit's own runs, out of sample by PSIS-LOO (LOO-PIT), with replicated data.
``update(fit, new_runs) -> Fit`` refits the law to the old and the new runs together, starting
the sampler from the previous posterior.

Notes
-----
The predictive distribution of the log loss of a run at inputs ``x`` is the mixture over
posterior draws ``s = 1..S`` of the fit's noise model,

.. math::

    p(\log L \mid x) = \frac{1}{S} \sum_s t_\nu\bigl(\log L;\ \log f(x; \theta_s),
    \sigma_s\bigr)

(a normal in place of the Student-t for ``likelihood="normal"``). Every quantity of a check is
computed from this mixture exactly, without Monte Carlo noise: the PIT is the mixture CDF at the
observed log loss (the expected fraction of predictive draws below it), the intervals are
equal-tailed mixture quantiles found by safeguarded Newton steps, and the log predictive density is
``logsumexp_s log t_nu(...) - log S``. Densities are of the log loss, as in the fit's
``log_likelihood`` group.
"""

from __future__ import annotations

import functools
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bayescale.data import ScalingData, from_frame
from bayescale.diagnostics import warn_convergence
from bayescale.errors import BayescaleError, DataError
from bayescale.laws import Law
from bayescale.model import OBS, build_model, model_inputs
from bayescale.priors import Prior, Priors, default_priors, resolve_priors

if TYPE_CHECKING:
    from bayescale.fit import Fit

__all__ = ["Check", "VERDICTS", "check", "ppc", "update"]

#: The three verdicts of a check, in the order low loss, as predicted, high loss.
VERDICTS = ("better than predicted", "as predicted", "worse than predicted")
_LEVELS = (0.5, 0.9, 0.99)
_NEWTON_STEPS = 40  # most safeguarded Newton steps per mixture quantile (5-8 are typical)
_NUMERIC_STATS = ("diverging", "num_steps", "accept_prob", "energy", "potential_energy")


# ---------------------------------------------------------------------------------- result


@dataclass(frozen=True)
class Check:
    """A posterior predictive check of runs against a fit.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per run: its inputs and ``loss``; the predictive ``median`` and the interval
        bounds ``q<lo>``/``q<hi>`` of each level (loss units); ``pit``, ``z`` (standardised
        residual of the log loss), ``p_two_sided``, ``lpd`` (log predictive density of the log
        loss), ``outside_<level>`` flags and the ``verdict``. `ppc` adds ``pareto_k``.
    coverage : pandas.DataFrame
        One row per interval level: ``nominal``, ``n_inside``, ``n``, ``coverage`` and the
        exact two-sided binomial ``p_value`` of the observed count under the nominal rate.
    calibration : dict
        The uniformity test of the PITs: ``test`` (Kolmogorov-Smirnov), ``statistic``,
        ``p_value``, ``n``, and ``band`` (the half-width of the 95% Dvoretzky-Kiefer-Wolfowitz
        band of the PIT ECDF, drawn by `bayescale.plots.plot_pit`).
    kind : str
        ``"new runs"`` (`check`) or ``"loo"`` (`ppc`: leave-one-out PITs of the fit's runs).
    variables : tuple of str
        The law's input variables (columns of ``table``).
    tree : xarray.DataTree or None
        For `ppc`: the fit's tree with a ``posterior_predictive`` group of replicated losses.
    """

    table: pd.DataFrame
    coverage: pd.DataFrame
    calibration: Mapping[str, Any]
    kind: str
    variables: tuple[str, ...]
    tree: Any = None

    def summary(self) -> pd.DataFrame:
        """The per-run table (see ``table``), a copy."""
        return self.table.copy()

    def problems(self) -> list[str]:
        """Runs outside the verdict interval and a failed calibration test, as sentences."""
        out = []
        counts = self.table["verdict"].value_counts()
        for verdict in (VERDICTS[0], VERDICTS[2]):
            if counts.get(verdict, 0):
                out.append(f"{counts[verdict]} of {len(self.table)} runs {verdict}.")
        if self.calibration["p_value"] < 0.01:
            out.append(
                f"the PITs are not uniform (KS p = {self.calibration['p_value']:.2g}): the "
                "predictive distribution is miscalibrated for these runs."
            )
        if "pareto_k" in self.table and (self.table["pareto_k"] > 0.7).any():
            n_bad = int((self.table["pareto_k"] > 0.7).sum())
            out.append(f"{n_bad} runs have Pareto k > 0.7: their LOO-PITs are unreliable.")
        return out

    def __repr__(self) -> str:
        cov = ", ".join(
            f"{row.nominal:.0%}: {row.coverage:.0%}" for row in self.coverage.itertuples()
        )
        head = (
            f"Check(kind={self.kind!r}, runs={len(self.table)}, coverage {cov}, "
            f"KS p={self.calibration['p_value']:.3g})"
        )
        problems = self.problems()
        tail = "\n  " + " ".join(problems) if problems else "\n  every run as predicted"
        return head + tail

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(repr(self))}</pre>" + self.table.to_html(
            float_format=lambda x: f"{x:.4g}"
        )


# --------------------------------------------------------------------------- public verbs


def check(
    fit: Fit,
    new_runs: pd.DataFrame | ScalingData,
    *,
    levels: Sequence[float] = _LEVELS,
    verdict_level: float = 0.9,
    columns: Mapping[str, str] | None = None,
    dropna: bool = False,
) -> Check:
    """Check runs that were not in the fit against the fit's posterior predictive distribution.

    Parameters
    ----------
    fit : Fit
        The fitted law.
    new_runs : DataFrame or ScalingData
        One run per row with the law's input columns and ``loss`` (see
        `bayescale.data.from_frame`); never modified.
    levels : sequence of float, default (0.5, 0.9, 0.99)
        Probability masses of the equal-tailed predictive intervals reported and counted.
    verdict_level : float, default 0.9
        The interval that decides the verdict (need not be one of ``levels``).
    columns : mapping, optional
        Canonical name -> your column name.
    dropna : bool, default False
        Drop invalid runs instead of raising.

    Returns
    -------
    Check
        Per-run table, interval coverage and the calibration test; ``kind="new runs"``.

    Raises
    ------
    DataError
        If ``new_runs`` lacks a column the law needs or has invalid values.
    ValueError
        If a level is not in (0, 1), or the fit is a single-draw Huber fit.

    Notes
    -----
    With ``S`` posterior draws and ``F`` the noise CDF (Student-t with the fit's ``nu``, or
    normal), the PIT of a run with log loss ``y`` is ``mean_s F((y - mu_s) / sigma_s)`` and
    its two-sided tail probability ``2 min(PIT, 1 - PIT)``. The standardised residual is
    ``z = (y - m) / sd`` with the predictive mean ``m = mean_s mu_s`` and variance
    ``var_s(mu_s) + mean_s(sigma_s^2) nu / (nu - 2)`` (NaN for ``nu <= 2``, whose variance is
    infinite). A run is outside the interval of level ``l`` when its PIT is below ``(1 - l) /
    2`` or above ``(1 + l) / 2``.

    Verdict rule, at ``verdict_level`` (0.9 by default): a run whose loss is below its 90%
    predictive interval (PIT < 0.05) is "better than predicted", one above it (PIT > 0.95)
    is "worse than predicted", every other run is "as predicted". For runs drawn from the
    predictive distribution the two flags each occur with probability ``(1 -
    verdict_level) / 2``.

    The calibration test is a Kolmogorov-Smirnov test of the PITs against U(0, 1); it treats
    the runs as independent, which they are only approximately (they share the posterior),
    so read it as a screen, not an exact test, when the posterior is wide.

    Examples
    --------
    >>> import bayescale as bs
    >>> runs = bs.simulate("power_law", seed=0)
    >>> fit = bs.fit(runs.iloc[:25], "power_law", method="map", seed=0)
    >>> result = bs.check(fit, runs.iloc[25:])  # the 5 largest runs, held out
    >>> result.coverage["nominal"].tolist()
    [0.5, 0.9, 0.99]
    >>> result.table["verdict"].value_counts().sum()
    np.int64(5)
    """
    levels_ = _validate_levels(levels, verdict_level)
    draws = _require_draws(fit, "check")
    runs = _as_runs(new_runs, fit.law, columns, dropna)
    mu, sigma = _location_scale(fit.law, draws, runs)
    y = np.log(runs.loss)
    dist = _Noise(fit.likelihood, fit.nu)
    pit = np.mean(dist.cdf((y[None, :] - mu) / sigma), axis=0)
    lpd = _logmeanexp(dist.logpdf(y[None, :], mu, sigma), axis=0)
    mean, sd = _moments(mu, sigma, dist)
    probs = sorted({0.5, *((1 - lv) / 2 for lv in levels_), *((1 + lv) / 2 for lv in levels_)})
    quantiles = _mixture_quantiles(mu, sigma, dist, np.asarray(probs))
    table = _inputs_frame(runs, fit.law)
    for p, q in zip(probs, quantiles, strict=True):
        table["median" if p == 0.5 else _qname(p)] = np.exp(q)
    _fill_scores(table, pit, (y - mean) / sd, lpd, levels_, verdict_level)
    return _result(table, levels_, "new runs", fit.law.variables)


def ppc(
    fit: Fit,
    *,
    levels: Sequence[float] = _LEVELS,
    verdict_level: float = 0.9,
    seed: int = 0,
) -> Check:
    """In-sample posterior predictive check of a fit: replicated data and LOO-PIT.

    Parameters
    ----------
    fit : Fit
        A NUTS or MAP fit (it needs a ``log_likelihood`` group).
    levels : sequence of float, default (0.5, 0.9, 0.99)
        Levels of the leave-one-out predictive intervals.
    verdict_level : float, default 0.9
        The interval that decides the verdict (see `check`).
    seed : int, default 0
        Seed of the replicated data (one replicate per posterior draw).

    Returns
    -------
    Check
        ``kind="loo"``: one row per run of the fit, with the leave-one-out predictive
        intervals (PSIS-weighted quantiles of the replicated losses), the LOO-PIT
        (`arviz_stats.loo_pit`), the pointwise LOO elpd as ``lpd`` and the ``pareto_k`` of each
        run; ``tree`` is the fit's tree with a ``posterior_predictive`` group (``loss`` over
        ``chain, draw, run``).

    Raises
    ------
    ValueError
        If the fit has no ``log_likelihood`` group (a Huber fit).

    Notes
    -----
    Leave-one-out makes the in-sample check honest: a run is judged by the posterior of the
    other runs, so a flexible law cannot pass by fitting every run. Runs with ``pareto_k >
    0.7`` have unreliable leave-one-out quantities; refit without them (or use
    `bayescale.compare` with exact refits) before trusting their rows.

    References
    ----------
    Vehtari, Gelman and Gabry (2017), "Practical Bayesian model evaluation using leave-one-out
    cross-validation and WAIC", Statistics and Computing 27, doi:10.1007/s11222-016-9696-4.
    """
    import warnings

    import arviz_stats as azs
    import xarray as xr

    levels_ = _validate_levels(levels, verdict_level)
    if "log_likelihood" not in fit.tree.children:
        raise ValueError(
            f"ppc needs posterior draws with a log_likelihood group; the fit has method="
            f"{fit.method!r}. Fit with method='nuts' (or 'map')."
        )
    post = fit.posterior
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    draws = fit.draws()
    mu, sigma = _location_scale(fit.law, draws, fit.data)
    dist = _Noise(fit.likelihood, fit.nu)
    rng = np.random.default_rng(seed)
    rep = mu + sigma * dist.sample(rng, mu.shape)
    tree = fit.tree.copy()
    run = fit.tree["observed_data"]["run"].values
    coords = {"chain": post["chain"].values, "draw": post["draw"].values, "run": run}
    replicated = xr.Dataset(
        {OBS: (("chain", "draw", "run"), np.exp(rep).reshape(n_chain, n_draw, -1))},
        coords=coords,
    )
    tree["posterior_predictive"] = xr.DataTree(replicated)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loo = azs.loo(tree, pointwise=True, var_name=OBS)
        pit = azs.loo_pit(tree, var_names=[OBS], random_state=seed)[OBS].values
        probs = sorted({0.5, *((1 - lv) / 2 for lv in levels_), *((1 + lv) / 2 for lv in levels_)})
        q = azs.loo_expectations(tree, var_name=OBS, kind="quantile", probs=probs)[0]
    del caught  # the Pareto-k warning is reported per run in the pareto_k column
    y = np.log(fit.data.loss)
    mean, sd = _moments(mu, sigma, dist)
    table = _inputs_frame(fit.data, fit.law)
    qv = np.asarray(q.transpose("quantile", ...).values if "quantile" in q.dims else q.values)
    for p, values in zip(probs, qv, strict=True):
        table["median" if p == 0.5 else _qname(p)] = values
    _fill_scores(table, pit, (y - mean) / sd, loo.elpd_i.values, levels_, verdict_level)
    table["pareto_k"] = np.asarray(loo.pareto_k.values, dtype=np.float64)
    return _result(table, levels_, "loo", fit.law.variables, tree)


def update(
    fit: Fit,
    new_runs: pd.DataFrame | ScalingData,
    *,
    num_chains: int | None = None,
    num_warmup: int | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    columns: Mapping[str, str] | None = None,
    dropna: bool = False,
) -> Fit:
    """Refit a law to its old runs and new ones, starting from the previous posterior.

    Parameters
    ----------
    fit : Fit
        The previous fit (NUTS or MAP).
    new_runs : DataFrame or ScalingData
        The new runs, with the law's input columns and ``loss``; never modified.
    num_chains, num_warmup, num_samples : int, optional
        NUTS settings; default those of the previous fit (num_warmup 500 for a MAP fit).
    seed : int, default 0
        Seed of the sampler.
    columns : mapping, optional
        Canonical name -> your column name, for ``new_runs``.
    dropna : bool, default False
        Drop invalid new runs instead of raising.

    Returns
    -------
    Fit
        A NUTS fit to the old and new runs. Its data has a ``batch`` column (0 for the
        original runs, then one more per update) and its tree's attributes record the
        provenance: ``data_source`` of both tables and ``provenance``, a JSON list with one
        entry per batch (source, number of runs, and the seed and method of the fit it
        updated).

    Raises
    ------
    DataError
        If the new runs lack a column the law needs or have invalid values.
    ValueError
        If the previous fit is a Huber point fit.

    Warns
    -----
    ConvergenceWarning
        As `bayescale.fit`.

    Notes
    -----
    The result is the posterior of the law given all runs under the priors the user set for
    the previous fit (the data-dependent defaults are recomputed from all runs, as
    `bayescale.fit` would). Only the sampler's starting point comes from the previous
    posterior: each chain starts at a different previous draw, re-expressed in the new
    parameterisation (amplitudes re-centred, break locations re-scaled to the new range).
    That skips the MAP search of `bayescale.fit` and starts the chains in the right mode.
    """
    _require_draws(fit, "update")
    new = _as_runs(new_runs, fit.law, columns, dropna)
    combined = _combine(fit.data, new)
    user = _user_priors(fit)
    priors = resolve_priors(fit.law, combined, user, fit.likelihood)
    post = fit.posterior
    chains = int(num_chains or (post.sizes["chain"] if fit.method == "nuts" else 4))
    warmup = int(num_warmup or fit.tree.attrs.get("num_warmup", 500))
    samples = int(num_samples or (post.sizes["draw"] if fit.method == "nuts" else 1000))
    init = _spread_draws(fit.draws(), chains)
    samples_, extra, inputs, model = _sample(
        fit.law,
        combined,
        priors,
        likelihood=fit.likelihood,
        nu=fit.nu,
        init=init,
        jitter=0.0,
        num_chains=chains,
        num_warmup=warmup,
        num_samples=samples,
        seed=seed,
    )
    provenance = json.loads(fit.tree.attrs.get("provenance", "[]")) or [
        {"batch": 0, "source": fit.data.source, "n_runs": fit.data.n_runs}
    ]
    provenance.append(
        {
            "batch": int(combined.table["batch"].max()),
            "source": new.source,
            "n_runs": new.n_runs,
            "updated_fit_seed": int(fit.tree.attrs.get("seed", -1)),
            "updated_fit_method": fit.method,
        }
    )
    attrs = {
        **_fit_attrs(
            fit.law, combined, priors, fit.likelihood, fit.nu, inputs, seed, warmup, chains
        ),
        "init": "warm start from the previous posterior",
        "provenance": json.dumps(provenance),
    }
    result = _make_fit(samples_, extra, model, inputs, combined, fit.law, priors, attrs)
    warn_convergence(result.problems(), stacklevel=2)
    return result


# -------------------------------------------------------------------- predictive helpers


class _Noise:
    """The fit's noise distribution of log loss, standardised (location 0, scale 1)."""

    def __init__(self, likelihood: str, nu: float) -> None:
        self.likelihood = likelihood
        self.nu = float(nu)

    def cdf(self, z: np.ndarray) -> np.ndarray:
        from scipy import special

        if self.likelihood == "normal":
            return special.ndtr(z)
        if self.nu == 4.0:  # closed form, 2x faster than stdtr (the default nu)
            x = z / np.sqrt(4.0 + z * z)
            return 0.5 + 0.75 * x - 0.25 * x**3
        if self.nu == 1.0:
            return 0.5 + np.arctan(z) / math.pi
        if self.nu == 2.0:
            return 0.5 + z / (2.0 * np.sqrt(2.0 + z * z))
        return special.stdtr(self.nu, z)

    def ppf(self, p: np.ndarray) -> np.ndarray:
        from scipy import special

        if self.likelihood == "normal":
            return special.ndtri(p)
        return special.stdtrit(self.nu, p)

    def pdf(self, z: np.ndarray) -> np.ndarray:
        if self.likelihood == "normal":
            return np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
        nu = self.nu
        log_c = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
        return np.exp(log_c - (nu + 1) / 2 * np.log1p(z**2 / nu))

    def logpdf(self, y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        from scipy import stats

        if self.likelihood == "normal":
            return stats.norm.logpdf(y, mu, sigma)
        return stats.t.logpdf(y, self.nu, mu, sigma)

    def variance(self) -> float:
        if self.likelihood == "normal":
            return 1.0
        return self.nu / (self.nu - 2.0) if self.nu > 2 else math.inf

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        if self.likelihood == "normal":
            return rng.standard_normal(shape)
        return rng.standard_t(self.nu, size=shape)


def _location_scale(
    law: Law, draws: Mapping[str, np.ndarray], runs: ScalingData
) -> tuple[np.ndarray, np.ndarray]:
    """Law mean ``mu`` (draw, run) of log loss and noise scale ``sigma`` (draw, 1), float64."""
    import jax.numpy as jnp

    params = {k: jnp.asarray(draws[k])[:, None] for k in law.param_names}
    logx = {v: jnp.asarray(np.log(runs.column(v)))[None, :] for v in law.variables}
    mu = np.asarray(law.fn(params, logx), dtype=np.float64)
    mu = np.broadcast_to(mu, (len(draws["sigma"]), runs.n_runs))
    return mu, np.asarray(draws["sigma"], dtype=np.float64)[:, None]


def _logmeanexp(a: np.ndarray, axis: int) -> np.ndarray:
    from scipy.special import logsumexp

    return logsumexp(a, axis=axis) - math.log(a.shape[axis])


def _moments(mu: np.ndarray, sigma: np.ndarray, dist: _Noise) -> tuple[np.ndarray, np.ndarray]:
    mean = mu.mean(axis=0)
    noise = dist.variance()
    if not math.isfinite(noise):  # nu <= 2: the predictive variance is infinite
        return mean, np.full_like(mean, np.nan)
    return mean, np.sqrt(mu.var(axis=0) + float(np.mean(sigma**2)) * noise)


def _mixture_quantiles(
    mu: np.ndarray, sigma: np.ndarray, dist: _Noise, probs: np.ndarray
) -> np.ndarray:
    """Quantiles (prob, run) of the mixture over draws: safeguarded Newton on its CDF.

    Each component's quantile brackets the mixture's; Newton steps that leave the bracket are
    replaced by bisection, and the bracket shrinks at every step, so the iteration converges.
    """
    zq = dist.ppf(probs)[:, None]  # (prob, 1)
    comp_lo = (mu.min(axis=0)[None] + sigma.min() * zq, mu.max(axis=0)[None] + sigma.max() * zq)
    lo, hi = np.minimum(*comp_lo), np.maximum(*comp_lo)
    mean, sd = _moments(mu, sigma, _Noise("normal", 1.0))
    q = np.clip(mean[None] + sd[None] * zq, lo, hi)
    target = probs[:, None]
    for _step in range(_NEWTON_STEPS):
        z = (q[:, None, :] - mu[None]) / sigma[None]  # (prob, draw, run)
        err = np.mean(dist.cdf(z), axis=1) - target
        dens = np.mean(dist.pdf(z) / sigma[None], axis=1)
        lo, hi = np.where(err < 0, q, lo), np.where(err < 0, hi, q)
        done = np.abs(err) < 1e-12
        if done.all():
            break
        step = q - err / np.maximum(dens, 1e-300)
        inside = (step >= lo) & (step <= hi)
        q = np.where(done, q, np.where(inside, step, 0.5 * (lo + hi)))
    return q


def _fill_scores(
    table: pd.DataFrame,
    pit: np.ndarray,
    z: np.ndarray,
    lpd: np.ndarray,
    levels: tuple[float, ...],
    verdict_level: float,
) -> None:
    pit = np.clip(np.asarray(pit, dtype=np.float64), 0.0, 1.0)
    table["pit"] = pit
    table["z"] = z
    table["p_two_sided"] = 2 * np.minimum(pit, 1 - pit)
    table["lpd"] = lpd
    for level in levels:
        table[f"outside_{_pct(level)}"] = (pit < (1 - level) / 2) | (pit > (1 + level) / 2)
    verdict = np.full(len(table), VERDICTS[1], dtype=object)
    verdict[pit < (1 - verdict_level) / 2] = VERDICTS[0]
    verdict[pit > (1 + verdict_level) / 2] = VERDICTS[2]
    table["verdict"] = verdict


def _result(
    table: pd.DataFrame,
    levels: tuple[float, ...],
    kind: str,
    variables: tuple[str, ...],
    tree: Any = None,
) -> Check:
    from scipy import stats

    n = len(table)
    rows = []
    for level in levels:
        inside = int((~table[f"outside_{_pct(level)}"]).sum())
        rows.append(
            {
                "nominal": level,
                "n_inside": inside,
                "n": n,
                "coverage": inside / n,
                "p_value": stats.binomtest(inside, n, level).pvalue,
            }
        )
    coverage = pd.DataFrame(rows, index=pd.Index([_pct(lv) for lv in levels], name="level"))
    ks = stats.kstest(table["pit"].to_numpy(), "uniform")
    calibration = {
        "test": "Kolmogorov-Smirnov against U(0, 1)",
        "statistic": float(ks.statistic),
        "p_value": float(ks.pvalue),
        "n": n,
        "band": math.sqrt(math.log(2 / 0.05) / (2 * n)),
    }
    table.index.name = "run"
    return Check(table, coverage, calibration, kind, tuple(variables), tree)


def _inputs_frame(runs: ScalingData, law: Law) -> pd.DataFrame:
    table = pd.DataFrame({v: runs.column(v) for v in law.variables})
    table["loss"] = runs.loss
    return table


def _validate_levels(levels: Sequence[float], verdict_level: float) -> tuple[float, ...]:
    out = tuple(sorted({float(v) for v in levels}))
    for v in (*out, float(verdict_level)):
        if not 0 < v < 1:
            raise ValueError(
                f"interval levels must lie strictly between 0 and 1; received {v!r}. "
                "For example levels=(0.5, 0.9, 0.99)."
            )
    if not out:
        raise ValueError("levels is empty; pass at least one level, for example (0.9,).")
    return out


def _require_draws(fit: Fit, verb: str) -> dict[str, np.ndarray]:
    draws = fit.draws()
    if "sigma" not in draws or len(draws["sigma"]) < 2:
        raise ValueError(
            f"{verb} needs posterior draws with a noise scale; the fit has method="
            f"{fit.method!r}. Fit with method='nuts' (or 'map')."
        )
    return draws


def _as_runs(
    runs: pd.DataFrame | ScalingData, law: Law, columns: Mapping[str, str] | None, dropna: bool
) -> ScalingData:
    data = from_frame(runs, columns=columns, dropna=dropna)
    for v in law.variables:
        data.column(v)  # raises a DataError naming the missing column
        bad = ~(np.isfinite(data.column(v)) & (data.column(v) > 0))
        if bad.any():
            raise DataError(
                f"{v!r} has {int(bad.sum())} non-positive or non-finite values in the new runs "
                f"(rows {list(data.table.index[bad])[:8]}). Drop them or pass dropna=True."
            )
    return data


def _pct(level: float) -> str:
    return f"{level * 100:g}"


def _qname(p: float) -> str:
    return f"q{p * 100:.10g}"


# ----------------------------------------------------------------- sampling (no MAP search)


def _user_priors(fit: Fit) -> dict[str, Prior]:
    """The priors of a fit that differ from the defaults for its data (the user's choices)."""
    defaults = default_priors(fit.law, fit.data, fit.likelihood)
    return {k: p for k, p in fit.priors.items() if defaults.get(k) != p}


def _combine(old: ScalingData, new: ScalingData) -> ScalingData:
    """Old and new runs in one table with a ``batch`` column (the caller's tables untouched)."""
    old_t = old.table.copy()
    if "batch" not in old_t:
        old_t["batch"] = 0
    new_t = new.table.copy()
    new_t["batch"] = int(old_t["batch"].max()) + 1
    shared = [c for c in old_t.columns if c in new_t.columns]
    table = pd.concat([old_t[shared], new_t[shared]], ignore_index=True)
    return ScalingData(table=table, source=f"{old.source} + {new.source}")


def _spread_draws(draws: Mapping[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """``k`` draws spread evenly over the flattened posterior (one starting point per chain)."""
    n = len(next(iter(draws.values())))
    idx = np.linspace(0, n - 1, k).round().astype(int)
    return {name: np.asarray(v, np.float64)[idx] for name, v in draws.items()}


def _typical(prior: Prior) -> float:
    """A central value of a prior (its median where simple), for cold starts."""
    v = dict(prior.params)
    fam = prior.family
    if fam in ("Normal", "StudentT"):
        return v["loc"]
    if fam == "LogNormal":
        return math.exp(v["loc"])
    if fam == "HalfNormal":
        return 0.6745 * v["scale"]
    if fam == "HalfCauchy":
        return v["scale"]
    if fam == "Uniform":
        return 0.5 * (v["low"] + v["high"])
    if fam == "LogUniform":
        return math.sqrt(v["low"] * v["high"])
    if fam == "Gamma":
        return v["concentration"] / v["rate"]
    if fam == "Exponential":
        return math.log(2) / v["rate"]
    if fam == "TruncatedNormal":
        return min(max(v["loc"], v["low"]), v["high"]) if v["low"] < v["high"] else v["loc"]
    if fam == "Beta":
        return v["concentration1"] / (v["concentration1"] + v["concentration0"])
    raise BayescaleError(f"no typical value for prior family {fam!r}")  # pragma: no cover


def _inside(prior: Prior, value: np.ndarray) -> np.ndarray:
    """``value`` moved just inside the support of ``prior`` (for warm starts)."""
    v = dict(prior.params)
    value = np.asarray(value, np.float64)
    if prior.family in ("Uniform", "LogUniform", "TruncatedNormal"):
        lo, hi = v["low"], v["high"]
        pad = 1e-3 * (hi - lo)
        return np.clip(value, lo + pad, hi - pad)
    if prior.family == "Beta":
        return np.clip(value, 1e-3, 1 - 1e-3)
    if prior.family in ("Normal", "StudentT"):
        return value
    return np.maximum(value, 1e-12)


def _latent_start(
    law: Law,
    priors: Priors,
    centre: Mapping[str, float],
    params: Mapping[str, np.ndarray] | None,
    num_chains: int,
) -> dict[str, np.ndarray]:
    """Values of the model's sample sites, one row per chain.

    From ``params`` (reported parameters, papers' units) when given, else each prior's typical
    value: amplitudes and scales are re-centred at ``centre`` and break locations expressed
    as the Dirichlet weights of their positions in the prior's log range.
    """
    out: dict[str, np.ndarray] = {}

    def value(name: str) -> np.ndarray:
        if params is None:
            return np.full(num_chains, _typical(priors[name]))
        return np.asarray(params[name], np.float64)

    locations = [p for p in law.params if p.role == "location"]
    for p in law.params:
        if p.role == "location":
            continue
        if p.role in ("amplitude", "scale") and params is not None:
            coef = value(p.exponent) if p.role == "amplitude" else 1.0
            raw = value(p.name) * np.exp(-coef * centre[p.variable])
            out[f"{p.name}_c"] = _inside(priors[p.name], raw)
        elif p.role in ("amplitude", "scale"):
            out[f"{p.name}_c"] = value(p.name)
        else:
            out[p.name] = _inside(priors[p.name], value(p.name))
    if locations:
        k = len(locations)
        if params is None:
            weights = np.full((num_chains, k + 1), 1.0 / (k + 1))
        else:
            low, high = (math.log(x) for x in priors[locations[0].name].values)
            pos = np.stack([np.log(value(p.name)) for p in locations], axis=-1)
            pos = np.sort(np.clip((pos - low) / (high - low), 0.02, 0.98), axis=-1)
            edges = np.concatenate(
                [np.zeros((num_chains, 1)), pos, np.ones((num_chains, 1))], axis=-1
            )
            weights = np.maximum(np.diff(edges, axis=-1), 1e-3)
            weights = weights / weights.sum(axis=-1, keepdims=True)
        out["_breaks"] = weights
    out["sigma"] = _inside(priors["sigma"], value("sigma"))
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


@functools.cache
def _obs_mask() -> type:
    """A numpyro handler class that masks the observation site only (numpyro imported lazily)."""
    from numpyro.primitives import Messenger

    class ObsMask(Messenger):
        def __init__(self, mask: Any) -> None:
            self.mask = mask
            super().__init__(None)

        def process_message(self, msg: dict[str, Any]) -> None:
            if msg["type"] == "sample" and msg["name"] == OBS:
                msg["fn"] = msg["fn"].mask(self.mask)

    return ObsMask


@functools.lru_cache(maxsize=32)
def _masked(model: Any) -> Any:
    """``model`` with a fifth argument: a boolean mask of the runs whose loss is scored."""
    handler = _obs_mask()

    def masked(logx, centre, hyper, log_loss, mask):  # type: ignore[no-untyped-def]
        with handler(mask):
            model(logx, centre, hyper, log_loss)

    return masked


@functools.lru_cache(maxsize=16)
def _runner(
    model: Any,
    num_warmup: int,
    num_samples: int,
    num_chains: int,
    chain_method: str,
    dense_mass: bool,
    target_accept: float,
    num_candidates: int,
) -> Any:
    """A compiled NUTS sampler over (keys, start, jitter, args), reused across calls.

    Each chain maps its start (sample-site values) to the unconstrained space, draws
    ``num_candidates`` points uniformly within ``jitter`` of it, starts from the one with
    the lowest potential energy, and runs ``num_warmup`` + ``num_samples`` NUTS iterations.
    Data, mask, start and jitter are arguments, so a refit on other runs of the same data
    (LOO, LFO) costs no compilation.
    """
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from numpyro.infer import NUTS
    from numpyro.infer.util import potential_energy, unconstrain_fn

    kernel = NUTS(model, dense_mass=dense_mass, target_accept_prob=target_accept)

    def one_chain(key: Any, start: Any, jitter: Any, args: tuple[Any, ...]) -> Any:
        k_cand, k_run = jax.random.split(key)
        flat, unravel = ravel_pytree(unconstrain_fn(model, args, {}, start))
        noise = jax.random.uniform(k_cand, (num_candidates, flat.size), minval=-1.0, maxval=1.0)
        cands = flat + jitter * noise.at[0].set(0.0)
        energy = jax.vmap(lambda z: potential_energy(model, args, {}, unravel(z)))(cands)
        energy = jnp.where(jnp.isfinite(energy), energy, jnp.inf)
        z0 = unravel(cands[jnp.argmin(energy)])
        state = kernel.init(k_run, num_warmup, z0, model_args=args, model_kwargs={})

        def step(state: Any, _: Any) -> Any:
            state = kernel.sample(state, args, {})
            stats = {
                "diverging": state.diverging,
                "num_steps": state.num_steps,
                "accept_prob": state.accept_prob,
                "energy": state.energy,
                "potential_energy": state.potential_energy,
            }
            return state, (state.z, stats)

        state, _ = jax.lax.scan(step, state, None, length=num_warmup)
        _, (z, stats) = jax.lax.scan(step, state, None, length=num_samples)
        return jax.vmap(kernel.postprocess_fn(args, {}))(z), stats

    if chain_method == "parallel":
        return jax.pmap(one_chain, in_axes=(0, 0, None, None))
    return jax.jit(jax.vmap(one_chain, in_axes=(0, 0, None, None)))


def _sample(
    law: Law,
    data: ScalingData,
    priors: Priors,
    *,
    likelihood: str,
    nu: float,
    init: Mapping[str, np.ndarray] | None,
    jitter: float,
    num_chains: int,
    num_warmup: int,
    num_samples: int,
    seed: int,
    train: np.ndarray | None = None,
    centre: Mapping[str, float] | None = None,
    dense_mass: bool = True,
    target_accept: float = 0.8,
    num_candidates: int = 32,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], Any, Any]:
    """NUTS on the runs of ``data`` selected by ``train`` (all when None).

    ``priors`` and ``centre`` are those of the training runs (as `bayescale.fit` on them
    would use); the arrays cover every run so that all subsets share one compiled sampler.
    Returns the draws ``(chain, draw, ...)``, the sampler statistics, the model inputs (of
    every run, with ``centre``) and the unmasked model.
    """
    import jax

    n = data.n_runs
    train = np.ones(n, bool) if train is None else np.asarray(train, bool)
    if centre is None:
        train_data = ScalingData(data.table[train].reset_index(drop=True), data.source)
        centre = {v: float(np.mean(np.log(train_data.column(v)))) for v in law.variables}
    inputs = model_inputs(law, data, priors, centre=centre)
    families = tuple((k, p.family) for k, p in priors.items())
    model = build_model(law, families, likelihood, float(nu))
    chain_method = "parallel" if jax.local_device_count() >= num_chains else "vectorized"
    run = _runner(
        _masked(model),
        int(num_warmup),
        int(num_samples),
        int(num_chains),
        chain_method,
        bool(dense_mass),
        float(target_accept),
        int(num_candidates),
    )
    start = _latent_start(law, priors, inputs.centre, init, num_chains)
    keys = jax.random.split(jax.random.PRNGKey(seed), num_chains)
    args = (*inputs.args(), train)
    out = run(keys, start, np.float32(jitter), args)
    samples, extra = ({k: np.asarray(v) for k, v in d.items()} for d in out)
    return samples, extra, inputs, model


def _fit_attrs(
    law: Law,
    data: ScalingData,
    priors: Priors,
    likelihood: str,
    nu: float,
    inputs: Any,
    seed: int,
    num_warmup: int,
    num_chains: int,
    target_accept: float = 0.8,
) -> dict[str, Any]:
    import jax

    return {
        "law": law.name,
        "law_options": json.dumps(dict(law.options)),
        "likelihood": likelihood,
        "nu": float(nu),
        "method": "nuts",
        "seed": int(seed),
        "centre": json.dumps({v: float(c) for v, c in inputs.centre.items()}),
        "priors": json.dumps({k: p.to_dict() for k, p in priors.items()}),
        "data_source": data.source,
        "num_warmup": int(num_warmup),
        "chain_method": "parallel" if jax.local_device_count() >= num_chains else "vectorized",
        "dense_mass": 1,
        "target_accept": float(target_accept),
    }


def _make_fit(
    samples: Mapping[str, np.ndarray],
    extra: Mapping[str, np.ndarray],
    model: Any,
    inputs: Any,
    data: ScalingData,
    law: Law,
    priors: Priors,
    attrs: Mapping[str, Any],
) -> Fit:
    """A `Fit` from draws of `_sample` on every run (the tree as `bayescale.fit` builds it)."""
    from bayescale.fit import Fit, _tree

    unmasked = model_inputs(law, data, priors, centre=dict(inputs.centre))
    tree = _tree(samples, extra, (model, unmasked), data, law, attrs)
    return Fit(tree, law, priors, data)

r"""Posterior predictive checks of new runs and in-sample checks.

``check(fit, new_runs) -> Check`` asks of each run that was not in the fit: *did the law predict
it?* For every new run it gives the predictive percentile (PIT), a standardised residual, the
two-sided tail probability, the log predictive density and whether the run falls outside the
50%, 90% and 99% predictive intervals; over all new runs, the coverage of each interval and a
calibration test of the PITs; and a plain verdict per run. ``ppc(fit)`` is the same check of
the fit's own runs, out of sample by PSIS-LOO (LOO-PIT), with replicated data.
``prior_predictive(data, law)`` draws parameters and losses from the priors alone at the runs'
inputs, for a prior predictive check before fitting.
(To refit with new runs, see `bayescale.inference.fit.update`.)

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

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayescale import options as opt
from bayescale import streams
from bayescale.analysis.common import (
    group_of,
    logmeanexp,
    mixture_quantiles,
    predictive_moments,
    quantile_name,
    require_draws,
    validate_levels,
)
from bayescale.analysis.predict import predictive
from bayescale.errors import FitError, PlausibilityWarning, warn
from bayescale.inference.fit import Fit
from bayescale.io.data import ScalingData, format_rows, from_frame
from bayescale.model.build import OBS, build_model, internal_sites, model_inputs
from bayescale.model.laws import Law, get_law
from bayescale.model.likelihoods import Likelihood, get_likelihood
from bayescale.model.priors import Prior, resolve_priors

__all__ = ["Check", "VERDICTS", "check", "ppc", "prior_predictive"]

#: The three verdicts of a check, in the order low loss, as predicted, high loss.
VERDICTS = ("better than predicted", "as predicted", "worse than predicted")


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
    levels: Sequence[float] = opt.LEVELS,
    verdict_level: float = 0.9,
    columns: Mapping[str, str] | None = None,
    dropna: bool = False,
    group_label: str | None = None,
    group: str | None = None,
) -> Check:
    """Check runs that were not in the fit against the fit's posterior predictive distribution.

    Parameters
    ----------
    fit : Fit
        The fitted law.
    new_runs : DataFrame or ScalingData
        One run per row with the law's input columns and ``loss`` (see
        `bayescale.io.data.from_frame`); never modified.
    levels : sequence of float, default (0.5, 0.8, 0.9, 0.99)
        Probability masses of the equal-tailed predictive intervals reported and counted.
    verdict_level : float, default 0.9
        The interval that decides the verdict (need not be one of ``levels``).
    columns : mapping, optional
        Canonical name -> your column name.
    dropna : bool, default False
        Drop invalid runs instead of raising.
    group_label : str, optional
        For a grouped fit (``fit(..., group=<column>)``): the curve, by its label; None (the
        default) is a **new group** drawn from the population (`bayescale.inference.fit.group_fit`).
        Must be None for a fit without groups.
    group : str, optional
        Deprecated name of ``group_label`` (``group`` names a column in every verb).

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

    Warns
    -----
    PlausibilityWarning
        If some runs were in the fit (the same inputs and loss as a fitted run).

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
    [0.5, 0.8, 0.9, 0.99]
    >>> result.table["verdict"].value_counts().sum()
    np.int64(5)
    """
    levels_ = validate_levels(levels, verdict_level)
    dropna = opt.flag(dropna, "dropna")
    fit = group_of(fit, group_label, group, "check")
    require_draws(fit, "check")
    runs = _as_runs(new_runs, fit.law, columns, dropna)
    _warn_fitted_runs(fit, runs)
    pred = predictive(fit, runs, rng=streams.rng(0, "check_misfit"))
    mu, sigma = pred.loc, pred.sigma
    y = np.log(runs.loss)
    dist = fit.noise
    pit = np.mean(dist.cdf((y[None, :] - mu) / sigma), axis=0)
    lpd = logmeanexp(dist.logpdf(y[None, :], mu, sigma), axis=0)
    mean, sd = predictive_moments(mu, sigma, dist)
    probs = sorted({0.5, *((1 - lv) / 2 for lv in levels_), *((1 + lv) / 2 for lv in levels_)})
    quantiles = mixture_quantiles(mu, sigma, dist, np.asarray(probs))
    table = _inputs_frame(runs, fit.law)
    for p, q in zip(probs, quantiles, strict=True):
        table["median" if p == 0.5 else quantile_name(p)] = np.exp(q)
    _fill_scores(table, pit, (y - mean) / sd, lpd, levels_, verdict_level)
    return _result(table, levels_, "new runs", fit.law.variables)


def ppc(
    fit: Fit,
    *,
    levels: Sequence[float] = opt.LEVELS,
    verdict_level: float = 0.9,
    seed: int = 0,
) -> Check:
    """In-sample posterior predictive check of a fit: replicated data and LOO-PIT.

    Parameters
    ----------
    fit : Fit
        A NUTS or MAP fit (it needs a ``log_likelihood`` group).
    levels : sequence of float, default (0.5, 0.8, 0.9, 0.99)
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
    `bayescale.analysis.compare` with exact refits) before trusting their rows.

    References
    ----------
    Vehtari, Gelman and Gabry (2017), "Practical Bayesian model evaluation using leave-one-out
    cross-validation and WAIC", Statistics and Computing 27, doi:10.1007/s11222-016-9696-4.
    """
    import warnings

    import arviz_stats as azs
    import xarray as xr

    levels_ = validate_levels(levels, verdict_level)
    seed = opt.seed(seed)
    if "log_likelihood" not in fit.tree.children:
        raise FitError(
            f"ppc needs posterior draws with a log_likelihood group; the fit has method="
            f"{fit.method!r}. Fit with method='nuts' (or 'map')."
        )
    post = fit.posterior
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    pred = predictive(fit, fit.data, rng=streams.rng(0, "check_misfit"))
    rep = pred.sample(streams.rng(seed, "ppc_noise"))
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
    mean, sd = predictive_moments(pred.loc, pred.sigma, pred.noise)
    table = _inputs_frame(fit.data, fit.law)
    qv = np.asarray(q.transpose("quantile", ...).values if "quantile" in q.dims else q.values)
    for p, values in zip(probs, qv, strict=True):
        table["median" if p == 0.5 else quantile_name(p)] = values
    _fill_scores(table, pit, (y - mean) / sd, loo.elpd_i.values, levels_, verdict_level)
    table["pareto_k"] = np.asarray(loo.pareto_k.values, dtype=np.float64)
    return _result(table, levels_, "loo", fit.law.variables, tree)


def prior_predictive(
    data: pd.DataFrame | ScalingData | str,
    law: str | Law = "chinchilla",
    *,
    priors: Mapping[str, Prior] | None = None,
    likelihood: str | Likelihood = "contaminated_t",
    nu: float = 4.0,
    num_samples: int = 500,
    seed: int = 0,
    columns: Mapping[str, str] | None = None,
    variable: str | None = None,
    breaks: int | None = None,
    dropna: bool = False,
) -> Any:
    """Draws from the prior and the prior predictive at the runs' inputs (no fitting).

    The same model as `bayescale.inference.fit` (law, priors, observation model; the exact law,
    without
    the misfit model), sampled without its observations, for a prior predictive check: do
    the priors allow the losses one could plausibly see, and rule out absurd ones?

    Parameters
    ----------
    data : DataFrame, ScalingData or path
        The runs, as for `bayescale.inference.fit`: their inputs set where the losses are drawn, and
        their losses go into ``observed_data`` for comparison.
    law : str or Law, default "chinchilla"
        A name in `bayescale.model.laws.LAWS` or a `Law`.
    priors : mapping, optional
        Parameter -> `Prior`, replacing the defaults (as for `bayescale.inference.fit`).
    likelihood : str or Likelihood, default "contaminated_t"
        Observation model of log loss.
    nu : float, default 4
        Degrees of freedom of the Student-t likelihood.
    num_samples : int, default 500
        Prior draws (one chain).
    seed : int, default 0
        Seed of the draws.
    columns, variable, breaks, dropna
        As for `bayescale.inference.fit`.

    Returns
    -------
    xarray.DataTree
        Groups ``prior`` (the law's parameters and ``sigma`` over ``chain, draw``),
        ``prior_predictive`` (``loss`` over ``chain, draw, run``, in loss units),
        ``observed_data`` (``loss``) and ``constant_data`` (the inputs): ready for
        ``arviz_plots.plot_ppc_dist(tree, group="prior_predictive")``.

    Raises
    ------
    OptionError
        If ``num_samples`` is not a positive integer, or as `bayescale.inference.fit`.

    Examples
    --------
    >>> import bayescale as bs
    >>> runs = bs.simulate("power_law", seed=0)
    >>> tree = bs.prior_predictive(runs, "power_law", num_samples=100, seed=0)
    >>> tree["prior_predictive"]["loss"].shape
    (1, 100, 30)
    """
    import arviz_base as azb
    import jax
    from numpyro.infer import Predictive

    num_samples = opt.count(num_samples, "num_samples")
    seed = opt.seed(seed)
    noise = get_likelihood(likelihood, nu=nu)
    runs = from_frame(data, columns=columns, dropna=dropna)
    law_ = get_law(law, variable=variable, breaks=breaks)
    runs.require_one_curve(
        "the prior predictive is drawn for one curve",
        "Draw for each group: [prior_predictive(g, ...) for _, g in frame.groupby('group')].",
    )
    runs.require(law_.variables, 1, law_.name)
    priors_ = resolve_priors(law_, runs, priors, noise.name)
    model = build_model(law_, tuple((k, p.family) for k, p in priors_.items()), noise)
    inputs = model_inputs(law_, runs, priors_, observed=False)
    draws = Predictive(model, num_samples=int(num_samples))(
        jax.random.PRNGKey(int(seed)), *inputs.args()
    )
    hidden = {*internal_sites(law_), OBS}
    prior = {k: np.asarray(v, np.float64)[None] for k, v in draws.items() if k not in hidden}
    log_loss = np.asarray(draws[OBS], np.float64)[:, : runs.n_runs]
    const = {c: runs.table[c].to_numpy() for c in runs.table.columns if c != OBS}
    const = {c: (v.astype(str) if v.dtype == object else v) for c, v in const.items()}
    tree = azb.from_dict(
        {
            "prior": prior,
            "prior_predictive": {OBS: np.exp(log_loss)[None]},
            "observed_data": {OBS: runs.loss},
            "constant_data": const,
        },
        dims={OBS: ["run"], **{c: ["run"] for c in const}},
        coords={"run": np.arange(runs.n_runs)},
    )
    tree.attrs.update(law=law_.name, likelihood=noise.name, seed=int(seed))
    return tree


# -------------------------------------------------------------------- predictive helpers


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


def _warn_fitted_runs(fit: Fit, runs: ScalingData) -> None:
    """`PlausibilityWarning` for runs that were in the fit: same inputs and loss (12 digits).

    The loss is compared too: a new seed at the size of a fitted run is a new run.
    """

    def keys(data: ScalingData) -> list[tuple[float, ...]]:
        cols = [data.column(v) for v in fit.law.variables] + [data.loss]
        return [tuple(float(f"{x:.12g}") for x in row) for row in zip(*cols, strict=True)]

    fitted = set(keys(fit.data))
    seen = [label for label, key in zip(runs.table.index, keys(runs), strict=True) if key in fitted]
    if seen:
        warn(
            f"{len(seen)} of the {runs.n_runs} runs passed to check were in the fit (same "
            f"{', '.join(fit.law.variables)} and loss; rows {format_rows(seen)}). check scores "
            "runs the fit has not seen: a fitted run looks better predicted than a new one "
            "would be. Use ppc(fit) for the fitted runs, or pass only new runs.",
            PlausibilityWarning,
        )


def _inputs_frame(runs: ScalingData, law: Law) -> pd.DataFrame:
    table = pd.DataFrame({v: runs.column(v) for v in law.variables})
    table["loss"] = runs.loss
    return table


def _as_runs(
    runs: pd.DataFrame | ScalingData, law: Law, columns: Mapping[str, str] | None, dropna: bool
) -> ScalingData:
    data = from_frame(runs, columns=columns, dropna=dropna)
    data.require(law.variables, 0, law.name, vary=False)
    return data


def _pct(level: float) -> str:
    return f"{level * 100:g}"

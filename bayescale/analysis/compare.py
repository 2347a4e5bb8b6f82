"""Comparing laws: PSIS-LOO and leave-future-out scores of fits to the same runs.

``compare({"name": fit, ...}, method="loo" | "lfo") -> DataFrame`` ranks fits of several laws to
the same runs by their expected log predictive density (elpd). ``method="loo"`` estimates
leave-one-out predictions by Pareto-smoothed importance sampling (`arviz_stats.loo`), refitting
exactly the runs whose Pareto k is too high; it measures **interpolation**. ``method="lfo"``
(leave-future-out) refits each law on the runs below a cutoff of compute (or of the law's
variable) and scores the runs above it; it measures **extrapolation**, what a forecast is used
for. The table's ``weight`` column holds the stacking weights of the laws
(`bayescale.analysis.stacking`). The scoring primitives `loo_scores`, `lfo_scores` and `lfo_cutoffs`
are what `bayescale.analysis.breaks` builds on.


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
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bayescale import options as opt
from bayescale import streams
from bayescale.analysis.common import (
    logmeanexp,
    quietly,
    spread_draws,
    stacking_weights,
)
from bayescale.analysis.predict import predictive
from bayescale.errors import OptionError
from bayescale.inference.fit import Fit, user_priors
from bayescale.inference.sampling import (
    NutsSettings,
    misfit_start,
    sample_nuts,
    start_from_params,
    start_from_prior,
)
from bayescale.io.data import ScalingData
from bayescale.model.build import OBS, build_model, model_inputs
from bayescale.model.priors import Priors, resolve_priors

__all__ = [
    "COMPARE_METHODS",
    "compare",
    "density_problems",
    "lfo_cutoffs",
    "lfo_scores",
    "loo_scores",
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
    progress_bar: bool | None = None,
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
    progress_bar : bool, optional
        Show the progress of the refits; default in a terminal or a notebook.

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
        raise OptionError(f"unknown method {method!r}. Available: {', '.join(COMPARE_METHODS)}.")
    seed = opt.seed(seed)
    progress_bar = opt.optional_flag(progress_bar, "progress_bar")
    max_refits = opt.count(max_refits, "max_refits", minimum=0)
    for name, value in (("num_warmup", num_warmup), ("num_samples", num_samples)):
        if value is not None:
            opt.count(value, name, minimum=0 if name == "num_warmup" else 1)
    settings = {
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "seed": seed,
        "progress": progress_bar,
    }
    if method == "loo":
        results = {n: loo_scores(f, k_threshold, max_refits, settings) for n, f in named.items()}
        return _loo_table(results)
    pooled = [n for n, f in named.items() if _pooled(f)]
    if pooled:
        raise OptionError(
            f"method='lfo' refits each law on the earlier runs of one curve; {pooled} are "
            "grouped fits (or groups of one), whose refits would need the whole grouped model. "
            "Compare them with method='loo', or fit each curve alone for LFO."
        )
    fits_ = list(named.values())
    var = _lfo_variable(fits_, variable)
    cuts = lfo_cutoffs(fits_[0].data, var, cutoffs, max(len(f.law.params) + 2 for f in fits_))
    scores = {n: lfo_scores(f, var, cuts, settings) for n, f in named.items()}
    return _lfo_table(scores, cuts, var)


# ------------------------------------------------------------------------------- helpers


def _validate_fits(fits: Mapping[str, Fit]) -> dict[str, Fit]:
    if not isinstance(fits, Mapping) or len(fits) < 2:
        raise OptionError(
            "compare needs a mapping of two or more fits by name, for example "
            "{'chinchilla': fit_a, 'kaplan': fit_b}; received "
            f"{type(fits).__name__} of length {len(fits) if hasattr(fits, '__len__') else '?'}."
        )
    names = [str(k) for k in fits]
    out = list(fits.values())
    for name, f in zip(names, out, strict=True):
        if not isinstance(f, Fit):
            raise OptionError(f"{name!r} is a {type(f).__name__}, not a bayescale Fit.")
        if "log_likelihood" not in f.tree.children:
            raise OptionError(
                f"fit {name!r} (method={f.method!r}) has no log_likelihood group; compare needs "
                "posterior draws. Refit it with method='nuts'."
            )
    ref = out[0].data
    for name, f in zip(names[1:], out[1:], strict=True):
        same = f.data.n_runs == ref.n_runs and np.allclose(f.data.loss, ref.loss)
        if not same:
            raise OptionError(
                f"fits {names[0]!r} and {name!r} were fitted to different runs ({ref.n_runs} vs "
                f"{f.data.n_runs} runs); elpds are comparable only on the same runs. Refit "
                "every law to the same table."
            )
    return dict(zip(names, out, strict=True))


def _pooled(fit: Fit) -> bool:
    """Whether the fit is a grouped fit (pooling "partial" or "none"), or one group of one.

    Its draws come from the grouped model over every group's runs, with per-group priors: a
    refit on a subset of its runs needs that model, not the single curve's.
    """
    of = fit.settings.group_of or {}
    return any(p not in (None, "complete") for p in (fit.pooling, of.get("pooling")))


def _settings(fit: Fit, settings: Mapping[str, Any]) -> NutsSettings:
    """Sampler settings of a refit: the given ones, else those of ``fit``."""
    post = fit.posterior
    return NutsSettings(
        num_chains=int(settings.get("num_chains") or post.sizes["chain"]),
        num_warmup=int(settings.get("num_warmup") or fit.settings.num_warmup or 500),
        num_samples=int(settings.get("num_samples") or post.sizes["draw"]),
        target_accept=float(settings.get("target_accept") or fit.settings.target_accept or 0.8),
    )


def _refit_draws(
    fit: Fit,
    train: np.ndarray,
    priors: Priors,
    *,
    init: Mapping[str, np.ndarray] | None,
    jitter: float,
    centre: Mapping[str, float] | None,
    settings: NutsSettings,
    seed: int,
    label: str,
    progress: bool | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """NUTS draws of ``fit``'s law on the runs selected by ``train`` (the engine, masked).

    With a misfit, the draws carry ``_coords``: the misfit's coordinates of the training runs.

    ``priors`` and ``centre`` are those of the training runs (``centre`` None: their mean log
    inputs); the arrays cover every run, so all subsets share one compiled sampler. ``init``
    holds parameter values per chain (warm start) or None (prior medians).
    """
    law = fit.law
    families = tuple((k, p.family) for k, p in priors.items())
    model = build_model(law, families, fit.noise, fit.misfit)
    anchor = None if fit.misfit is None else fit.misfit_coords.anchor
    inputs = model_inputs(
        law, fit.data, priors, centre=centre, mask=train, misfit=fit.misfit or False,
        anchor=anchor,
    )  # fmt: skip
    n = settings.num_chains
    if init is None:
        start = start_from_prior(law, priors, n, fit.misfit)
    else:
        start = {
            **start_from_params(law, priors, inputs.centre, init, n),
            **misfit_start(law, fit.misfit, n),
        }
    samples, stats = sample_nuts(
        model,
        inputs,
        start,
        jitter=jitter,
        settings=settings,
        seed=seed,
        progress=progress,
        description=label,
    )
    return {**samples, "_coords": inputs.coords}, stats


def density_problems(dens: np.ndarray, diverging: np.ndarray, what: str) -> str:
    """Convergence of held-out log densities ``(chain, draw, run)`` of a refit ('' if fine).

    These are what a score is made of and do not depend on how the parameters are labelled
    (two breaks may swap), so they, not the parameters, decide whether the score is reliable.
    """
    import arviz_stats as azs
    import xarray as xr

    ds = xr.Dataset({"lpd": (("chain", "draw", "run"), dens)})
    rhat = float(quietly(lambda: azs.rhat(ds))["lpd"].max())
    ess = float(quietly(lambda: azs.ess(ds, method="bulk"))["lpd"].min())
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
    shape = np.shape(samples["sigma"])
    n = int(np.prod(shape))
    names = (*fit.law.param_names, "sigma")
    draws = {
        k: np.reshape(np.asarray(v, np.float64), (n, *np.shape(v)[2:]))
        for k, v in samples.items()
        if k in names or k.startswith("misfit_")
    }
    # the refit's misfit (coordinates of its own runs), continued to the held-out runs
    rng = streams.rng(shape[-1], "held_out_misfit")
    pred = predictive(fit, runs, rng=rng, draws=draws, coords=samples.get("_coords"))
    dens = pred.logpdf(np.log(runs.loss))
    return logmeanexp(dens, axis=0), dens.reshape(*shape, -1)


def _subset(data: ScalingData, rows: np.ndarray) -> ScalingData:
    return ScalingData(data.table[np.asarray(rows, bool)].reset_index(drop=True), data.source)


def loo_scores(
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
    problems = []
    if _pooled(fit) and high.size and max_refits:
        max_refits = 0  # its exact refit is the whole grouped model: not run here
        problems.append(
            f"{high.size} runs have Pareto k > {k_threshold:g}; the fit is grouped "
            "(pooling 'partial' or 'none'), and its exact refits are not run."
        )
    refit = high[np.argsort(-k_hat[high])][: max(int(max_refits), 0)]
    s = _settings(fit, settings)
    ll = fit.tree["log_likelihood"][OBS].values.reshape(-1, fit.data.n_runs).astype(np.float64)
    lpd_full = logmeanexp(ll, axis=0)
    chain_i = _chain_loo(fit.tree["log_likelihood"][OBS].values)  # (chain, run)
    for j, i in enumerate(refit):
        train = np.ones(fit.data.n_runs, bool)
        train[i] = False
        samples, extra = _refit_draws(
            fit,
            train,
            fit.priors,
            init=spread_draws(fit.draws(), s.num_chains),
            jitter=0.0,
            centre=fit.centre,
            settings=s,
            seed=int(settings.get("seed") or 0) + 1000 + j,
            label=f"LOO refit without run {i}",
            progress=settings.get("progress"),
        )
        lpd, dens = _holdout_lpd(fit, samples, _subset(fit.data, ~train))
        elpd_i[i] = lpd[0]
        chain_i[:, i] = logmeanexp(dens[..., 0], axis=1)[: chain_i.shape[0]]
        k_hat[i] = 0.0
        problem = density_problems(dens, extra["diverging"], f"exact LOO refit without run {i}")
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
    raise OptionError(
        f"cannot choose the LFO ordering variable: the data has no 'compute' column and the "
        f"laws use {sorted(variables)}. Pass variable=<column>."
    )


def lfo_cutoffs(
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
            raise OptionError(
                f"LFO cutoff {variable}={c:.4g} leaves {n_train} runs to fit and {n_test} to "
                f"score; it needs at least {min_train} below it and 1 above. Choose cutoffs "
                f"between {np.sort(x)[min(min_train, len(x)) - 1]:.4g} and {x.max():.4g}."
            )
    return cuts


def lfo_scores(
    fit: Fit, variable: str, cutoffs: Sequence[float], settings: Mapping[str, Any]
) -> dict[str, Any]:
    """Leave-future-out scores of one law: refit below each cutoff, score the next block."""
    s = _settings(fit, settings)
    x = fit.data.column(variable)
    user = user_priors(fit)
    scored, blocks, problems, chains = [], [], [], []
    for j, cut in enumerate(cutoffs):
        upper = cutoffs[j + 1] if j + 1 < len(cutoffs) else np.inf
        train = x <= cut
        test = (x > cut) & (x <= upper)
        if not test.any():
            continue
        train_data = _subset(fit.data, train)
        priors = resolve_priors(fit.law, train_data, user, fit.likelihood)
        samples, extra = _refit_draws(
            fit,
            train,
            priors,
            init=None,
            jitter=1.0,
            centre=None,
            settings=s,
            seed=int(settings.get("seed") or 0) + 2000 + j,
            label=f"LFO refit below {variable}={cut:.4g}",
            progress=settings.get("progress"),
        )
        lpd, dens = _holdout_lpd(fit, samples, _subset(fit.data, test))
        scored.append(lpd)
        chains.append(logmeanexp(dens, axis=1).sum(axis=1))
        blocks.append(np.flatnonzero(test))
        what = f"LFO refit below {variable}={cut:.4g}, held-out densities"
        problem = density_problems(dens, extra["diverging"], what)
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

"""Posterior inference: ``fit(data, law) -> Fit`` by NUTS, MAP + Laplace, or the Huber point fit.

The result is a frozen `Fit` around an ArviZ `xarray.DataTree` with groups ``posterior``
(parameters in the papers' units and ``sigma``), ``sample_stats``, ``log_likelihood`` (variable
``loss``: the density of each run's log loss), ``posterior_predictive`` (``loss``: one
replicated loss per draw at each observed run, from the fit's own law, misfit and noise),
``observed_data`` (``loss``) and ``constant_data`` (the inputs), so that ArviZ's checks
(``arviz_stats.loo_pit``, ``arviz_plots.plot_ppc_dist``) run on ``fit.tree`` directly.
The fit's settings are `Fit.settings` (`bayescale.inference.settings.FitSettings`), one
attribute of the tree.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayescale import options as opt
from bayescale.errors import (
    BayescaleError,
    ConvergenceWarning,
    FitError,
    LawError,
    OptionError,
    OptionTypeError,
    PlausibilityWarning,
    warn,
)
from bayescale.files import atomic_write, check_path
from bayescale.inference.diagnostics import (
    convergence_problems,
    diagnostic_table,
    interval_probs,
    warn_convergence,
)
from bayescale.inference.grouped import exponents_differ, group_anchors, lone_fits
from bayescale.inference.huber import huber_bootstrap, huber_fit
from bayescale.inference.sampling import (
    NutsSettings,
    anchor_of,
    build_tree,
    exact_laplace,
    laplace_fit,
    laplace_start,
    misfit_start,
    pointwise_draws,
    sample_nuts,
    start_from_params,
    start_from_prior,
)
from bayescale.inference.settings import SETTINGS_ATTR, FitSettings, fit_settings, json_attr
from bayescale.io.data import ScalingData, format_rows, from_frame
from bayescale.model.build import OBS, build_model, model_inputs
from bayescale.model.hierarchy import (
    expanded,
    group_attrs,
    group_draws,
    group_inputs,
    group_labels,
    group_start,
    lone_start,
    model_for,
    ran_away,
    repaired_mode,
    require_groups,
    resolve_pool,
)
from bayescale.model.laws import (
    Law,
    builtin_unchanged,
    check_fingerprint,
    declaration,
    fingerprint_record,
    get_law,
)
from bayescale.model.likelihoods import Likelihood, get_likelihood
from bayescale.model.misfit import (
    COEFS,
    MISFIT_SITES,
    SCALES,
    Misfit,
    MisfitCoords,
    draw_indicator,
    misfit_coords,
    resolve_misfit,
)
from bayescale.model.priors import Prior, Priors, default_priors, resolve_priors

__all__ = ["Fit", "fit", "group_fit", "load_fit", "make_fit", "update", "METHODS", "INITS"]

METHODS = ("nuts", "map", "huber")
#: methods whose draws are Markov chains (diagnosed by r_hat and ESS): ``"hmc"`` is the
#: vectorised sampler of `bayescale.fit_many`
MCMC_METHODS = ("nuts", "hmc")
#: how NUTS chains start (see `fit`)
INITS = ("map", "prior")
#: jitter of grouped starts at a joint mode without Laplace draws (sampler coordinates)
MODE_JITTER = 0.1


@dataclass(frozen=True)
class Fit:
    """A fitted scaling law.

    Attributes
    ----------
    tree : xarray.DataTree
        Posterior draws and everything needed to reproduce them (see module notes).
    law : Law
        The law that was fitted.
    priors : Priors
        The priors used (defaults with the user's overrides).
    data : ScalingData
        The runs the law was fitted to.
    settings : FitSettings
        Every setting of the fit (`bayescale.inference.settings`); read from the tree's
        attributes when not given.
    """

    tree: Any
    law: Law
    priors: Priors
    data: ScalingData
    settings: FitSettings = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.settings is None:  # a tree built by hand, or of the earlier layout
            object.__setattr__(self, "settings", FitSettings.from_attrs(self.tree.attrs))

    @property
    def posterior(self) -> Any:
        """The posterior draws as an `xarray.Dataset` over ``chain, draw``."""
        return self.tree["posterior"].to_dataset()

    @property
    def method(self) -> str:
        """``"nuts"``, ``"map"`` or ``"huber"`` (``"hmc"`` for a curve of `bayescale.fit_many`)."""
        return self.settings.method

    @property
    def likelihood(self) -> str:
        """The name of the observation model (``"student_t"``, ``"normal"``...)."""
        return self.settings.likelihood

    @property
    def noise(self) -> Likelihood:
        """The observation model with its options (`bayescale.model.likelihoods`)."""
        return get_likelihood(
            self.likelihood, **{"nu": self.settings.nu, **self.settings.likelihood_options}
        )

    @property
    def nu(self) -> float:
        """Degrees of freedom of the Student-t likelihood."""
        return self.settings.nu

    @property
    def centre(self) -> dict[str, float]:
        """Mean log input per variable, used to centre the amplitudes."""
        return dict(self.settings.centre)

    @property
    def misfit(self) -> Misfit | None:
        """The misfit model's settings, or None for the exact-law model."""
        return self.settings.misfit

    @property
    def misfit_coords(self) -> MisfitCoords | None:
        """Where the fitted runs lie in the misfit's coordinates (None without misfit)."""
        return self.settings.misfit_coords

    @property
    def groups(self) -> list[str] | None:
        """The group labels of a grouped fit (``fit(..., group=...)``), else None."""
        labels = self.settings.groups
        return None if labels is None else list(labels)

    @property
    def pooling(self) -> str | None:
        """``"partial"``, ``"none"`` or ``"complete"`` for a grouped fit, else None."""
        return self.settings.pooling

    @property
    def param_names(self) -> list[str]:
        """Reported parameters: the law's, ``sigma`` (absent for the Huber fit), misfit scales.

        A partially pooled fit adds its population's ``<name>_mu`` and ``<name>_tau``.
        """
        pool = self.settings.pool if self.pooling == "partial" else ()
        population = [f"{n}_{s}" for n in pool for s in ("mu", "tau")]
        names = (*self.law.param_names, "sigma", *MISFIT_SITES, *population)
        return [k for k in names if k in self.posterior]

    def draws(self) -> dict[str, np.ndarray]:
        """Parameter draws flattened over chains, float64 arrays of shape ``(sample,)``.

        A grouped fit's per-group parameters have shape ``(sample, group)``.
        """
        post = self.posterior
        n = post.sizes["chain"] * post.sizes["draw"]
        return {
            k: post[k].values.reshape(n, *post[k].shape[2:]).astype(np.float64)
            for k in self.param_names
        }

    def problems(self, **thresholds: Any) -> list[str]:
        """Convergence problems (see `bayescale.inference.diagnostics.convergence_problems`)."""
        if self.method not in MCMC_METHODS:
            return list(self.settings.problems)
        return convergence_problems(self.tree, var_names=self.param_names, **thresholds)

    def summary(self, ci_prob: float = 0.9) -> pd.DataFrame:
        """One row per parameter: mean, sd, median, equal-tailed interval, ESS and r_hat.

        Parameters
        ----------
        ci_prob : float, default 0.9
            Probability mass of the equal-tailed interval.
        """
        post, labels = _flat_posterior(self.posterior, self.param_names)
        names = list(post.data_vars)
        lo, hi = interval_probs(ci_prob)
        rows = {}
        for k, label in zip(names, labels, strict=True):
            v = post[k].values.reshape(-1).astype(np.float64)
            rows[label] = {
                **_moments(v),
                "median": np.median(v),
                # named as bayescale.analysis.common.quantile_name names them (forecast, ppc, check)
                f"q{lo * 100:.10g}": np.quantile(v, lo),
                f"q{hi * 100:.10g}": np.quantile(v, hi),
            }
        table = pd.DataFrame.from_dict(rows, orient="index")
        if self.method in MCMC_METHODS and post.sizes["chain"] > 1:
            for column, values in diagnostic_table(post, names).items():
                table[column] = values
        table.index.name = "parameter"
        return table

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fit to a netCDF file atomically.

        The path is checked first (`bayescale.files.check_path`); then the netCDF (HDF5) image
        is built in memory, written to a temporary file in the destination's folder and
        renamed over ``path`` (`bayescale.files.atomic_write`: a symbolic link is written
        through, an existing file keeps its mode). A full disk or any other write error
        leaves a previous file at ``path`` unchanged: HDF5 never writes to the disk itself,
        so it cannot fail (or crash) while closing a half-written file.

        Returns
        -------
        Path
            ``path``.

        Raises
        ------
        OptionTypeError, OptionError
            If ``path`` is not a path, is empty, is a folder, lies below a file or has a name
            too long for the file system.
        OSError
            If the file cannot be written (no space left, permissions...): a
            `bayescale.files.WriteError` naming ``path``.
        """
        target = check_path(path, option="Fit.save's path")
        image = _tree_to_save(self).to_netcdf(engine="h5netcdf")  # bytes: HDF5's core driver
        return atomic_write(target, image, suffix=".nc")

    def __repr__(self) -> str:
        post = self.posterior
        n = post.sizes["chain"] * post.sizes["draw"]
        # the Huber fit has no likelihood: it minimises a loss
        model = "loss='huber'" if self.method == "huber" else f"likelihood={self.likelihood!r}"
        grouped = f" groups={len(self.groups)}, pooling={self.pooling!r}," if self.groups else ""
        head = (
            f"Fit(law={self.law.name!r}, method={self.method!r}, {model},"
            + (" misfit=True," if self.misfit is not None else "")
            + grouped
            + f" runs={self.data.n_runs}, draws={n})"
        )
        shown = [k for k in self.param_names if post[k].ndim == 2]  # per-group ones: summary()
        # a population's parameters live on the scale their prior's note names (log, logit)
        notes = {
            k: p.note.removeprefix("population ").replace("sd across groups of", "sd of")
            for k, p in (self.priors or {}).items()
            if k.endswith(("_mu", "_tau")) and p.note
        }
        med = ", ".join(
            f"{k}={float(np.median(post[k].values)):.4g}" for k in shown if k not in notes
        )
        population = ", ".join(
            f"{k}={float(np.median(post[k].values)):.4g} ({notes[k]})" for k in shown if k in notes
        )
        lines = [f"medians: {med}"] if med else []
        if population:
            lines.append(f"population medians: {population}")
        per_group = [k for k in self.param_names if post[k].ndim > 2]
        if per_group:
            lines.append(f"per group: {', '.join(per_group)} (see summary())")
        med = "\n  ".join(lines)
        problems = self.problems()
        if problems:
            tail = f"\n  WARNING: {' '.join(problems)}"
        elif self.method == "map":
            tail = "\n  MAP + Laplace approximation: a proper mode (no chains: no r_hat or ESS)"
        elif self.method == "huber" and self.settings.bootstrap is not None:
            tail = (
                f"\n  Huber loss on log residuals; the draws are {self.settings.bootstrap} "
                "bootstrap refits (not a posterior)"
            )
        elif self.method == "huber":
            tail = "\n  point estimate (Huber loss on log residuals): one draw, no uncertainty"
        elif post.sizes["chain"] < 2:
            tail = (
                "\n  diagnostics: no divergences; r_hat and ESS not computed with 1 chain (fit "
                "with num_chains=4 to check convergence)"
            )
        else:
            tail = "\n  diagnostics: ok"
        return f"{head}\n  {med}{tail}"

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(repr(self))}</pre>" + self.summary().to_html(
            float_format=lambda x: f"{x:.4g}"
        )


def _flat_posterior(post: Any, names: list[str]) -> tuple[Any, list[str]]:
    """The posterior with each group's parameter as its own variable ``name[group]``."""
    if "group" not in post.dims:
        return post[list(names)], list(names)
    import xarray as xr

    out, rows = {}, []
    for k in names:
        if "group" in post[k].dims:
            for i, label in enumerate(post["group"].values):
                rows.append(f"{k}[{label}]")
                out[f"{k}[{i}]"] = post[k].isel(group=i, drop=True)  # no '/' in tree names
        else:
            rows.append(k)
            out[k] = post[k]
    return xr.Dataset(out), rows


def _moments(v: np.ndarray) -> dict[str, float]:
    """Mean and sd (ddof 1) of float64 draws without overflow: scaled by the largest |draw|.

    An unidentified parameter can have draws near the float range, whose squares overflow
    (an infinite sd and a numpy warning); the sd is NaN with one draw or non-finite draws.
    """
    finite = v[np.isfinite(v)]
    scale = float(np.max(np.abs(finite))) if finite.size else 0.0
    if finite.size < v.size:  # a non-finite draw: the mean is infinite or undefined
        up, down = bool(np.isposinf(v).any()), bool(np.isneginf(v).any())
        mean = np.nan if np.isnan(v).any() or (up and down) else (np.inf if up else -np.inf)
        return {"mean": mean, "sd": np.nan}
    if scale == 0.0:
        return {"mean": 0.0, "sd": 0.0 if v.size > 1 else np.nan}
    u = v / scale
    return {
        "mean": scale * float(np.mean(u)),
        "sd": scale * float(np.std(u, ddof=1)) if v.size > 1 else np.nan,
    }


# --------------------------------------------------------------------------------- fitting


def fit(
    data: pd.DataFrame | ScalingData | str | os.PathLike[str],
    law: str | Law = "chinchilla",
    *,
    priors: Mapping[str, Prior] | None = None,
    likelihood: str | Likelihood = "contaminated_t",
    nu: float = 4.0,
    misfit: Misfit | bool | None = None,
    group: str | None = None,
    pooling: str | None = None,
    pool: Sequence[str] | str | None = None,
    method: str = "nuts",
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    target_accept: float | None = None,
    dense_mass: bool | None = None,
    seed: int = 0,
    init: str | Mapping[str, Any] = "map",
    columns: Mapping[str, str] | None = None,
    variable: str | None = None,
    breaks: int | None = None,
    progress_bar: bool | None = None,
    dropna: bool = False,
    bootstrap: int | None = None,
) -> Fit:
    """Fit a scaling law to a table of training runs.

    Parameters
    ----------
    data : DataFrame, ScalingData or path
        One run per row with columns ``n_params``, ``n_tokens`` (or ``compute``), ``loss``...;
        see `bayescale.io.data.from_frame`.
    law : str or Law, default "chinchilla"
        A name in `bayescale.model.laws.LAWS` or a `Law`.
    priors : mapping, optional
        Parameter -> `Prior`, replacing the defaults of `bayescale.model.priors.default_priors`.
    likelihood : str or Likelihood, default "contaminated_t"
        Observation model of log loss, a name in `bayescale.model.likelihoods.LIKELIHOODS`. The
        default is a Student-t with a small fraction of failed runs, which stop pulling on the
        law (`bayescale.model.likelihoods.ContaminatedT`); ``"student_t"`` has none.
    nu : float, default 4
        Degrees of freedom of the Student-t.
    misfit : Misfit, bool or None, default None
        The law's own misfit (`bayescale.model.misfit`): a random function of scale, inferred
        with the law and orthogonal to it, whose variance grows beyond the fitted runs, so that
        forecasts widen with extrapolation. None (the default) or True: the default `Misfit`
        (none for ``method="huber"``); a `Misfit` for other settings; False for the exact law.
        With ``group`` (partial or no pooling), each group has its own misfit function and
        the misfit's scales are shared by the groups (the explanation page *Pooling across
        curves*).
    group : str, optional
        A column that splits the runs into curves (families): fit them all at once, in one
        model (see `bayescale.model.hierarchy`). The result carries a ``group`` dimension; the verbs
        take ``group=`` to select a curve, or ``group=None`` for a new one drawn from the
        population.
    pooling : {"partial", "none", "complete"}, optional
        With ``group``: ``"partial"`` draws the parameters in ``pool`` of each group from a
        population (non-centred) and keeps the others per group; ``"none"`` fits every group
        on its own (the same posterior as separate fits); ``"complete"`` fits one curve
        through every group. Default ``"partial"`` (only with ``group``).
    pool : sequence of str or "all", optional
        With ``pooling="partial"``, the pooled parameters; default
        `bayescale.model.hierarchy.default_pool` (exponents, floor and ``sigma``).
    method : {"nuts", "map", "huber"}, default "nuts"
        ``"nuts"``: the posterior by NUTS (numpyro).
        ``"map"``: the posterior mode with a Laplace approximation (``num_samples`` draws).
        ``"huber"``: the literature's point estimate (Huber loss, delta = 1e-3, on log
        residuals; L-BFGS from a grid of starts), one draw.
    num_chains, num_warmup, num_samples : int
        NUTS settings (defaults 4, 1000, 1000). Chains run in parallel, one thread each,
        whatever the number of JAX devices; the draws are the same either way.
    target_accept : float, optional
        NUTS target acceptance probability; default 0.8, and 0.95 with ``misfit`` (the walks'
        scale makes a funnel that smaller steps cross without divergences) or for a law with
        breaks (a sharp break's curved ridge).
    dense_mass : bool, optional
        Adapt a dense mass matrix. Default: dense for one curve (and complete pooling),
        diagonal for a grouped fit with per-group parameters, whose 60 to 100+ dimensions a
        dense estimate from the warm-up's first windows (25 to 100 draws) cannot resolve:
        the step size collapses after each (see the how-to *Diagnostics*).
    seed : int, default 0
        Seed of every random choice of the fit: the same seed gives the same draws, with or
        without a progress bar, from the library or the CLI, whatever the chain layout.
    init : {"map", "prior"} or mapping, default "map"
        Where NUTS chains start. ``"map"``: draws of the MAP + Laplace approximation (SciPy's
        L-BFGS-B on the compiled potential); for a grouped fit whose joint mode has no proper
        Laplace approximation, the mode itself, jittered; with ``misfit``, the Laplace
        approximation's covariance is also the first mass matrix (as for grouped fits).
        ``"prior"``: each prior's typical value, jittered (the best of 32 candidates per
        chain; no optimisation). A mapping of parameter draws (papers' units, such as
        `Fit.draws`, at least one value per chain): spread over the chains (a warm start).
    columns : mapping, optional
        Canonical name -> your column name.
    variable : str, optional
        Scaling variable of one-variable laws (``power_law``, ``broken_power_law``, ``m4``).
    breaks : int, optional
        Number of breaks of ``broken_power_law`` (1 or 2).
    progress_bar : bool, optional
        Show NUTS progress; default in a terminal or a Jupyter notebook.
    dropna : bool, default False
        Drop invalid runs instead of raising.
    bootstrap : int, optional
        With ``method="huber"``: refit the Huber loss on this many resamples of the runs
        (drawn with replacement, seeded by ``seed``), as the literature reports its intervals
        (Besiroglu et al. 2024 use 4000). The refits become the draws of ``posterior``
        (one chain): **bootstrap draws of the estimator, not a posterior**; the point estimate
        is in the tree's attribute ``huber_estimate``. Default: the point estimate alone.

    Returns
    -------
    Fit

    Raises
    ------
    DataError
        If the data cannot identify the law: fewer runs than parameters without a given prior
        (per group with ``pooling="none"``), or several groups without ``group=``.
    PriorError
        If a prior names an unknown parameter.
    LawError
        If ``law`` is unknown.
    OptionError
        If ``method``, ``likelihood``, ``init`` or a sampler setting is invalid.

    Warns
    -----
    ConvergenceWarning
        On divergences, r_hat > 1.01 or low ESS (NUTS), or a failed optimisation (MAP).

    Examples
    --------
    >>> import bayescale
    >>> runs = bayescale.simulate("chinchilla", seed=1)
    >>> bayescale.fit(runs, method="huber").summary().loc["alpha", "mean"].round(1)
    np.float64(0.3)
    """
    if method not in METHODS:
        raise OptionError(f"unknown method {method!r}. Available: {', '.join(METHODS)}.")
    opt.seed(seed)
    progress_bar = opt.optional_flag(progress_bar, "progress_bar")
    dense_mass = opt.optional_flag(dense_mass, "dense_mass")
    nu = opt.positive(nu, "nu", example=4)
    if priors is not None and not isinstance(priors, Mapping):
        raise OptionTypeError(
            f"priors must be a mapping of parameter name -> bayescale.Prior; received "
            f"{type(priors).__name__}: {priors!r}. For example priors={{'alpha': "
            "bs.Prior('LogNormal', loc=-1.2, scale=0.5)}."
        )
    noise = get_likelihood(likelihood, nu=nu)
    spec = _misfit_spec(misfit, method)
    if target_accept is None:
        # 0.95 with a misfit (the walks narrow where their scale is large: an inverted
        # funnel) or a break (the ridge of a sharp break's location, sharpness and exponent
        # change is curved even in the sampler's coordinates); measured in the design notes
        has_break = any(p.role == "location" for p in get_law(law).params)
        target_accept = 0.8 if spec is None and not has_break else 0.95
    if dense_mass is None:
        dense_mass = group is None or pooling == "complete"
    settings = NutsSettings(num_chains, num_warmup, num_samples, dense_mass, target_accept)
    if group is None and (pooling is not None or pool is not None):
        raise OptionError(
            f"pooling={pooling!r} and pool={pool!r} apply to grouped fits; pass group=<column> "
            "(the column that names each run's curve), or leave them out."
        )
    if group is not None:
        if not isinstance(group, str):
            raise OptionTypeError(
                f"group must be the name of a column; received {type(group).__name__}: "
                f"{group!r}. For example group='family'."
            )
        columns = {**(columns or {}), "group": group}
    scaling = from_frame(data, columns=columns, dropna=dropna)
    law_ = get_law(law, variable=variable, breaks=breaks)
    given = set(priors or {})
    n_free = sum(1 for p in law_.params if p.name not in given) + (
        method != "huber" and "sigma" not in given
    )
    if group is not None:
        return _fit_groups(
            scaling, law_, priors, noise, pooling or "partial", pool, method, settings, seed, init,
            progress_bar, spec, n_free,
        )  # fmt: skip
    scaling.require_one_curve(
        "a law is fitted to one curve",
        "Fit each group: [fit(g, ...) for _, g in frame.groupby('group')], or all at once: "
        "fit(frame, ..., group='group', pooling='partial').",
    )
    scaling.require(law_.variables, n_free, law_.name)
    priors_ = resolve_priors(law_, scaling, priors, noise.name)
    if bootstrap is not None:
        if method != "huber":
            raise OptionError(
                f"bootstrap applies to method='huber' (refits of the Huber loss); received "
                f"method={method!r}. NUTS and MAP fits give posterior draws; leave bootstrap out."
            )
        if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)):
            raise OptionTypeError(
                f"bootstrap must be a number of resamples; received {bootstrap!r}. For "
                "example bootstrap=4000."
            )
        if bootstrap < 2:
            raise OptionError(
                f"bootstrap must be at least 2 resamples; received {bootstrap}. For example "
                "bootstrap=4000."
            )
    return _fit(
        scaling, law_, priors_, noise, method, settings, seed, init, progress_bar, spec,
        bootstrap=None if bootstrap is None else int(bootstrap),
    )  # fmt: skip


def _fit_groups(
    data: ScalingData,
    law: Law,
    priors: Mapping[str, Prior] | None,
    noise: Likelihood,
    pooling: str,
    pool: Sequence[str] | str | None,
    method: str,
    settings: NutsSettings,
    seed: int,
    init: str | Mapping[str, Any],
    progress: bool | None,
    misfit: Misfit | None,
    n_free: int,
) -> Fit:
    """The grouped fit (`bayescale.model.hierarchy`): validated, sampled, and built into a `Fit`."""
    labels = group_labels(data)
    require_groups(data, law, pooling, n_free, labels)
    pool_ = resolve_pool(law, "all" if pooling == "complete" else pool)
    if method != "nuts" or any(p.role == "location" for p in law.params):
        raise OptionError(
            "grouped fits (group=...) run NUTS on laws without breaks; "
            f"received method={method!r}, law={law.name!r}. Fit the groups one by one for those."
        )
    grouping = {
        "groups": tuple(labels),
        "pooling": pooling,
        "pool": tuple(pool_) if pooling == "partial" else (),
    }
    if pooling == "complete":  # one curve through every group: the single-curve model
        data.require(law.variables, n_free, law.name)
        priors_ = resolve_priors(law, data, priors, noise.name)
        return _fit(
            data, law, priors_, noise, "nuts", settings, seed, init, progress, misfit, **grouping
        )
    if not isinstance(init, str) or init not in INITS:
        raise OptionError(f"grouped fits take init='map' or 'prior'; received {init!r}.")
    used = pool_ if pooling == "partial" else ()
    # curves of different kinds (their exponents differ by more than their runs measure):
    # floors pooled as shares of each curve's smallest loss, the ridge coordinates
    lone = lone_fits(law, data, labels, noise, seed) if used else []
    differ = bool(used) and exponents_differ(law, data, labels, noise, seed, lone=lone)
    floor = "share" if differ else "log"
    # each group's exact-law mode: the anchor of its walk
    anchors = group_anchors(law, data, labels, noise, seed, lone) if misfit is not None else None
    inputs, priors_, centres = group_inputs(
        law, data, labels, pooling, used, priors, noise.name, floor=floor, misfit=misfit,
        anchors=anchors,
    )  # fmt: skip
    model = model_for(law, priors_, used, noise, len(labels), misfit=misfit)
    ridge, ridged = model.ridge, True
    if ridge is not None and ridge.exponent in ridge.pooled and not differ:
        # families that share their exponent: numpyro's non-centred coordinates
        ridged = False
        model = model_for(law, priors_, used, noise, len(labels), ridge=False, misfit=misfit)
    spreads = used if model.expand else ()  # sampled as `_<name>_w` (`expanded`)
    cold = group_start(law, priors_, used, labels, settings.num_chains, misfit)
    cold = expanded(cold, priors_, spreads)
    start, jitter, how = cold, 1.0, "jittered prior medians, best of 32 candidates per chain"
    mode = None  # a joint mode (every site, as `Laplace.mode`)
    if init == "map":
        n_draws = max(settings.num_samples, 4)
        # with the misfit the search is the exact law's, and the chains start from its mode
        # with every walk flat: a joint mode of law plus walks is no place to start, since on
        # a short group they pass through the runs (the contaminated part taking any left
        # over) and the joint density grows without bound as that group's sigma goes to 0
        # (the design notes, *Measurements behind the code*)
        search = model_for(law, priors_, used, noise, len(labels), ridge=ridged, misfit=None)
        exact_inputs = dataclasses.replace(inputs, misfit=None)
        exact_cold = {k: v for k, v in cold.items() if k not in (SCALES, COEFS)}
        warm = lone_start(law, priors_, used, labels, inputs, lone) if lone else None
        if warm is None:
            lap = laplace_fit(search, exact_inputs, exact_cold, seed, n_draws)
        else:  # one L-BFGS run from the lone fits' modes (see `lone_start`)
            warm = expanded({k: v[None] for k, v in warm.items()}, priors_, spreads)
            lap = laplace_fit(search, exact_inputs, warm, seed, n_draws, runs=1)
        if misfit is not None and lap.mode:  # the walks flat, their scales at prior medians
            flat = {k: cold[k][0] for k in (SCALES, COEFS)}
            lap = dataclasses.replace(lap, mode={**lap.mode, **flat})
        if lap.ok and misfit is None:
            mode, at = lap.mode, "MAP"
        elif lap.ok:  # flat walks are no mode of the misfit model: start from it, jittered
            mode, at = lap.mode, "exact law's MAP, walks flat"
            n = settings.num_chains
            start = {k: np.repeat(mode[k][None], n, 0).astype(np.float32) for k in cold}
            jitter, how = MODE_JITTER, f"{at}, jittered, best of 32 per chain"
        elif lap.mode and all(np.all(np.isfinite(lap.mode[k])) for k in cold):
            # a joint mode whose Hessian is not positive definite (a population spread at its
            # boundary): no Laplace draws, but still a far better place to start than the priors
            mode, at = lap.mode, "MAP (improper Hessian)"
            # groups of few runs fitted exactly pull such a mode's noise and floor populations
            # away (beyond the spread's prior, or within it where the spreads are
            # parameter-expanded): re-set them from the groups that pin them down
            fixed = repaired_mode(mode, law, data, labels, priors_, used)
            if fixed is not None:
                runaway = " (a runaway mode)" if ran_away(mode, priors_, used) else ""
                mode, at = fixed, f"MAP with the noise and floor populations re-set{runaway}"
            n = settings.num_chains
            start = {k: np.repeat(mode[k][None], n, 0).astype(np.float32) for k in cold}
            jitter, how = MODE_JITTER, f"{at}, jittered, best of 32 per chain"
    metric = None
    if mode is not None:  # its Laplace approximation in the sampler's coordinates, if proper
        found = laplace_start(model, inputs, {k: mode[k] for k in cold}, settings, seed)
        if found is not None:
            (start, metric), jitter = found, 0.0
            how = f"Laplace draws in the sampler's coordinates at the {at}, and its mass matrix"
    samples, stats = sample_nuts(
        model,
        inputs,
        start,
        jitter=jitter,
        settings=settings,
        seed=seed,
        progress=progress,
        description=f"fit {law.name} x {len(labels)} groups",
        metric=metric,
    )
    grouping.update(group_centres=centres, **group_attrs(law, inputs, used))
    if misfit is not None:  # each group's walk spans its own runs; a new group's, every run
        every = misfit_coords(law.variables, {v: data.column(v) for v in law.variables})
        grouping.update(
            misfit=misfit,
            group_misfit_coords=dict(inputs.coords),
            new_group_misfit_coords=every,
        )
    centre = centres[labels[0]]
    config = fit_settings(
        law, data, priors_, noise, centre, "nuts", seed, settings, init=how, **grouping
    )
    loglik, rep = pointwise_draws(model, inputs, samples, noise, seed)
    samples = {k: v for k, v in samples.items() if not k.startswith("_")}  # the z's
    result = make_fit(
        config, law, data, samples, stats, loglik, posterior_predictive=rep, groups=labels
    )
    warn_convergence(result.problems())
    return result


def group_fit(
    fit: Fit, group_label: str | None = None, *, seed: int = 0, group: str | None = None
) -> Fit:
    """One curve of a grouped fit as a single-curve `Fit`, for every verb.

    Parameters
    ----------
    fit : Fit
        A grouped fit (``fit(..., group=...)``); a fit without groups is returned as it is
        when ``group`` is None.
    group_label : str or None
        A group label of the fit, or None for a **new group** drawn from the population
        (partial pooling with every parameter pooled, or complete pooling).
    seed : int, default 0
        Seed of the new group's draws.
    group : str, optional
        Deprecated name of ``group_label`` (``group`` names a column in every verb).

    Returns
    -------
    Fit
        Draws of that group's parameters and ``sigma`` over ``chain, draw``; its data are the
        group's runs (every run for a new group, which sets the observed range), its sampler
        statistics those of the whole fit. With a misfit, the shared scales and the group's
        own walk with its coordinates (a new group: a fresh walk per draw of the scales, from
        ``seed``).

    Raises
    ------
    OptionError
        If the group is unknown, or a new group is asked of a fit without a population.
    """
    group = opt.renamed(
        group_label, group, verb="group_fit", old="group", new="group_label",
        why="group names a column in every verb; a fitted curve is chosen by group_label",
    )  # fmt: skip
    labels = fit.groups
    if labels is None:
        if group is None:
            return fit
        raise OptionError(
            f"group_label={group!r} was given, but the fit has no groups. Fit with "
            "group=<column> to select curves, or leave group_label out."
        )
    if group is not None and not isinstance(group, str):
        raise OptionTypeError(f"group_label must be a label (str) or None; received {group!r}.")
    opt.seed(seed)
    config = fit.settings
    table = fit.data.table
    runs = table if group is None else table[table["group"].astype(str) == group]
    if group is not None and group not in labels:
        raise OptionError(
            f"unknown group {group!r}; the fit has groups {labels}. Pass one of them, or "
            "group_label=None for a new group drawn from the population."
        )
    data = ScalingData(runs.reset_index(drop=True), fit.data.source)
    idx = np.flatnonzero((table["group"].astype(str) == group).to_numpy()) if group else None
    if fit.pooling == "complete":
        names = [*fit.param_names, *(k for k in fit.posterior.data_vars if k.startswith("misfit_"))]
        samples = {k: fit.posterior[k].values for k in dict.fromkeys(names)}
        centre = fit.centre
    else:
        samples, centre = group_draws(
            fit.posterior,
            fit.law,
            group,
            seed,
            labels=labels,
            pooling=config.pooling,
            pool=config.pool,
            pool_real=config.pool_real,
            centres=config.group_centres,
            floor_bounds=config.floor_bounds,
            misfit=config.misfit,
            new_coords=config.new_group_misfit_coords,
        )
    loglik = rep = None
    if idx is not None:
        loglik = fit.tree["log_likelihood"]["loss"].values[..., idx]
        rep = fit.tree["posterior_predictive"]["loss"].values[..., idx]
    coords = config.misfit_coords
    if config.group_misfit_coords is not None:  # the misfit coordinates of this group's walk
        per_group = config.group_misfit_coords
        coords = config.new_group_misfit_coords if group is None else per_group[group]
    one = config.one_group(
        centre=dict(centre),
        group=group,
        group_of={"groups": labels, "pooling": fit.pooling},
        misfit_coords=coords,
    )
    stats = fit.tree["sample_stats"] if "sample_stats" in fit.tree.children else None
    return make_fit(
        one, fit.law, data, samples, None, loglik, posterior_predictive=rep, sample_stats=stats
    )


#: a MAP estimate closer than this many Laplace sds to a bound of its prior is "at the bound"
BOUND_SDS = 2.0


def _at_prior_bounds(
    law: Law,
    priors: Priors,
    mode: Mapping[str, np.ndarray],
    draws: Mapping[str, np.ndarray],
) -> list[str]:
    """Problems for MAP estimates against a bound of a bounded prior (Uniform, LogUniform...).

    The mode is found on the unconstrained scale, where a bound is infinitely far, so it is
    never exactly on the bound; it is "at" the bound when closer to it than `BOUND_SDS`
    Laplace sds (in the parameter's units): the bound then cuts the posterior, the prior and
    not the data sets the estimate, and the Gaussian approximation is poor there. Not
    checked: break locations (sampled jointly) and the lower bound of a ceiling (the largest
    loss, where a bounded metric's ceiling often is).
    """
    roles = {p.name: p.role for p in law.params}
    out = []
    for name, prior in priors.items():
        site = f"{name}_c" if f"{name}_c" in mode else name
        if roles.get(name) == "location" or site not in mode or site not in draws:
            continue
        v = dict(prior.params)
        if prior.family in ("Uniform", "LogUniform", "TruncatedNormal"):
            lo, hi = v["low"], v["high"]
        elif prior.family == "Beta":
            lo, hi = 0.0, 1.0
        else:
            continue
        if roles.get(name) == "ceiling":
            lo = -np.inf
        x = float(np.asarray(mode[site]).reshape(-1)[0])
        sd = float(np.std(np.asarray(draws[site], np.float64).reshape(len(draws[site]), -1)[:, 0]))
        gap = min(x - lo, hi - x)
        if not gap < BOUND_SDS * sd:
            continue
        side = "lower" if x - lo < hi - x else "upper"
        what = name if site == name else f"{name} (its prior is on {prior.note or site})"
        out.append(
            f"the MAP estimate of {what} sits at the {side} bound of its prior {prior!r} "
            f"(mode {x:.4g}, {gap / sd:.2g} Laplace sd from the bound): the prior, not the "
            "data, sets it, and the Laplace approximation is poor there. Widen that prior, or "
            "use method='nuts' to see the posterior against the bound."
        )
    return out


def _negative_exponents(law: Law, estimate: Mapping[str, float]) -> list[str]:
    """Problems for exponents that the (unconstrained) Huber fit put below zero."""
    bad = {p.name: estimate[p.name] for p in law.params if p.role == "exponent"}
    bad = {k: v for k, v in bad.items() if v < 0}
    if not bad:
        return []
    listed = ", ".join(f"{k} = {v:.3g}" for k, v in bad.items())
    return [
        f"the Huber fit has negative exponents ({listed}): the law's loss then grows with "
        "scale. Check that the loss column holds a loss that falls with scale, and the "
        "inputs' units; method='nuts' or 'map' keep exponents positive through their priors."
    ]


def _check_law_at_start(
    model: Any, inputs: Any, law: Law, priors: Priors, data: ScalingData
) -> None:
    """Refuse a law whose log loss is not finite at the runs for the priors' typical values.

    That is where MAP and NUTS start: there a law that returns NaN (a log of a negative
    number, 0 / 0) leaves MAP at its start and stops NUTS' initialisation with numpyro's own
    error. Run eagerly once (milliseconds), before anything is compiled.
    """
    import numpyro
    import numpyro.handlers as handlers

    start = {k: np.asarray(v)[0] for k, v in start_from_prior(law, priors, 1).items()}
    traced = handlers.trace(handlers.substitute(handlers.seed(model, 0), data=start))
    with numpyro.validation_enabled(False):  # a NaN location is what this looks for
        trace = traced.get_trace(*inputs.args())
    site = trace[OBS]
    n = data.n_runs
    logp = np.asarray(site["fn"].log_prob(site["value"]), np.float64).reshape(-1)[:n]
    bad = list(data.table.index[~np.isfinite(logp)])
    if not bad:
        return
    values = {k: np.asarray(trace[k]["value"]) for k in law.param_names if k in trace}
    shown = ", ".join(f"{k}={float(v.reshape(-1)[0]):.3g}" for k, v in values.items())
    raise LawError(
        f"law {law.name!r} gives no finite log loss at {len(bad)} of {n} runs (rows "
        f"{format_rows(bad)}) at the priors' typical values ({shown or 'see fit.priors'}), "
        "where MAP and NUTS start. Check fn for logs or powers of negative numbers and "
        "divisions by zero over the data's range, or set priors nearer the data."
    )


def _misfit_spec(misfit: Misfit | bool | None, method: str) -> Misfit | None:
    if method == "huber":  # a point fit of the law alone: the default is no misfit
        if misfit is None or misfit is False:
            return None
        raise OptionError(
            f"the Huber point fit has no misfit model; received misfit={misfit!r} with "
            "method='huber'. Leave misfit out (or pass misfit=False)."
        )
    return resolve_misfit(misfit)


def _fit(
    data: ScalingData,
    law: Law,
    priors: Priors,
    noise: Likelihood,
    method: str,
    settings: NutsSettings,
    seed: int,
    init: str | Mapping[str, Any],
    progress: bool | None,
    misfit: Misfit | None = None,
    bootstrap: int | None = None,
    **extra: Any,
) -> Fit:
    """The fit of validated inputs: sampled or optimised, its settings, and `make_fit`."""
    anchor = at_mode = None
    if misfit is not None and method != "huber":
        exact_lap = exact_laplace(law, data, priors, noise, seed, 1)
        anchor = anchor_of(law, exact_lap)
        at_mode = None if anchor is None else exact_lap.mode
    inputs = model_inputs(law, data, priors, misfit=misfit, anchor=anchor)
    centre = {v: float(c) for v, c in inputs.centre.items()}
    if misfit is not None:
        extra = {**extra, "misfit": misfit, "misfit_coords": inputs.coords}
    if method == "huber":
        est, objective = huber_fit(law, data, priors, seed=seed)
        post = {k: np.full((1, 1), v) for k, v in est.items()}
        if bootstrap is not None:  # the refits as draws: not a posterior (see `fit`)
            draws = huber_bootstrap(law, data, est, n_resamples=bootstrap, seed=seed)
            post = {k: v[None, :] for k, v in draws.items()}
            extra.update(bootstrap=bootstrap, huber_estimate={k: float(v) for k, v in est.items()})
        problems = _negative_exponents(law, est)
        config = fit_settings(
            law, data, priors, noise, centre, method, seed, huber_objective=float(objective),
            problems=tuple(problems), **extra,
        )  # fmt: skip
        result = make_fit(config, law, data, post, None, None)
        if problems:
            warn(" ".join(problems), PlausibilityWarning)
        return result
    families = tuple((k, p.family) for k, p in priors.items())
    model = build_model(law, families, noise, misfit)
    exact = build_model(law, families, noise, None)
    # the misfit starts flat (no shift of the law): the exact law's model checks the same values
    _check_law_at_start(exact, dataclasses.replace(inputs, misfit=None), law, priors, data)
    if method == "map":
        start = start_from_prior(law, priors, 1, misfit)
        lap = _map_search(model, inputs, start, seed, settings, at_mode)
        problems = ([] if lap.ok else [lap.message]) + _at_prior_bounds(
            law, priors, lap.mode, lap.constrained
        )
        config = fit_settings(
            law, data, priors, noise, centre, method, seed, problems=tuple(problems), **extra
        )
        samples = draw_indicator({k: v[None] for k, v in lap.constrained.items()}, seed)
        loglik, rep = pointwise_draws(model, inputs, samples, noise, seed)
        result = make_fit(config, law, data, samples, None, loglik, posterior_predictive=rep)
        if problems:
            warn(" ".join(problems), ConvergenceWarning)
        return result
    start, jitter, how, metric = _start(
        model, inputs, law, priors, settings, seed, init, misfit, at_mode
    )
    samples, stats = sample_nuts(
        model,
        inputs,
        start,
        jitter=jitter,
        settings=settings,
        seed=seed,
        progress=progress,
        description=f"fit {law.name}",
        metric=metric,
    )
    config = fit_settings(
        law, data, priors, noise, centre, "nuts", seed, settings, init=how, **extra
    )
    loglik, rep = pointwise_draws(model, inputs, samples, noise, seed)
    result = make_fit(config, law, data, samples, stats, loglik, posterior_predictive=rep)
    warn_convergence(result.problems())
    return result


def _start(
    model: Any,
    inputs: Any,
    law: Law,
    priors: Priors,
    settings: NutsSettings,
    seed: int,
    init: str | Mapping[str, Any],
    misfit: Misfit | None,
    exact: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], float, str, np.ndarray | None]:
    """The chains' start (sample-site values), jitter, description and first mass matrix.

    The description is for provenance; the inverse mass matrix is None for numpyro's
    identity (a misfit fit's is its MAP's, see `_misfit_start`). ``exact``: a misfit fit's
    exact-law mode, where its MAP search starts (`_map_search`).
    """
    chains = settings.num_chains
    cold = start_from_prior(law, priors, chains, misfit)
    if isinstance(init, Mapping):
        missing = sorted({*law.param_names, "sigma"} - set(init))
        if missing:
            raise OptionError(
                f"init lacks draws of {missing}; pass a mapping with every parameter of the "
                f"law and sigma (for example previous_fit.draws()), or init='map'."
            )
        draws = {k: np.atleast_1d(np.asarray(v, np.float64)).reshape(-1) for k, v in init.items()}
        n = min(len(v) for v in draws.values())
        idx = np.linspace(0, n - 1, chains).round().astype(int)
        params = {k: v[idx] for k, v in draws.items()}
        centre = {v: float(c) for v, c in inputs.centre.items()}
        start = {
            **start_from_params(law, priors, centre, params, chains),
            **misfit_start(law, misfit, chains),
        }
        return start, 0.0, "warm start", None
    if init == "prior":
        return cold, 1.0, "jittered prior medians, best of 32 candidates per chain", None
    if init != "map":
        raise OptionError(
            f"unknown init {init!r}. Available: 'map', 'prior', or a mapping of parameter "
            "draws (for example previous_fit.draws())."
        )
    lap = _map_search(model, inputs, cold, seed, settings, exact)
    if not lap.ok:  # no valid mode: start cold rather than from invalid draws
        return cold, 1.0, "jittered prior medians (the MAP search failed)", None
    start = {k: np.asarray(lap.constrained[k][:chains], np.float32) for k in cold}
    if misfit is not None:
        return _misfit_start(model, inputs, lap, start, settings, seed)
    return start, 0.0, "MAP + Laplace draws", None


def _map_search(
    model: Any,
    inputs: Any,
    cold: Mapping[str, np.ndarray],
    seed: int,
    settings: NutsSettings,
    exact: Mapping[str, np.ndarray] | None,
) -> Any:
    """The MAP and its Laplace draws, searched from ``exact`` where it is given.

    ``exact`` is the exact law's mode (every site) under a misfit fit: the misfit is a
    perturbation of that law, so from there, with the walks flat, one L-BFGS run finds the
    misfit's mode (the design notes: the start's cost). Without it, or where that search finds
    no proper mode, the search starts from the priors' medians ``cold``.
    """
    draws = max(settings.num_samples, settings.num_chains)
    if exact is not None:
        at = {k: (np.asarray(exact[k])[None] if k in exact else v[:1]) for k, v in cold.items()}
        lap = laplace_fit(model, inputs, at, seed, draws, runs=1)
        if lap.ok:
            return lap
    return laplace_fit(model, inputs, cold, seed, draws)


def _misfit_start(
    model: Any,
    inputs: Any,
    lap: Any,
    start: dict[str, np.ndarray],
    settings: NutsSettings,
    seed: int,
) -> tuple[dict[str, np.ndarray], float, str, np.ndarray | None]:
    """A misfit fit's start: its MAP's Laplace draws, and their covariance as the mass matrix.

    From numpyro's identity the warm-up's first window of a misfit fit ran at the maximum tree
    depth: the law's coordinates are a hundred times narrower than the walks' (figures in the
    design notes). Where the sampler runs in a ridge map's coordinates, the approximation is
    taken there (`laplace_start`, as for grouped fits); elsewhere numpyro's coordinates are the
    sampler's and the MAP's own approximation serves. ``lap``: the MAP (proper); ``start``:
    its first Laplace draws, one per chain.
    """
    how = "MAP + Laplace draws, their covariance as the first mass matrix"
    if model.ridge is None:
        cov = lap.covariance if settings.dense_mass else np.diag(lap.covariance)
        return start, 0.0, how, cov.astype(np.float32)
    found = laplace_start(model, inputs, {k: lap.mode[k] for k in start}, settings, seed)
    if found is None:
        return start, 0.0, "MAP + Laplace draws", None
    return found[0], 0.0, f"{how} (sampler's coordinates)", found[1]


# --------------------------------------------------------------------------------- updating


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
    progress_bar: bool | None = None,
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
    progress_bar : bool, optional
        As in `fit`.

    Returns
    -------
    Fit
        A NUTS fit to the old and new runs. Its data has a ``batch`` column (0 for the
        original runs, then one more per update) and its settings record the provenance:
        ``data_source`` of both tables and ``history``, a tuple with one
        entry per batch (source, number of runs, and the seed and method of the fit it
        updated).

    Raises
    ------
    DataError
        If the new runs lack a column the law needs or have invalid values.
    FitError
        If the previous fit is a Huber point fit.

    Warns
    -----
    ConvergenceWarning
        As `bayescale.inference.fit`.

    Notes
    -----
    The result is the posterior of the law given all runs under the priors the user set for
    the previous fit (the data-dependent defaults are recomputed from all runs, as
    `bayescale.inference.fit` would). Only the sampler's starting point comes from the previous
    posterior: each chain starts at a different previous draw, re-expressed in the new
    parameterisation (amplitudes re-centred, break locations re-scaled to the new range).
    That skips the MAP search of `bayescale.inference.fit` and starts the chains in the right mode.
    """
    opt.seed(seed)
    progress_bar = opt.optional_flag(progress_bar, "progress_bar")
    if fit.groups is not None:
        raise FitError(
            "update refits one curve; this fit has groups. Refit the grouped runs with the new "
            "ones: bs.fit(pd.concat([old_runs, new_runs]), ..., group=...)."
        )
    draws = fit.draws()
    if "sigma" not in draws or len(draws["sigma"]) < 2:
        raise FitError(
            f"update needs posterior draws with a noise scale; the fit has method="
            f"{fit.method!r}. Fit with method='nuts' (or 'map')."
        )
    new = from_frame(new_runs, columns=columns, dropna=dropna)
    new.require(fit.law.variables, 0, fit.law.name, vary=False)
    combined = _combine(fit.data, new)
    noise = fit.noise
    priors = resolve_priors(fit.law, combined, user_priors(fit), noise.name)
    post = fit.posterior
    old = fit.settings
    settings = NutsSettings(
        int(num_chains or (post.sizes["chain"] if fit.method in MCMC_METHODS else 4)),
        int(num_warmup or old.num_warmup or 500),
        int(num_samples or (post.sizes["draw"] if fit.method in MCMC_METHODS else 1000)),
        True if old.dense_mass is None else old.dense_mass,
        0.8 if old.target_accept is None else old.target_accept,
    )
    history = list(old.history) or [
        {"batch": 0, "source": fit.data.source, "n_runs": fit.data.n_runs}
    ]
    history.append(
        {
            "batch": int(combined.table["batch"].max()),
            "source": new.source,
            "n_runs": new.n_runs,
            "updated_fit_seed": old.seed,
            "updated_fit_method": fit.method,
        }
    )
    return _fit(
        combined,
        fit.law,
        priors,
        noise,
        "nuts",
        settings,
        seed,
        draws,
        progress_bar,
        fit.misfit,
        history=tuple(history),
    )


def user_priors(fit: Fit) -> dict[str, Prior]:
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


def make_fit(
    config: FitSettings,
    law: Law,
    data: ScalingData,
    samples: Mapping[str, np.ndarray] | None = None,
    stats: Mapping[str, np.ndarray] | None = None,
    log_likelihood: np.ndarray | None = None,
    *,
    posterior_predictive: np.ndarray | None = None,
    groups: Sequence[str] | None = None,
    sample_stats: Any = None,
    tree: Any = None,
) -> Fit:
    """The one place a `Fit` is built: from draws, or around a tree read from a file.

    From draws ``(chain, draw)``, the tree is `bayescale.inference.sampling.build_tree`'s,
    with the sampler's ``stats`` (numpyro's names) or the ``sample_stats`` group of another
    fit's tree (a group or a curve of it). A ``tree`` read from a file gets its attributes in
    this version's layout (`FitSettings.to_attrs` and the law's record).
    """
    if tree is None:
        tree = build_tree(
            samples, stats, log_likelihood, data, law, config.to_attrs(),
            posterior_predictive=posterior_predictive, groups=groups,
        )  # fmt: skip
        if sample_stats is not None:
            tree["sample_stats"] = sample_stats
    else:
        tree = tree.copy()
        kept = {k: v for k, v in tree.attrs.items() if k in _RECORD_ATTRS}
        tree.attrs = {**kept, **config.to_attrs()}
    return Fit(tree, law, config.priors, data, config)


#: the attributes of a fit's tree beside its settings: the writer's version and the law's record
_RECORD_ATTRS = ("bayescale_version", "law_declaration", "law_fingerprint")


def _tree_to_save(fit: Fit) -> Any:
    """The tree as written: its settings in one attribute, the law's record where it lacks.

    A fit loaded from a file of an earlier version lacks the law's values (or has them on its
    first runs only); saving it records them for the law registered now.
    """
    attrs = {k: v for k, v in fit.tree.attrs.items() if k in _RECORD_ATTRS}
    attrs.update(fit.settings.to_attrs())
    record = attrs.get("law_fingerprint")
    if record is not None and '"points"' in str(record) and attrs == dict(fit.tree.attrs):
        return fit.tree
    tree = fit.tree.copy()
    if record is None or '"points"' not in str(record):
        post = fit.posterior
        inputs = {v: fit.data.column(v) for v in fit.law.variables}
        attrs["law_declaration"] = json.dumps(declaration(fit.law))
        attrs["law_fingerprint"] = json.dumps(
            fingerprint_record(fit.law, {k: post[k].values for k in fit.law.param_names}, inputs)
        )
    tree.attrs = attrs
    return tree


def _saved_table(tree: Any) -> pd.DataFrame:
    """The fitted runs of a saved tree as `bayescale.inference.sampling.build_tree` stored them.

    Column names with ``/`` were percent-encoded; a missing string was stored as ``""``.
    """
    from urllib.parse import unquote

    const = tree["constant_data"].to_dataset()
    encoded = const.attrs.get("bayescale_names") == "percent-encoded"
    table = pd.DataFrame({unquote(c) if encoded else c: const[c].values for c in const.data_vars})
    for c in table.columns:
        if pd.api.types.is_string_dtype(table[c]):
            table[c] = table[c].astype(object).mask(table[c] == "", None)
    table["loss"] = tree["observed_data"]["loss"].values
    return table


# --------------------------------------------------------------------------------- loading


def load_fit(path: str | os.PathLike[str]) -> Fit:
    """Read a fit written by `Fit.save`.

    The file names its law; the law registered under that name in this session is used. The
    file also holds the law's declaration (variables, parameters and their roles) and its
    values where forecasts use it (at the posterior medians and a few draws, on the fitted
    runs and on a grid reaching three decades beyond them; see
    `bayescale.model.laws.fingerprint_record`): a registered law that differs from the one
    the fit was made with (after ``register_law(name, other_fn, overwrite=True)``) is refused
    instead of giving a silently wrong fit. A file of an earlier version without that record
    loads with a
    `PlausibilityWarning` when its law is not bayescale's own, which cannot be checked.

    Raises
    ------
    BayescaleError
        If the file is missing, unreadable, or not a complete bayescale fit (a group or an
        attribute missing or corrupted); the message names the file and what is wrong.
    LawError
        If its law is not registered in this session, or the registered law is not the one
        the fit was made with: register that law first (same function, variables and
        parameters), then load the file.
    """
    import xarray as xr

    if path is None or (isinstance(path, str) and not path.strip()):
        raise BayescaleError(f"load_fit needs the path of a saved fit; received {path!r}.")
    path = Path(path)
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise BayescaleError(f"{str(path)!r}: {what}. Pass the path written by Fit.save.")
    try:
        with xr.open_datatree(path, engine="h5netcdf") as handle:
            tree = handle.load()
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise BayescaleError(f"could not read {str(path)!r} as a bayescale fit: {exc}") from exc
    _check_saved(tree, path)
    config = FitSettings.from_attrs(tree.attrs, where=repr(str(path)), strict=True)
    law = _saved_law(tree, path, config)
    data = ScalingData(table=_saved_table(tree), source=config.data_source or str(path))
    return make_fit(config, law, data, tree=tree)


#: what every saved fit holds (its settings: `FitSettings.from_attrs`)
_SAVED_GROUPS = ("posterior", "observed_data", "constant_data")


def _check_saved(tree: Any, path: Path) -> None:
    """Refuse a file that is not a complete bayescale fit, naming the file and what lacks."""
    refit = "Save the fit again with Fit.save (or pass the file Fit.save wrote)."
    if not any(k in tree.attrs for k in ("law", "bayescale_version", SETTINGS_ATTR)):
        raise BayescaleError(
            f"{str(path)!r} is a netCDF file but not a bayescale fit (it has no "
            f"{SETTINGS_ATTR!r}, 'law' or 'bayescale_version' attribute). Pass the path "
            "written by Fit.save."
        )
    missing = [g for g in _SAVED_GROUPS if g not in tree.children]
    if "observed_data" in tree.children and "loss" not in tree["observed_data"].data_vars:
        missing.append("observed_data/loss")
    if missing:
        raise BayescaleError(
            f"{str(path)!r} is an incomplete bayescale fit: it lacks the group(s) "
            f"{', '.join(repr(m) for m in missing)}. {refit}"
        )
    for key in ("law_declaration", "law_fingerprint"):
        if key in tree.attrs:
            _saved_json(tree, key, path, object)


def _saved_json(tree: Any, key: str, path: Path, kind: type) -> Any:
    """The JSON attribute ``key`` of a saved fit, decoded; a `BayescaleError` if it is not."""
    return json_attr(tree.attrs, key, repr(str(path)), kind)


def _saved_law(tree: Any, path: Path, config: FitSettings) -> Law:
    """The registered law of a saved fit, checked against what the file says of its law."""
    name, options = config.law, config.law_options
    fix = (
        f"Register the law the fit was made with first (bs.register_law({name!r}, fn, "
        "variables=..., params=..., overwrite=True) with the same function, variables and "
        "parameters), then call load_fit again."
    )
    try:
        law = get_law(name, **options)
    except LawError as exc:
        raise LawError(
            f"{str(path)!r} holds a fit of law {name!r}, which is not registered in this "
            f"session ({exc}). {fix}"
        ) from exc
    if "law_declaration" in tree.attrs:  # files of earlier versions lack it
        saved = _saved_json(tree, "law_declaration", path, list)
        current = json.loads(json.dumps(declaration(law)))
        if saved != current:
            raise LawError(
                f"{str(path)!r} holds a fit of law {name!r} declared as {saved}, but the law "
                f"registered as {name!r} now is declared as {current}. {fix}"
            )
    if "law_fingerprint" not in tree.attrs:
        if not builtin_unchanged(name):
            warn(
                f"{str(path)!r} was saved by an earlier version without the values of its "
                f"law, so the law {name!r} registered now cannot be checked against the one "
                "the fit was made with: its forecasts are right only if it is the same "
                "function. Save the loaded fit again to record them.",
                PlausibilityWarning,
            )
        return law
    record = _saved_json(tree, "law_fingerprint", path, dict)
    table = _saved_table(tree)
    missing = [v for v in law.variables if v not in table.columns]
    if missing:
        raise LawError(
            f"{str(path)!r} holds a fit of law {name!r}, but its runs have no "
            f"{', '.join(repr(v) for v in missing)}, which the law registered as {name!r} now "
            f"takes. {fix}"
        )
    try:
        differs = check_fingerprint(law, record, {v: table[v].to_numpy() for v in law.variables})
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, BayescaleError):
            raise
        raise BayescaleError(
            f"{str(path)!r}: its attribute 'law_fingerprint' is corrupted ({exc!r}). Save "
            "the fit again with Fit.save."
        ) from None
    if differs:
        raise LawError(
            f"{str(path)!r} holds a fit of law {name!r}, but the law registered as "
            f"{name!r} now computes something else: {differs}. {fix}"
        )
    if "points" not in record and not builtin_unchanged(name):
        warn(
            f"{str(path)!r} was saved by an earlier version that kept its law's values on "
            f"its first runs only, so the law {name!r} registered now is checked only there, "
            "not where forecasts extrapolate. Save the loaded fit again to record them.",
            PlausibilityWarning,
        )
    return law

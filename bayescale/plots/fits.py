"""Plots of fits, forecasts and allocations (matplotlib, imported lazily).

Every function draws into ``ax`` (a new figure when None) and returns the Axes, except the
multi-panel plots drawn by arviz-plots on the fit's DataTree: `plot_posterior` (pair plot),
`plot_trace`, `plot_rank` and `plot_ppc_dist`, which make their own figure (size it with
``figure_kwargs={"figsize": ...}``) and return arviz-plots' `PlotCollection` or `PlotMatrix`
(the figure is ``pc.viz["figure"].item()``); they refuse ``ax``.
No statistics are computed here beyond calling `bayescale.analysis.forecast.forecast` and reading
`Forecast.quantiles` and `Allocation.summary`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bayescale import options as opt
from bayescale.analysis.forecast import forecast as _forecast_at
from bayescale.errors import OptionError

if TYPE_CHECKING:
    from bayescale.analysis.allocate import Allocation
    from bayescale.analysis.design import Design
    from bayescale.analysis.forecast import Forecast
    from bayescale.inference.fit import Fit

__all__ = [
    "REFERENCE_EXPONENTS",
    "VIEWS",
    "count_formatter",
    "plot_allocation",
    "plot_design",
    "plot_fit",
    "plot_forecast",
    "plot_groups",
    "plot_posterior",
    "plot_ppc_dist",
    "plot_rank",
    "plot_trace",
]

#: published allocation exponents (N_opt ∝ C^a, D_opt ∝ C^b) drawn by `plot_allocation`
REFERENCE_EXPONENTS: dict[str, tuple[str, float, float]] = {
    # Table 2 of doi:10.48550/arXiv.2203.15556, approach 3 (the parametric fit of this law)
    "hoffmann": ("Hoffmann et al. 2022 (approach 3)", 0.46, 0.54),
    # section 6 of doi:10.48550/arXiv.2001.08361 (N ∝ C^0.73, tokens ∝ C^0.27)
    "kaplan": ("Kaplan et al. 2020", 0.73, 0.27),
}
VIEWS = ("auto", "size", "isoflop")
_LABELS = {
    "n_params": "parameters N",
    "n_tokens": "training tokens D",
    "unique_tokens": "unique tokens U",
    "compute": "training compute C (FLOP)",
    "data_size": "data size",
}
_COUNTS = ("n_params", "n_tokens", "unique_tokens")
_SUFFIXES = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))


def count_formatter() -> Any:
    """A matplotlib tick formatter for counts: 1K, 10M, 1B, 1T (scientific above 1e15).

    Examples
    --------
    >>> count_formatter()(7e10, 0)
    '70B'
    """
    from matplotlib.ticker import FuncFormatter

    def fmt(value: float, _: Any) -> str:
        if not np.isfinite(value) or value <= 0:
            return ""
        if value >= 1e15:
            return f"{value:.0e}".replace("e+", "e")
        for scale, suffix in _SUFFIXES:
            if value >= scale:
                return f"{value / scale:.3g}{suffix}"
        return f"{value:.3g}"

    return FuncFormatter(fmt)


# ------------------------------------------------------------------------------ plots


def plot_fit(
    fit: Fit,
    *,
    view: str = "auto",
    ax: Any = None,
    ci_probs: Sequence[float] = opt.BANDS,
    max_curves: int = 10,
    num: int = 60,
    seed: int = 0,
) -> Any:
    """The runs and the posterior of the law: median curve with interval bands per group.

    Parameters
    ----------
    fit : Fit
        Any fit.
    view : {"auto", "size", "isoflop"}, default "auto"
        ``"size"``: loss against tokens D, one curve per model size N. ``"isoflop"``: loss
        against N, one curve per compute budget C (D = C / (6 N)). ``"auto"``: IsoFLOP when
        the runs have at most ``max_curves`` distinct budgets, else by size. Laws of one
        variable always plot loss against that variable.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when None.
    ci_probs : sequence of float, default (0.5, 0.9)
        Probability mass of each band (equal-tailed posterior intervals of the law's mean).
    max_curves : int, default 10
        Most curves; runs are grouped by equal-count bins of log N (or log C) beyond that.
    num : int, default 60
        Points per curve.
    seed : int, default 0
        Passed to `forecast`.

    Returns
    -------
    matplotlib.axes.Axes
        With one median line per group, one band per group and probability, and one scatter
        of the runs per group.

    Notes
    -----
    A group's curve is drawn at the geometric mean of its N (or C) over the range of the
    group's D (or N); other inputs (``unique_tokens``) at their group median.
    """
    if view not in VIEWS:
        raise OptionError(f"unknown view {view!r}. Available: {', '.join(VIEWS)}.")
    if int(max_curves) < 1:
        raise OptionError(f"max_curves must be at least 1; received {max_curves!r}.")
    plt = _pyplot()
    ax = _axes(plt, ax)
    table = fit.data.table
    law_vars = tuple(fit.law.variables)
    two_d = {"n_params", "n_tokens"} <= set(law_vars)
    if not two_d:
        x_name = law_vars[0]
        labels = np.zeros(len(table), dtype=int)
        by = None
    else:
        if view == "auto":
            n_c = _group_labels(table["compute"].to_numpy(float), max_curves)[1]
            view = "isoflop" if n_c <= max_curves and n_c < len(table) else "size"
        by, x_name = ("n_params", "n_tokens") if view == "size" else ("compute", "n_params")
        labels, _ = _group_labels(table[by].to_numpy(float), max_curves)
    groups = np.unique(labels)
    frames = []
    for g in groups:
        rows = table[labels == g]
        x = rows[x_name].to_numpy(float)
        grid = np.geomspace(x.min() / 1.1, x.max() * 1.1, num)
        at = pd.DataFrame({x_name: grid})
        if by is not None:
            centre = float(np.exp(np.log(rows[by].to_numpy(float)).mean()))
            at[by] = centre
            if by == "compute":
                at["n_tokens"] = centre / (6.0 * grid)
        for v in law_vars:
            if v not in at:
                at[v] = float(rows[v].median())
        at["_group"] = g
        frames.append(at)
    points = pd.concat(frames, ignore_index=True)
    at = points[list(dict.fromkeys(law_vars))]
    fc = _forecast_at(fit, at, kind="mean", seed=seed, warn=False)
    probs = sorted(float(p) for p in ci_probs)
    quant = fc.quantiles(_band_probs(probs))
    colours = _colours(plt, len(groups))
    for colour, g in zip(colours, groups, strict=True):
        sel = (points["_group"] == g).to_numpy()
        x = points.loc[sel, x_name].to_numpy()
        q = quant[sel]
        label = _group_label(by, points.loc[sel, by].iloc[0]) if by is not None else "posterior"
        _bands(ax, x, q, probs, colour)
        ax.plot(x, q["q50"], color=colour, lw=1.6, label=label)
        rows = table[labels == g]
        ax.scatter(rows[x_name], rows["loss"], s=12, color=colour, alpha=0.8, zorder=3)
    _log_axis(ax, "x", x_name)
    _loss_axis(ax)
    ax.set_ylabel("loss")
    kind = {"size": "one curve per model size", "isoflop": "IsoFLOP: one curve per budget"}
    title = f"{fit.law.name}: runs and posterior median"
    ax.set_title(title + (f" ({kind[view]})" if by is not None else ""), fontsize=10)
    _legend(ax, plt, probs, "law (posterior)")
    return ax


def plot_groups(
    fit: Fit,
    *,
    groups: Sequence[str] | None = None,
    ax: Any = None,
    ci_prob: float = 0.9,
    population: bool = True,
    x_range: tuple[float, float] | None = None,
    num: int = 60,
    seed: int = 0,
) -> Any:
    """Per-group curves of a grouped fit, with the population's band for a new group.

    Parameters
    ----------
    fit : Fit
        A grouped fit (``bs.fit(..., group=...)``) of a law of one variable.
    groups : sequence of str, optional
        The groups to draw; default all of them.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when None.
    ci_prob : float, default 0.9
        Probability mass of the bands.
    population : bool, default True
        Draw the predictive band of a new group drawn from the population (grey), when the fit
        has one (partial pooling of every parameter, or complete pooling); otherwise each
        group's own band of the law's mean.
    x_range : (float, float), optional
        The range of the variable; default that of the chosen groups' runs.
    num : int, default 60
        Points per curve.
    seed : int, default 0
        Passed to `forecast`.

    Returns
    -------
    matplotlib.axes.Axes
        One median line and scatter of runs per group, and the bands.
    """
    from bayescale.errors import OptionError as _Err

    if fit.groups is None:
        raise _Err("plot_groups draws a grouped fit (bs.fit(..., group=...)); use plot_fit.")
    if len(fit.law.variables) != 1:
        raise _Err(
            f"plot_groups draws laws of one variable; {fit.law.name!r} has "
            f"{list(fit.law.variables)}. Use plot_fit(bs.group_fit(fit, label)) per group."
        )
    chosen = list(fit.groups if groups is None else groups)
    unknown = [g for g in chosen if g not in fit.groups]
    if unknown:
        raise _Err(f"unknown groups {unknown}; the fit has {fit.groups}.")
    plt = _pyplot()
    ax = _axes(plt, ax)
    x_name = fit.law.variables[0]
    table = fit.data.table
    x_all = table.loc[table["group"].astype(str).isin(chosen), x_name].to_numpy(float)
    lo, hi = x_range if x_range is not None else (x_all.min(), x_all.max())
    grid = np.geomspace(lo, hi, num)
    at = pd.DataFrame({x_name: grid})
    probs = _band_probs([ci_prob])
    has_population = fit.pooling == "complete" or (fit.pooling == "partial" and _pools_all(fit))
    if population and has_population:
        fc = _forecast_at(fit, at, seed=seed, warn=False, group=None)
        q = fc.quantiles(probs)
        ax.fill_between(grid, q.iloc[:, 0], q.iloc[:, -1], color="0.8", alpha=0.6, lw=0)
        ax.plot(grid, q["q50"], color="0.4", lw=1.2, ls="--", label=f"new group ({ci_prob:.0%})")
    colours = _colours(plt, len(chosen))
    for colour, g in zip(colours, chosen, strict=True):
        fc = _forecast_at(fit, at, kind="mean", seed=seed, warn=False, group_label=g)
        q = fc.quantiles(probs)
        if not (population and has_population):
            ax.fill_between(grid, q.iloc[:, 0], q.iloc[:, -1], color=colour, alpha=0.2, lw=0)
        ax.plot(grid, q["q50"], color=colour, lw=1.3, label=g if len(chosen) <= 10 else None)
        rows = table[table["group"].astype(str) == g]
        ax.scatter(rows[x_name], rows["loss"], s=10, color=colour, alpha=0.8, zorder=3)
    _log_axis(ax, "x", x_name)
    _loss_axis(ax)
    ax.set_ylabel("loss")
    ax.set_title(f"{fit.law.name}: {len(chosen)} groups, pooling={fit.pooling!r}", fontsize=10)
    ax.legend(fontsize=7)
    return ax


def _pools_all(fit: Fit) -> bool:
    pool = set(fit.settings.pool)
    return {*fit.law.param_names, "sigma"} <= pool


def plot_forecast(
    forecast: Forecast,
    *,
    x: str | None = None,
    ax: Any = None,
    ci_probs: Sequence[float] = opt.BANDS,
    fit: Fit | None = None,
) -> Any:
    """A forecast's intervals against one input, the observed range shaded.

    Points along one path (three or more, each input rising or falling with ``x``: a grid
    over sizes, a compute-optimal frontier) are drawn as a fan; other points (one, two, or
    points that do not lie on one line) as separate nested intervals at each point, labelled
    with its inputs, never joined.

    Parameters
    ----------
    forecast : Forecast
        From `bayescale.analysis.forecast.forecast`; its points are sorted by ``x``.
    x : str, optional
        Input on the horizontal axis; default ``compute`` when present, else the law's first
        input.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when None.
    ci_probs : sequence of float, default (0.5, 0.9)
        Probability mass of each band of the fan (each interval of a point).
    fit : Fit, optional
        Adds the fitted runs as points.

    Returns
    -------
    matplotlib.axes.Axes
        With the median (a line along a path, markers at separate points), one band (or
        interval) per probability, a shaded span over the observed range of ``x`` and, with
        ``fit``, a scatter of the runs.
    """
    plt = _pyplot()
    inputs = list(forecast.tree["predictions_constant_data"].data_vars)
    if x is None:
        x = "compute" if "compute" in inputs else inputs[0]
    if x not in inputs:
        raise OptionError(f"x={x!r} is not an input of the forecast; inputs are {inputs}.")
    ax = _axes(plt, ax)
    values = forecast.points[x].to_numpy(float)
    order = np.argsort(values, kind="stable")
    probs = sorted(float(p) for p in ci_probs)
    quant = forecast.quantiles(_band_probs(probs)).iloc[order]
    xs = values[order]
    along = _one_path(forecast.points.iloc[order], inputs)
    observed = forecast.observed_range.get(x)
    if observed is not None:
        ax.axvspan(*observed, color="0.9", zorder=0, label="observed range")
    colour = _colours(plt, 1)[0]
    median = f"median ({forecast.kind})"
    if along:
        _bands(ax, xs, quant, probs, colour)
        ax.plot(xs, quant["q50"], color=colour, lw=1.8, label=median)
    else:
        _intervals(ax, xs, quant, probs, colour)
        ax.scatter(xs, quant["q50"], color=colour, marker="D", s=28, zorder=4, label=median)
        if len(xs) <= 12:
            for i, row in enumerate(forecast.points.iloc[order][inputs].itertuples(index=False)):
                text = ", ".join(
                    f"{_SHORT.get(k, k)}={count_formatter()(v, 0) if k in _COUNTS else f'{v:.2g}'}"
                    for k, v in zip(inputs, row, strict=True)
                    if k != x or len(inputs) == 1
                )
                ax.annotate(
                    text,
                    (xs[i], quant["q50"].iloc[i]),
                    xytext=(6, 0),
                    textcoords="offset points",
                    fontsize=7,
                    va="center",
                )
    preds = forecast.tree["predictions"]
    if forecast.kind == "predictive" and "loss_law" in preds:
        # a fit with its misfit: where the width comes from, as the inner 90% intervals of the
        # law alone (its parameters) and of the law with its misfit (no run noise)
        top = max(probs)
        inner = [("loss_law", ":", "law only (parameters)"), ("loss_mean", "--", "+ misfit")]
        for name, style, label in inner:
            values_ = preds[name].values.reshape(-1, len(xs))[:, order]
            lo, hi = np.quantile(values_, [(1 - top) / 2, (1 + top) / 2], axis=0)
            if along:
                ax.plot(xs, lo, color="0.2", ls=style, lw=1, label=f"{top:.0%}: {label}")
                ax.plot(xs, hi, color="0.2", ls=style, lw=1)
            else:
                mark = "_" if style == ":" else "1"
                ax.scatter(
                    np.r_[xs, xs],
                    np.r_[lo, hi],
                    color="0.2",
                    marker=mark,
                    s=60,
                    zorder=5,
                    label=f"{top:.0%}: {label}",
                )
    if fit is not None and x in fit.data.table:
        ax.scatter(
            fit.data.table[x],
            fit.data.table["loss"],
            s=10,
            color="0.3",
            zorder=3,
            label="fitted runs",
        )
    _log_axis(ax, "x", x)
    _loss_axis(ax)
    ax.set_ylabel("loss" + (" (new run)" if forecast.kind == "predictive" else " (law)"))
    what = "extrapolation beyond the shaded range"
    ax.set_title(
        f"forecast: {what}" if along else f"forecast at {len(xs)} point(s): {what}", fontsize=10
    )
    _legend(ax, plt, probs, f"{forecast.kind} interval")
    return ax


_SHORT = {"n_params": "N", "n_tokens": "D", "compute": "C", "unique_tokens": "U"}


def _one_path(points: pd.DataFrame, inputs: Sequence[str]) -> bool:
    """Whether sorted points lie along one path: three or more, each input monotone along it."""
    if len(points) < 3:
        return False
    for name in inputs:
        step = np.diff(points[name].to_numpy(float))
        if (step > 0).any() and (step < 0).any():
            return False
    return True


def _intervals(
    ax: Any, xs: np.ndarray, quant: pd.DataFrame, probs: Sequence[float], colour: Any
) -> None:
    """Nested intervals at separate points: the inner (narrower) ones thicker and darker."""
    for rank, p in enumerate(sorted(probs, reverse=True)):
        lo, hi = quant[_qname((1 - p) / 2)], quant[_qname((1 + p) / 2)]
        ax.vlines(xs, lo, hi, color=colour, alpha=min(1.0, 2.5 * _alpha(p, probs)), lw=2 + 3 * rank)


def plot_allocation(
    allocation: Allocation,
    *,
    ax: Any = None,
    ci_probs: Sequence[float] = opt.BANDS,
    references: Sequence[str] | None = ("hoffmann", "kaplan"),
) -> Any:
    """Compute-optimal N_opt(C) and D_opt(C) with posterior bands and published exponents.

    Parameters
    ----------
    allocation : Allocation
        From `bayescale.analysis.allocate.compute_optimal`. With one budget, its intervals are drawn
        as bars at that budget and the references over a decade on either side.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when None.
    ci_probs : sequence of float, default (0.5, 0.9)
        Probability mass of each band.
    references : sequence of str or None, default ("hoffmann", "kaplan")
        Keys of `REFERENCE_EXPONENTS` drawn as dashed lines of slope a (for N) and b (for D)
        through the posterior medians at the middle budget. None draws none.

    Returns
    -------
    matplotlib.axes.Axes
        Two median lines, one band per quantity and probability, two dashed lines per
        reference.
    """
    refs = list(references or ())
    unknown = [r for r in refs if r not in REFERENCE_EXPONENTS]
    if unknown:
        raise OptionError(
            f"unknown reference {unknown[0]!r}. Available: {', '.join(REFERENCE_EXPONENTS)}."
        )
    plt = _pyplot()
    ax = _axes(plt, ax)
    probs = sorted(float(p) for p in ci_probs)
    tables = {p: allocation.summary(ci_prob=p) for p in probs}
    first = tables[probs[0]]
    compute = first["compute"].to_numpy()
    order = np.argsort(compute)
    compute = compute[order]
    colours = _colours(plt, 2)
    mid = len(compute) // 2
    # one budget: its intervals as bars, and the references' slopes over a decade either side
    single = len(compute) < 2
    span = compute[mid] * np.array([0.1, 1.0, 10.0]) if single else compute
    styles = ("--", ":", "-.")
    for colour, (name, label) in zip(
        colours, (("n_params", "N_opt (parameters)"), ("n_tokens", "D_opt (tokens)")), strict=True
    ):
        for rank, p in enumerate(probs[::-1]):
            t = tables[p].iloc[order]
            lo = t[f"{name}_{_qname((1 - p) / 2)}"].to_numpy()
            hi = t[f"{name}_{_qname((1 + p) / 2)}"].to_numpy()
            if single:
                alpha = min(1.0, 2.5 * _alpha(p, probs))
                ax.vlines(compute, lo, hi, color=colour, alpha=alpha, lw=2 + 3 * rank)
            else:
                ax.fill_between(compute, lo, hi, color=colour, alpha=_alpha(p, probs), lw=0)
        median = first[f"{name}_median"].to_numpy()[order]
        if single:
            ax.scatter(compute, median, color=colour, marker="D", s=28, zorder=4, label=label)
        else:
            ax.plot(compute, median, color=colour, lw=1.8, label=label)
        for style, key in zip(styles, refs, strict=False):
            text, a, b = REFERENCE_EXPONENTS[key]
            slope = a if name == "n_params" else b
            line = median[mid] * (span / compute[mid]) ** slope
            ax.plot(
                span,
                line,
                ls=style,
                color=colour,
                lw=1.0,
                alpha=0.8,
                label=f"{text}: {'a' if name == 'n_params' else 'b'} = {slope:.2f}",
            )
    _log_axis(ax, "x", "compute")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(count_formatter())
    ax.set_ylabel("compute-optimal N and D")
    ex = allocation.exponents_summary()
    ax.set_title(
        f"compute-optimal allocation: a = {ex.loc['a', 'median']:.3f}, "
        f"b = {ex.loc['b', 'median']:.3f} (posterior medians)",
        fontsize=10,
    )
    _legend(ax, plt, probs, "posterior interval")
    return ax


def plot_posterior(fit: Fit, *, var_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
    """Pair plot of the posterior of the exponents and the floor, drawn by arviz-plots.

    Parameters
    ----------
    fit : Fit
        A fit with more than one draw.
    var_names : sequence of str, optional
        Parameters; default the law's exponents and floor (``alpha``, ``beta``, ``E`` for the
        Chinchilla law).
    **kwargs
        Passed to `arviz_plots.plot_pair` (for example ``marginal_kind="hist"``,
        ``figure_kwargs={"figsize": (7, 7)}``).

    Returns
    -------
    arviz_plots.PlotMatrix
        The pair plot: its figure is ``pm.viz["figure"].item()`` and its grid of Axes
        ``pm.viz["plot"].values``.

    Raises
    ------
    OptionError
        If ``ax`` is passed (a pair plot needs several Axes: it makes its own figure), a name
        is not a posterior variable, or the fit has a single draw.
    """
    names = (
        list(var_names)
        if var_names is not None
        else [p.name for p in fit.law.params if p.role in ("exponent", "floor")]
    )
    _posterior_names(fit, names, "a pair plot", kwargs)
    kwargs.setdefault("figure_kwargs", {"figsize": (2.4 * len(names), 2.4 * len(names))})
    with _arviz_context() as azp, warnings.catch_warnings():
        # arviz-plots 0.8 passes a single RGB colour as `c` to Axes.scatter
        warnings.filterwarnings(
            "ignore", message=r"\*c\* argument looks like", category=UserWarning
        )
        return azp.plot_pair(fit.tree, var_names=names, backend="matplotlib", **kwargs)


def plot_trace(fit: Fit, *, var_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
    """Trace plot: each chain's draws of each parameter in order, drawn by arviz-plots.

    Parameters
    ----------
    fit : Fit
        A fit with more than one draw (NUTS for a meaningful trace).
    var_names : sequence of str, optional
        Parameters; default all of ``fit.param_names``.
    **kwargs
        Passed to `arviz_plots.plot_trace` (for example
        ``figure_kwargs={"figsize": (8, 10)}``).

    Returns
    -------
    arviz_plots.PlotCollection
        One panel per parameter; the figure is ``pc.viz["figure"].item()``.

    Raises
    ------
    OptionError
        If ``ax`` is passed (one panel per parameter: it makes its own figure), a name is not
        a posterior variable, or the fit has a single draw.
    """
    names = list(var_names) if var_names is not None else fit.param_names
    _posterior_names(fit, names, "a trace plot", kwargs)
    with _arviz_context() as azp:
        pc = azp.plot_trace(fit.tree, var_names=names, backend="matplotlib", **kwargs)
    return _spaced(pc)


def plot_rank(fit: Fit, *, var_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
    """Rank plot: the fractional ranks of each chain's draws, drawn by arviz-plots.

    Chains that sample the same distribution have uniform ranks (flat curves inside the
    envelope); a chain stuck in one region shows a slope (Vehtari et al. 2021,
    doi:10.1214/20-BA1221).

    Parameters
    ----------
    fit : Fit
        A fit with several chains.
    var_names : sequence of str, optional
        Parameters; default all of ``fit.param_names``.
    **kwargs
        Passed to `arviz_plots.plot_rank`.

    Returns
    -------
    arviz_plots.PlotCollection
        One panel per parameter; the figure is ``pc.viz["figure"].item()``.

    Raises
    ------
    OptionError
        As `plot_trace`.
    """
    names = list(var_names) if var_names is not None else fit.param_names
    _posterior_names(fit, names, "a rank plot", kwargs)
    with _arviz_context() as azp:
        pc = azp.plot_rank(fit.tree, var_names=names, backend="matplotlib", **kwargs)
    return _spaced(pc)


def _spaced(pc: Any) -> Any:
    """Lay out arviz-plots' panel grid so that titles clear the axis labels of the row above.

    Its figures come without a layout engine; matplotlib's constrained layout does the spacing
    (a layout the caller chose through ``figure_kwargs`` is kept).
    """
    fig = pc.viz["figure"].item()
    if fig.get_layout_engine() is None:
        fig.set_layout_engine("constrained")
    return pc


def plot_ppc_dist(fit: Fit | Any, *, group: str = "posterior_predictive", **kwargs: Any) -> Any:
    """Replicated against observed loss distributions, drawn by arviz-plots.

    Parameters
    ----------
    fit : Fit or xarray.DataTree
        A NUTS or MAP fit (its tree has a ``posterior_predictive`` group), or the tree of
        `bayescale.prior_predictive`.
    group : {"posterior_predictive", "prior_predictive"}, default "posterior_predictive"
        The replicated data to draw.
    **kwargs
        Passed to `arviz_plots.plot_ppc_dist` (for example ``num_samples=100``).

    Returns
    -------
    arviz_plots.PlotCollection
        The figure is ``pc.viz["figure"].item()``.

    Raises
    ------
    OptionError
        If ``ax`` is passed, or the tree has no ``group`` (a Huber fit, or a fit saved by an
        older bayescale: use `bayescale.ppc`, whose tree has one).
    """
    tree = getattr(fit, "tree", fit)
    if "ax" in kwargs:
        raise OptionError(_NO_AX.format(what="plot_ppc_dist"))
    if group not in tree.children:
        raise OptionError(
            f"the tree has no {group!r} group; its groups are {sorted(tree.children)}. A Huber "
            "fit has none; for a fit saved by an older bayescale use bayescale.ppc(fit).tree."
        )
    with _arviz_context() as azp:
        return azp.plot_ppc_dist(tree, group=group, backend="matplotlib", **kwargs)


_NO_AX = (
    "{what} draws several panels in its own figure and takes no ax; size it with "
    "figure_kwargs={{'figsize': (w, h)}} and get the figure as pc.viz['figure'].item()."
)


def _posterior_names(fit: Fit, names: Sequence[str], what: str, kwargs: dict[str, Any]) -> None:
    """Refuse ``ax``, unknown names and one-draw fits for the arviz-plots wrappers."""
    if "ax" in kwargs:
        raise OptionError(_NO_AX.format(what=what))
    missing = [v for v in names if v not in fit.posterior]
    if missing:
        raise OptionError(
            f"{missing[0]!r} is not a posterior variable; variables are {fit.param_names}."
        )
    sizes = fit.posterior.sizes
    if sizes["chain"] * sizes["draw"] < 2:
        raise OptionError(
            f"the fit has a single draw (method={fit.method!r}); {what} needs a posterior. "
            "Refit with method='nuts' or 'map'."
        )


# ------------------------------------------------------------------------------ helpers


def _pyplot() -> Any:
    import matplotlib.pyplot as plt

    return plt


def _arviz_plots() -> Any:
    """Import arviz-plots, silencing its import-time incompatibilities with matplotlib 3.11."""
    import matplotlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", matplotlib.MatplotlibDeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        # arviz-plots 0.8 reads `matplotlib.style.core`, which matplotlib 3.11 no longer
        # imports with `matplotlib.style`
        import matplotlib.style.core  # noqa: F401

        # isort: split
        import arviz_plots
        import arviz_plots.backend.matplotlib  # noqa: F401
    return arviz_plots


@contextlib.contextmanager
def _arviz_context() -> Any:
    """arviz-plots, with matplotlib's colour cycle as hex strings for the duration.

    matplotlib 3.11 lists the cycle's colours as RGB tuples, which arviz-plots 0.8 cannot
    reshape into its aesthetics (``cannot reshape array``); a local ``rc_context`` (no global
    state changes) gives it the same colours as hex strings.
    """
    import matplotlib
    from cycler import cycler
    from matplotlib.colors import to_hex

    _pyplot()
    azp = _arviz_plots()
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color")
    rc = {"axes.prop_cycle": cycler(color=[to_hex(c) for c in colours])} if colours else {}
    with matplotlib.rc_context(rc):
        yield azp


def _axes(plt: Any, ax: Any) -> Any:
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    return ax


def _colours(plt: Any, n: int) -> list[Any]:
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    return [plt.get_cmap("viridis")(v) for v in np.linspace(0, 0.95, n)]


def _band_probs(probs: Sequence[float]) -> list[float]:
    for p in probs:
        if not 0 < p < 1:
            raise OptionError(f"ci_probs must lie in (0, 1); received {list(probs)!r}.")
    out = [0.5]
    for p in probs:
        out += [(1 - p) / 2, (1 + p) / 2]
    return out


def _qname(p: float) -> str:
    return f"q{p * 100:g}"


def _alpha(p: float, probs: Sequence[float]) -> float:
    """Band opacity: the inner (narrower) bands darker."""
    rank = sorted(probs, reverse=True).index(p)
    return 0.12 + 0.12 * rank


def _bands(
    ax: Any, x: np.ndarray, quant: pd.DataFrame, probs: Sequence[float], colour: Any
) -> None:
    for p in sorted(probs, reverse=True):
        lo, hi = quant[_qname((1 - p) / 2)], quant[_qname((1 + p) / 2)]
        ax.fill_between(x, lo, hi, color=colour, alpha=_alpha(p, probs), lw=0)


def _legend(ax: Any, plt: Any, probs: Sequence[float], what: str) -> None:
    from matplotlib.patches import Patch

    handles, labels = ax.get_legend_handles_labels()
    for p in sorted(probs, reverse=True):
        handles.append(Patch(color="0.3", alpha=_alpha(p, probs)))
        labels.append(f"{p:.0%} {what}")
    ax.legend(handles, labels, fontsize=8, frameon=False, loc="best")


def _log_axis(ax: Any, which: str, name: str) -> None:
    from matplotlib.ticker import NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    if name in _COUNTS:
        axis.set_major_formatter(count_formatter())
        axis.set_minor_formatter(NullFormatter())
    (ax.set_xlabel if which == "x" else ax.set_ylabel)(_LABELS.get(name, name))


def _loss_axis(ax: Any) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _group_labels(values: np.ndarray, max_groups: int) -> tuple[np.ndarray, int]:
    """Group runs by value: labels 0..G-1 and the number of distinct values.

    One group per distinct value (to 0.01 decade) when there are at most ``max_groups``, else
    equal-count bins of the log value.
    """
    logs = np.log10(values)
    rounded = np.round(logs, 2)
    distinct = np.unique(rounded)
    if distinct.size <= max_groups:
        return np.searchsorted(distinct, rounded), distinct.size
    edges = np.quantile(logs, np.linspace(0, 1, max_groups + 1))
    raw = np.clip(np.searchsorted(edges, logs, side="right") - 1, 0, max_groups - 1)
    return np.unique(raw, return_inverse=True)[1], distinct.size


def _group_label(by: str, value: float) -> str:
    if by == "compute":
        return f"C = {value:.2g} FLOP"
    name = {"n_params": "N", "n_tokens": "D"}.get(by, by)
    return f"{name} ≈ {count_formatter()(value, 0)}"


def plot_design(
    design: Design,
    *,
    ax: Any = None,
    picks: bool = True,
    cmap: str = "viridis",
) -> Any:
    """Candidate runs in the (N, D) plane coloured by gain per FLOP, with the runs and target.

    Parameters
    ----------
    design : Design
        From `bayescale.analysis.design.design`.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when None.
    picks : bool, default True
        Number the batch's chosen runs (1, 2, ...) in the order they were chosen.
    cmap : str, default "viridis"
        Colour map of the gain per FLOP (log scale over the positive gains; candidates with
        no expected gain are drawn hollow).

    Returns
    -------
    matplotlib.axes.Axes
        A scatter of the candidates (with a colour bar), the fitted runs as black crosses, the
        target as a red star (a ``loss_at`` target) or its IsoFLOP line (a budget target), and
        dashed IsoFLOP lines through the smallest and largest fitted compute.
    """
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    ax = _axes(plt, ax)
    table = design.table
    n = table["n_params"].to_numpy()
    d = table["n_tokens"].to_numpy()
    g = table["gain_per_flop"].to_numpy()
    pos = g > 0
    if pos.any():
        lo, hi = float(g[pos].min()), float(g[pos].max())
        norm = LogNorm(lo, hi if hi > lo else lo * 10)
        art = ax.scatter(n[pos], d[pos], c=g[pos], cmap=cmap, norm=norm, s=28, zorder=2)
        ax.figure.colorbar(art, ax=ax, label="expected gain per FLOP (width / FLOP)")
    if (~pos).any():
        ax.scatter(
            n[~pos],
            d[~pos],
            facecolors="none",
            edgecolors="0.6",
            s=28,
            lw=0.8,
            label="no expected gain",
            zorder=2,
        )
    runs = design.runs
    ax.scatter(
        runs["n_params"],
        runs["n_tokens"],
        marker="x",
        color="k",
        s=30,
        lw=1.2,
        label="fitted runs",
        zorder=3,
    )
    ns = np.geomspace(
        min(n.min(), runs["n_params"].min()) / 2, max(n.max(), runs["n_params"].max()) * 2, 50
    )
    for c, style in ((runs["compute"].min(), ":"), (runs["compute"].max(), "--")):
        ax.plot(ns, c / (6.0 * ns), ls=style, color="0.5", lw=0.8)
    tgt = design.target
    if tgt.kind == "loss_at":
        ax.scatter(
            [tgt.n_params],
            [tgt.n_tokens],
            marker="*",
            s=220,
            color="tab:red",
            edgecolors="k",
            lw=0.6,
            label="target",
            zorder=4,
        )
    else:
        ax.plot(
            ns,
            tgt.compute / (6.0 * ns),
            color="tab:red",
            lw=1.4,
            label=f"target: C = {tgt.compute:.2g}",
        )
    if picks:
        for k, row in enumerate(design.batch.itertuples(), start=1):
            ax.annotate(
                str(k),
                (row.n_params, row.n_tokens),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=9,
                fontweight="bold",
                color="tab:red",
                zorder=5,
            )
            ax.scatter(
                [row.n_params],
                [row.n_tokens],
                s=90,
                facecolors="none",
                edgecolors="tab:red",
                lw=1.4,
                zorder=4,
            )
    _log_axis(ax, "x", "n_params")
    _log_axis(ax, "y", "n_tokens")
    ax.set_title(f"which run next: {tgt.describe()}", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="best")
    return ax

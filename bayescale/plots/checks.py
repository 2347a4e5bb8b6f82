"""Plots of checks, comparisons and break detection (re-exported by `bayescale.plots`).

Matplotlib only, imported when a plot is drawn. Every function takes an optional ``ax`` to draw
into and returns the matplotlib ``Axes``. Nothing here computes statistics: the numbers come from
the result objects (`bayescale.analysis.checks.Check`, the table of
`bayescale.analysis.compare.compare`,
`bayescale.analysis.compare.BreakReport`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bayescale.errors import OptionError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from bayescale.analysis.backtest import Backtest
    from bayescale.analysis.breaks import BreakReport
    from bayescale.analysis.checks import Check

__all__ = ["plot_break", "plot_check", "plot_compare", "plot_pit"]

_VERDICT_COLOURS = {
    "better than predicted": "tab:green",
    "as predicted": "black",
    "worse than predicted": "tab:red",
}


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    return ax


def _plain_log(ax: Axes, *which: str) -> None:
    """Log scale with plain tick labels (``2.4``, ``300``; ``10^7`` over a wide range).

    Over less than a decade matplotlib labels minor ticks in scientific notation
    (``2.4×10^0``); the ticks it labels stay, written as plain numbers.
    """
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
            power = np.log10(x) if x > 0 else 0.0
            wide = vmin > 0 and vmax / vmin > 100
            if wide and power == round(power):  # decades over a wide range: as matplotlib
                return f"$\\mathdefault{{10^{{{int(round(power))}}}}}$"
            return f"{x:.4g}"

    for name in which:
        axis = ax.xaxis if name == "x" else ax.yaxis
        (ax.set_xscale if name == "x" else ax.set_yscale)("log")
        axis.set_major_formatter(Plain(labelOnlyBase=False))
        axis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def plot_check(check: Check, *, x: str | None = None, ax: Axes | None = None) -> Axes:
    """Runs against their predictive intervals, coloured by verdict.

    Parameters
    ----------
    check : Check
        From `bayescale.check` or `bayescale.ppc`.
    x : str, optional
        Column for the horizontal axis; default the law's first input variable.
    ax : matplotlib Axes, optional
        Where to draw; default a new figure.

    Returns
    -------
    matplotlib Axes
        Log-log axes: for each run, its predictive median (dash) and intervals (thicker
        for narrower levels), and the observed loss (dot; green: better than predicted, black:
        as predicted, red: worse than predicted).
    """
    ax = _axes(ax)
    table = check.table
    x = x or check.variables[0]
    if x not in table:
        raise OptionError(f"x={x!r} is not a column of the check; columns are {list(table)}.")
    xs = table[x].to_numpy(dtype=float)
    levels = sorted(check.coverage["nominal"], reverse=True)
    for width, level in enumerate(levels):
        lo, hi = _bounds(table, level)
        ax.vlines(
            xs,
            lo,
            hi,
            colors="tab:blue",
            alpha=0.25 + 0.2 * width,
            linewidth=1.5 + 2.5 * width,
            label=f"{level:.0%} predictive interval",
        )
    ax.scatter(
        xs,
        table["median"],
        marker="_",
        s=150,
        color="navy",
        linewidths=2,
        zorder=3,
        label="predictive median",
    )
    for verdict, colour in _VERDICT_COLOURS.items():
        sel = table["verdict"] == verdict
        if sel.any():
            ax.scatter(
                xs[sel.to_numpy()],
                table.loc[sel, "loss"],
                color=colour,
                s=18,
                zorder=4,
                label=f"observed: {verdict}",
            )
    _plain_log(ax, "x", "y")
    ax.set_xlabel(x)
    ax.set_ylabel("loss")
    title = "new runs" if check.kind == "new runs" else "leave-one-out check of the fit's runs"
    ax.set_title(title)
    ax.legend(fontsize="small")
    return ax


def plot_pit(check: Check, *, ax: Axes | None = None) -> Axes:
    """ECDF of the PIT values against the uniform, with a 95% simultaneous band.

    Parameters
    ----------
    check : Check
        From `bayescale.check` (PITs of new runs) or `bayescale.ppc` (LOO-PITs).
    ax : matplotlib Axes, optional
        Where to draw; default a new figure.

    Returns
    -------
    matplotlib Axes
        The ECDF of the PITs (steps), the diagonal of a calibrated forecast and the
        Dvoretzky-Kiefer-Wolfowitz band of ``check.calibration``. Steps above the diagonal
        mean losses lower than predicted, below it higher; an S shape means intervals too
        wide, a reversed S too narrow.
    """
    ax = _axes(ax)
    pit = np.sort(check.table["pit"].to_numpy(dtype=float))
    n = pit.size
    ecdf = np.arange(1, n + 1) / n
    grid = np.linspace(0, 1, 201)
    band = float(check.calibration["band"])
    ax.fill_between(
        grid,
        np.clip(grid - band, 0, 1),
        np.clip(grid + band, 0, 1),
        color="tab:blue",
        alpha=0.15,
        label="95% band (DKW)",
    )
    ax.plot([0, 1], [0, 1], color="tab:blue", linestyle="--", linewidth=1, label="uniform")
    ax.step(
        np.concatenate([[0], pit, [1]]),
        np.concatenate([[0], ecdf, [1]]),
        where="post",
        color="black",
        label=f"PIT ECDF ({n} runs)",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("PIT")
    ax.set_ylabel("ECDF")
    ax.set_title(
        f"calibration: KS p = {check.calibration['p_value']:.2g}"
        + (" (LOO-PIT)" if check.kind == "loo" else "")
    )
    ax.legend(fontsize="small", loc="upper left")
    return ax


def plot_compare(
    comparison: pd.DataFrame | BreakReport, *, method: str = "loo", ax: Axes | None = None
) -> Axes:
    """ELPD of each model with its standard error, and differences to the best with theirs.

    Parameters
    ----------
    comparison : DataFrame or BreakReport
        The table of `bayescale.analysis.compare`, or a `BreakReport` (then ``method`` picks its
        LOO or
        LFO columns).
    method : {"loo", "lfo"}, default "loo"
        For a `BreakReport` only.
    ax : matplotlib Axes, optional
        Where to draw; default a new figure.

    Returns
    -------
    matplotlib Axes
        One row per model, best at the top: elpd +- se (open circle) and, for the others,
        best elpd - elpd_diff +- dse (grey triangle); the dashed line is the best elpd.
    """
    table = _comparison_table(comparison, method)
    ax = _axes(ax)
    table = table.sort_values("elpd", ascending=True)
    y = np.arange(len(table))
    best = float(table["elpd"].max())
    ax.errorbar(
        table["elpd"],
        y,
        xerr=table["se"],
        fmt="o",
        mfc="white",
        color="black",
        capsize=3,
        label="elpd ± se",
    )
    others = table["elpd_diff"].to_numpy() > 0
    if others.any():
        ax.errorbar(
            best - table["elpd_diff"].to_numpy()[others],
            y[others] + 0.2,
            xerr=table["dse"].to_numpy()[others],
            fmt="^",
            color="grey",
            capsize=3,
            label="difference to best ± se",
        )
    ax.axvline(best, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(y)
    ax.set_yticklabels([str(i) for i in table.index])
    ax.set_xlabel(f"elpd ({table.attrs.get('method', method).upper()}, log density of log loss)")
    ax.legend(fontsize="small")
    return ax


def plot_break(
    report: BreakReport,
    *,
    ax: Axes | None = None,
    ci_prob: float = 0.9,
    rug_draws: int = 300,
) -> Axes:
    """The runs, the bands of the power law and of the broken law, and the break locations.

    Parameters
    ----------
    report : BreakReport
        From `bayescale.detect_break`.
    ax : matplotlib Axes, optional
        Where to draw; default a new figure.
    ci_prob : float, default 0.9
        Mass of the bands (of the law's loss).
    rug_draws : int, default 300
        Posterior draws of each break location shown as a rug on the horizontal axis.

    Returns
    -------
    matplotlib Axes
        Log-log axes with the runs (dots), the median and band of the power law and of the
        selected broken law (the one-break law when no break is selected), and a rug of the
        break locations' posterior draws along the bottom.
    """
    ax = _axes(ax)
    var = report.variable
    data = report.fits[0].data
    curves = report.curves(ci_prob=ci_prob)
    colours = {0: "tab:blue", 1: "tab:orange", 2: "tab:red"}
    for k, frame in curves.groupby("breaks"):
        label = "power law" if k == 0 else f"{k} break{'s' if k > 1 else ''}"
        if k == report.n_breaks:
            label += " (selected)"
        colour = colours.get(int(k), "tab:purple")
        ax.fill_between(frame[var], frame["lower"], frame["upper"], color=colour, alpha=0.2)
        ax.plot(frame[var], frame["median"], color=colour, label=label)
    ax.scatter(data.column(var), data.loss, color="black", s=12, zorder=3, label="runs")
    broken = max(report.n_breaks, 1)
    post = report.fits[broken].posterior
    for i in range(1, broken + 1):
        draws = post[f"d{i}"].values.reshape(-1)
        step = max(1, draws.size // max(int(rug_draws), 1))
        ax.plot(
            draws[::step],
            np.full(draws[::step].size, 0.02),
            "|",
            color=colours.get(broken, "tab:purple"),
            alpha=0.3,
            markersize=10,
            transform=ax.get_xaxis_transform(),
            label=f"break {i} location (posterior draws)",
        )
    _plain_log(ax, "x", "y")
    ax.set_xlabel(var)
    ax.set_ylabel("loss")
    ax.set_title(f"break detection: {report.n_breaks} break{'s' if report.n_breaks != 1 else ''}")
    ax.legend(fontsize="small")
    return ax


def _bounds(table: pd.DataFrame, level: float) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = f"q{(1 - level) / 2 * 100:.10g}", f"q{(1 + level) / 2 * 100:.10g}"
    return table[lo].to_numpy(dtype=float), table[hi].to_numpy(dtype=float)


def _comparison_table(comparison: Any, method: str) -> pd.DataFrame:
    if isinstance(comparison, pd.DataFrame):
        missing = {"elpd", "se", "elpd_diff", "dse"} - set(comparison.columns)
        if missing:
            raise OptionError(
                f"the table lacks {sorted(missing)}; pass the DataFrame of bs.compare or a "
                "BreakReport."
            )
        table = comparison[["elpd", "se", "elpd_diff", "dse"]].copy()
        if "method" in comparison:
            table.attrs["method"] = str(comparison["method"].iloc[0])
        return table
    if method not in ("loo", "lfo"):
        raise OptionError(f"unknown method {method!r}. Available: loo, lfo.")
    summary = comparison.summary()
    table = pd.DataFrame(
        {
            "elpd": summary[f"elpd_{method}"],
            "se": summary[f"se_{method}"],
            "elpd_diff": summary[f"elpd_diff_{method}"],
            "dse": summary[f"dse_{method}"],
        }
    )
    table.index = [f"{k} breaks" for k in summary.index]
    table.attrs["method"] = method
    return table


def plot_backtest(backtest: Backtest, *, view: str = "nominal", ax: Axes | None = None) -> Axes:
    """Coverage of a backtest's predictive intervals, per model.

    Parameters
    ----------
    backtest : Backtest
        From `bayescale.analysis.backtest`.
    view : {"nominal", "distance"}, default "nominal"
        ``"nominal"``: coverage against the nominal level (calibrated models lie on the
        diagonal). ``"distance"``: coverage of the widest level against the extrapolation
        distance (decades beyond the fitted runs), with the nominal level as a line.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when None.

    Returns
    -------
    matplotlib.axes.Axes
    """
    if view not in ("nominal", "distance"):
        raise OptionError(f"unknown view {view!r}. Available: nominal, distance.")
    ax = _axes(ax)
    levels = backtest.levels
    summary = backtest.summary()
    for model, row in summary.iterrows():
        if model == "huber":
            continue  # a point fit has no intervals
        if view == "nominal":
            cov = [row[f"coverage_{lv * 100:g}"] for lv in levels]
            ax.plot(levels, cov, marker="o", label=f"{model} (n={int(row['n'])})")
        else:
            table = backtest.by_distance().loc[model]
            mids = [interval.left for interval in table.index]
            ax.plot(mids, table[f"coverage_{levels[-1] * 100:g}"], marker="o", label=model)
    if view == "nominal":
        ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="nominal")
        ax.set_xlabel("nominal level of the predictive interval")
        ax.set_xlim(0, 1)
    else:
        ax.axhline(levels[-1], color="0.5", ls="--", lw=1, label=f"nominal {levels[-1]:.0%}")
        ax.set_xlabel("decades beyond the fitted runs (bin start)")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("coverage of held-out runs")
    ax.set_title(f"backtest by {backtest.variable}", fontsize=10)
    ax.legend(fontsize=8)
    return ax

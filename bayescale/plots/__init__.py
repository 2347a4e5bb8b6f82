"""Plots of fits, forecasts, allocations, checks, comparisons and breaks (matplotlib only).

Every function draws into ``ax`` (a new figure when None) and returns the Axes; none computes
statistics of its own beyond what the result it is given holds. Matplotlib is imported when a
plot is drawn, not when this package is imported.
"""

from bayescale.plots.checks import plot_backtest, plot_break, plot_check, plot_compare, plot_pit
from bayescale.plots.fits import (
    REFERENCE_EXPONENTS,
    VIEWS,
    count_formatter,
    plot_allocation,
    plot_design,
    plot_fit,
    plot_forecast,
    plot_groups,
    plot_posterior,
    plot_ppc_dist,
    plot_rank,
    plot_trace,
)

__all__ = [
    "REFERENCE_EXPONENTS",
    "VIEWS",
    "count_formatter",
    "plot_allocation",
    "plot_backtest",
    "plot_break",
    "plot_check",
    "plot_compare",
    "plot_design",
    "plot_fit",
    "plot_forecast",
    "plot_groups",
    "plot_pit",
    "plot_posterior",
    "plot_ppc_dist",
    "plot_rank",
    "plot_trace",
]

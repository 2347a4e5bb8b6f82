"""bayescale: Bayesian inference for neural scaling laws."""

from bayescale.allocate import Allocation, ComputeForLoss, compute_for_loss, compute_optimal
from bayescale.backtest import Backtest, backtest
from bayescale.breaks import BreakReport, detect_break
from bayescale.checks import Check, check, ppc, prior_predictive
from bayescale.compare import compare
from bayescale.data import ScalingData, from_frame
from bayescale.design import Design, Target, design, design_grid
from bayescale.errors import (
    BayescaleError,
    ConvergenceWarning,
    DataError,
    ExtrapolationWarning,
    FitError,
    LawError,
    OptionError,
    OptionTypeError,
    PlausibilityWarning,
    PriorError,
)
from bayescale.fit import Fit, fit, group_fit, load_fit, update
from bayescale.forecast import Forecast, Horizon, extrapolation_horizon, forecast
from bayescale.hierarchy import priors_from
from bayescale.laws import LAWS, Law, Param, get_law, register_law
from bayescale.likelihoods import LIKELIHOODS, Likelihood, get_likelihood, register_likelihood
from bayescale.many import ManyFits, fit_many
from bayescale.misfit import Misfit
from bayescale.priors import Prior, default_priors
from bayescale.stacking import Stack, stack, stacked_predictive, stacking_weights
from bayescale.testing import simulate
from bayescale.version import __version__  # noqa: F401 (re-export)

__all__ = [
    "LAWS",
    "LIKELIHOODS",
    "Allocation",
    "Backtest",
    "BayescaleError",
    "BreakReport",
    "Check",
    "ComputeForLoss",
    "ConvergenceWarning",
    "DataError",
    "Design",
    "ExtrapolationWarning",
    "Fit",
    "FitError",
    "Forecast",
    "Horizon",
    "Law",
    "LawError",
    "Likelihood",
    "ManyFits",
    "Misfit",
    "OptionError",
    "OptionTypeError",
    "Param",
    "PlausibilityWarning",
    "Prior",
    "PriorError",
    "ScalingData",
    "Stack",
    "Target",
    "backtest",
    "check",
    "compare",
    "compute_for_loss",
    "compute_optimal",
    "default_priors",
    "design",
    "design_grid",
    "detect_break",
    "extrapolation_horizon",
    "fit",
    "fit_many",
    "forecast",
    "from_frame",
    "get_law",
    "get_likelihood",
    "group_fit",
    "load_fit",
    "ppc",
    "prior_predictive",
    "priors_from",
    "register_law",
    "register_likelihood",
    "simulate",
    "stack",
    "stacked_predictive",
    "stacking_weights",
    "update",
]

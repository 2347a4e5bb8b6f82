"""bayescale: Bayesian inference for neural scaling laws."""

from bayescale.analysis.allocate import (
    Allocation,
    ComputeForLoss,
    compute_for_loss,
    compute_optimal,
)
from bayescale.analysis.backtest import Backtest, backtest
from bayescale.analysis.breaks import BreakReport, BreakScreen, detect_break
from bayescale.analysis.checks import Check, check, ppc, prior_predictive
from bayescale.analysis.compare import compare
from bayescale.analysis.design import Design, Target, design, design_grid
from bayescale.analysis.forecast import Forecast, Horizon, extrapolation_horizon, forecast
from bayescale.analysis.stacking import Stack, stack, stacked_predictive, stacking_weights
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
from bayescale.inference.fit import Fit, fit, group_fit, load_fit, update
from bayescale.inference.many import ManyFits, fit_many
from bayescale.io.data import ScalingData, from_frame
from bayescale.model.hierarchy import priors_from
from bayescale.model.laws import LAWS, Law, Param, get_law, register_law
from bayescale.model.likelihoods import LIKELIHOODS, Likelihood, get_likelihood, register_likelihood
from bayescale.model.misfit import Misfit
from bayescale.model.priors import Prior, default_priors
from bayescale.model.simulation import simulate
from bayescale.version import __version__  # noqa: F401 (re-export)

__all__ = [
    "LAWS",
    "LIKELIHOODS",
    "Allocation",
    "Backtest",
    "BayescaleError",
    "BreakReport",
    "BreakScreen",
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

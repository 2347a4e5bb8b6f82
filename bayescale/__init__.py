"""bayescale: Bayesian inference for neural scaling laws."""

from bayescale.allocate import Allocation, ComputeForLoss, compute_for_loss, compute_optimal
from bayescale.checks import Check, check, ppc, update
from bayescale.compare import (
    BreakReport,
    Stack,
    compare,
    detect_break,
    stack,
    stacked_predictive,
    stacking_weights,
)
from bayescale.data import ScalingData, from_frame
from bayescale.errors import (
    BayescaleError,
    ConvergenceWarning,
    DataError,
    ExtrapolationWarning,
    PriorError,
)
from bayescale.fit import Fit, fit, load_fit
from bayescale.forecast import Forecast, Horizon, extrapolation_horizon, forecast
from bayescale.laws import LAWS, Law, Param, get_law, register_law
from bayescale.priors import Prior, default_priors
from bayescale.testing import simulate

__version__ = "0.1.0"

__all__ = [
    "LAWS",
    "Allocation",
    "BayescaleError",
    "BreakReport",
    "Check",
    "ComputeForLoss",
    "ConvergenceWarning",
    "DataError",
    "ExtrapolationWarning",
    "Fit",
    "Forecast",
    "Horizon",
    "Law",
    "Param",
    "Prior",
    "PriorError",
    "ScalingData",
    "Stack",
    "check",
    "compare",
    "compute_for_loss",
    "compute_optimal",
    "default_priors",
    "detect_break",
    "extrapolation_horizon",
    "fit",
    "forecast",
    "from_frame",
    "get_law",
    "load_fit",
    "ppc",
    "register_law",
    "simulate",
    "stack",
    "stacked_predictive",
    "stacking_weights",
    "update",
]

"""bayescale: Bayesian inference for neural scaling laws."""

from bayescale.data import ScalingData, from_frame
from bayescale.errors import (
    BayescaleError,
    ConvergenceWarning,
    DataError,
    ExtrapolationWarning,
    PriorError,
)
from bayescale.fit import Fit, fit, load_fit
from bayescale.laws import LAWS, Law, Param, get_law, register_law
from bayescale.priors import Prior, default_priors
from bayescale.testing import simulate

__version__ = "0.1.0"

__all__ = [
    "LAWS",
    "BayescaleError",
    "ConvergenceWarning",
    "DataError",
    "ExtrapolationWarning",
    "Fit",
    "Law",
    "Param",
    "Prior",
    "PriorError",
    "ScalingData",
    "default_priors",
    "fit",
    "from_frame",
    "get_law",
    "load_fit",
    "register_law",
    "simulate",
]

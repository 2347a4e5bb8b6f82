"""Exception and warning classes of bayescale."""

from __future__ import annotations

__all__ = [
    "BayescaleError",
    "DataError",
    "PriorError",
    "ConvergenceWarning",
    "ExtrapolationWarning",
]


class BayescaleError(Exception):
    """Base class of every error raised by bayescale."""


class DataError(BayescaleError, ValueError):
    """The training-run table is unusable: missing columns, bad values, too few runs."""


class PriorError(BayescaleError, ValueError):
    """A prior specification is invalid or names an unknown parameter."""


class ConvergenceWarning(UserWarning):
    """The sampler or optimiser did not converge well enough to trust the result."""


class ExtrapolationWarning(UserWarning):
    """A forecast lies outside the range of the observed runs."""

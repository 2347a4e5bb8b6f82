"""Exception and warning classes of bayescale, and where its warnings point.

Every input problem the package raises is a `BayescaleError`, and also a `ValueError` (or a
`TypeError` where the type is wrong), so ``except bs.BayescaleError`` catches them all while
code written against the built-in exceptions keeps working.
"""

from __future__ import annotations

import inspect
import os
import warnings

__all__ = [
    "BayescaleError",
    "DataError",
    "PriorError",
    "LawError",
    "OptionError",
    "OptionTypeError",
    "FitError",
    "ConvergenceWarning",
    "ExtrapolationWarning",
    "PlausibilityWarning",
    "find_stack_level",
    "warn",
]


class BayescaleError(Exception):
    """Base class of every error raised by bayescale."""


class DataError(BayescaleError, ValueError):
    """The training-run table is unusable: missing columns, bad values, too few runs."""


class PriorError(BayescaleError, ValueError):
    """A prior specification is invalid or names an unknown parameter."""


class LawError(BayescaleError, ValueError):
    """A law is unknown, badly declared, or cannot be used as asked."""


class OptionError(BayescaleError, ValueError):
    """A keyword option has an invalid value (an unknown method, a level outside (0, 1)...)."""


class OptionTypeError(BayescaleError, TypeError):
    """A keyword option or argument has the wrong type."""


class FitError(BayescaleError, ValueError):
    """A fit cannot serve the request (a one-draw Huber fit where draws are needed...)."""


class ConvergenceWarning(UserWarning):
    """The sampler or optimiser did not converge well enough to trust the result."""


class ExtrapolationWarning(UserWarning):
    """A forecast lies outside the range of the observed runs."""


class PlausibilityWarning(UserWarning):
    """Valid input or a result that is probably not what was meant.

    N in billions rather than a count, perplexity passed as loss, compute inconsistent with
    C = 6 N D, runs checked against a fit that already saw them, a negative exponent...
    """


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def find_stack_level() -> int:
    """The ``stacklevel`` that makes a warning point at the first frame outside bayescale.

    Call it where the warning is issued: ``warnings.warn(msg, Cls, stacklevel=find_stack_level())``
    (as numpyro's and pandas' helpers of the same name do).
    """
    frame = inspect.currentframe()
    level = 0  # find_stack_level's own frame
    try:
        while frame is not None:
            filename = os.path.abspath(frame.f_code.co_filename)
            if level > 0 and not filename.startswith(_PACKAGE_DIR + os.sep):
                return level
            frame = frame.f_back
            level += 1
    finally:
        del frame
    return level


def warn(message: str, category: type[Warning]) -> None:
    """Issue ``message`` as ``category``, pointing at the caller's line outside bayescale."""
    # one frame more than find_stack_level sees: this function's own
    warnings.warn(message, category, stacklevel=find_stack_level())

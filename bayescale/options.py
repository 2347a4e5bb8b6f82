"""The validators of keyword options that every verb shares: seeds, counts, flags, probabilities.

One rule for all of them, so that the same bad value gets the same error from every verb:
a value of the wrong type raises `OptionTypeError` (also a `TypeError`), a value of the right
type outside its range raises `OptionError` (also a `ValueError`). Each message names the
option, shows what was received (with its type) and gives an example of a valid value.

Each validator returns the value as a plain Python object (``int``, ``bool``, ``float``), so
callers store and compare plain values.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from bayescale.errors import OptionError, OptionTypeError

__all__ = [
    "BANDS",
    "LEVELS",
    "SEED_LIMIT",
    "count",
    "counts",
    "flag",
    "optional_flag",
    "positive",
    "probabilities",
    "probability",
    "renamed",
    "seed",
]

#: the default interval probabilities of every verb that reports several intervals (check, ppc,
#: backtest); one interval alone defaults to 0.9 (``ci_prob``)
LEVELS = (0.5, 0.8, 0.9, 0.99)
#: the default bands of the plots: the 50% and 90% intervals of `LEVELS`
BANDS = (0.5, 0.9)

#: seeds are integers in [0, SEED_LIMIT): what numpy's and JAX's generators accept
SEED_LIMIT = 2**32


def _received(value: Any) -> str:
    return f"{type(value).__name__}: {value!r}"


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def seed(value: Any, name: str = "seed") -> int:
    """``value`` as an ``int`` seed in ``[0, 2**32)``.

    Raises
    ------
    OptionTypeError
        If it is not an integer (a float, a string, a bool).
    OptionError
        If it is an integer outside ``[0, 2**32)``.
    """
    return _integer(value, name, "an integer in [0, 2**32)", 0, lambda v: 0 <= v < SEED_LIMIT)


def count(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an ``int`` of at least ``minimum`` (a number of chains, draws, runs...).

    Raises
    ------
    OptionTypeError
        If it is not an integer (``4.0``, ``"4"`` and ``True`` are refused).
    OptionError
        If it is below ``minimum``.
    """
    expected = f"an integer of at least {minimum}"
    return _integer(value, name, expected, max(minimum, 4), lambda v: v >= minimum)


def _integer(value: Any, name: str, expected: str, example: int, valid: Any) -> int:
    """``value`` as an ``int`` for which ``valid`` holds; the errors say ``expected``."""
    if not _is_int(value):
        raise OptionTypeError(
            f"{name} must be {expected}; received {_received(value)}. For example {name}={example}."
        )
    if not valid(int(value)):
        raise OptionError(
            f"{name} must be {expected}; received {value!r}. For example {name}={example}."
        )
    return int(value)


def counts(settings: object, names: Sequence[str], minimum: dict[str, int] | None = None) -> None:
    """`count` on the attributes ``names`` of ``settings``, stored back as ``int``.

    The minimum is 1, or ``minimum[name]`` (``num_warmup`` defaults to 0); works on frozen
    dataclasses (their ``__post_init__``).
    """
    low = {"num_warmup": 0, **(minimum or {})}
    for name in names:
        value = count(getattr(settings, name), name, low.get(name, 1))
        object.__setattr__(settings, name, value)


def flag(value: Any, name: str) -> bool:
    """``value`` as a ``bool``; only ``True`` and ``False`` (and NumPy's bools) are flags.

    Strings are refused because any non-empty one is true (``dropna="no"`` would drop), and
    so are ``0`` and ``1``, which usually mean a count was passed where a flag was meant.

    Raises
    ------
    OptionTypeError
        If it is not a bool.
    """
    if not isinstance(value, (bool, np.bool_)):
        hint = ""
        if isinstance(value, str):
            hint = f" (a string is not a flag: {value!r} would read as True)"
        raise OptionTypeError(
            f"{name} must be True or False; received {_received(value)}{hint}. "
            f"For example {name}=True."
        )
    return bool(value)


def optional_flag(value: Any, name: str) -> bool | None:
    """`flag`, or None (the option's automatic default, as ``progress_bar=None``)."""
    return None if value is None else flag(value, name)


def _number(value: Any, name: str, expected: str, example: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise OptionTypeError(
            f"{name} must be {expected}; received {_received(value)}. For example {example}."
        )
    return float(value)


def probability(value: Any, name: str, example: float = 0.9) -> float:
    """``value`` as a ``float`` strictly between 0 and 1 (an interval's mass, a level...).

    Raises
    ------
    OptionTypeError
        If it is not a real number.
    OptionError
        If it is not strictly inside (0, 1) (NaN included).
    """
    out = _number(value, name, "a number strictly between 0 and 1", f"{name}={example}")
    if not 0 < out < 1:  # NaN fails too
        raise OptionError(
            f"{name} must lie strictly between 0 and 1; received {value!r}. For example "
            f"{name}={example}"
            + (" (a percentage is a fraction: 0.9 for 90%)." if out > 1 else ".")
        )
    return out


def probabilities(values: Any, name: str, example: str = "(0.5, 0.9)") -> tuple[float, ...]:
    """``values`` as sorted, distinct probabilities, each strictly between 0 and 1.

    Raises
    ------
    OptionTypeError
        If it is not a sequence of real numbers (a string or a single number included).
    OptionError
        If it is empty or a value is not strictly inside (0, 1).
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise OptionTypeError(
            f"{name} must be a sequence of probabilities; received {_received(values)}. "
            f"For example {name}={example}."
        )
    items = list(np.asarray(values).reshape(-1)) if isinstance(values, np.ndarray) else values
    if len(items) == 0:
        raise OptionError(f"{name} is empty; pass at least one probability, for example {example}.")
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise OptionTypeError(
                f"{name} must hold numbers strictly between 0 and 1; received "
                f"{_received(v)} in {name}={values!r}. For example {name}={example}."
            )
        if not 0 < float(v) < 1:
            raise OptionError(
                f"{name} must hold numbers strictly between 0 and 1; received {v!r} in "
                f"{name}={values!r}. For example {name}={example}."
            )
    return tuple(sorted({float(v) for v in items}))


def positive(value: Any, name: str, example: float = 1.0) -> float:
    """``value`` as a positive, finite ``float`` (a budget, a tolerance, a scale).

    Raises
    ------
    OptionTypeError
        If it is not a real number.
    OptionError
        If it is not positive and finite.
    """
    out = _number(value, name, "a positive number", f"{name}={example:g}")
    if not (math.isfinite(out) and out > 0):
        raise OptionError(
            f"{name} must be a positive, finite number; received {value!r}. "
            f"For example {name}={example:g}."
        )
    return out


def renamed(
    new_value: Any, old_value: Any, *, verb: str, old: str, new: str, why: str, stacklevel: int = 3
) -> Any:
    """The value of a renamed keyword: ``new_value``, or the old keyword's with a FutureWarning.

    ``why`` says what the old name means now, for the warning; ``stacklevel`` points it at the
    user's call (3: the caller of the verb that calls this). Both given is an `OptionError`.
    """
    if old_value is None:
        return new_value
    if new_value is not None:
        raise OptionError(
            f"{verb}() received both {old}={old_value!r} and {new}={new_value!r}; {old} is the "
            f"old name of {new}. Pass only {new}=."
        )
    warnings.warn(
        f"{verb}({old}={old_value!r}) is deprecated: {why}. Pass {new}={old_value!r}.",
        FutureWarning,
        stacklevel=stacklevel,
    )
    return old_value

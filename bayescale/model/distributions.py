"""Printable prior specifications: `Prior`, the families it may name, and their numpyro form.

The bottom of the statistical layers: `bayescale.model.laws` (a law may carry a default `Prior` per
parameter) and `bayescale.model.priors` (the role defaults) both build on it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bayescale.errors import PriorError

__all__ = ["FAMILIES", "Prior", "make_distribution"]

#: Distribution families a Prior may name, with their parameter names in order.
FAMILIES: dict[str, tuple[str, ...]] = {
    "Normal": ("loc", "scale"),
    "HalfNormal": ("scale",),
    "LogNormal": ("loc", "scale"),
    "Uniform": ("low", "high"),
    "LogUniform": ("low", "high"),
    "Gamma": ("concentration", "rate"),
    "Exponential": ("rate",),
    "HalfCauchy": ("scale",),
    "StudentT": ("df", "loc", "scale"),
    "TruncatedNormal": ("loc", "scale", "low", "high"),
    "Beta": ("concentration1", "concentration0"),
}


#: family parameters that must be positive (scales, rates, shapes, degrees of freedom)
_POSITIVE = frozenset(("scale", "rate", "concentration", "concentration1", "concentration0", "df"))


def _number(family: str, name: str, value: Any, names: tuple[str, ...]) -> float:
    """``float(value)``, or a `PriorError` for text, booleans and other non-numbers."""
    try:
        if isinstance(value, (str, bytes, bool)):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise PriorError(
            f"{family} parameter {name} must be a number; received {value!r}. For example "
            f"Prior({family!r}, {', '.join(f'{m}=...' for m in names)})."
        ) from None


@dataclass(frozen=True)
class Prior:
    """A prior distribution: a family from `FAMILIES` and its parameters.

    Parameters
    ----------
    family : str
        Distribution family, for example ``"LogNormal"``.
    **params : float
        The family's parameters by name: finite; scales, rates, concentrations and ``df``
        positive; ``low < high`` (and ``0 < low`` for ``LogUniform``).

    Raises
    ------
    PriorError
        If the family is unknown, a parameter is missing, unknown, not a number, not finite
        or out of its range.

    Examples
    --------
    >>> Prior("LogNormal", loc=0.0, scale=2.5)
    LogNormal(loc=0, scale=2.5)
    """

    family: str
    params: tuple[tuple[str, float], ...]
    note: str = ""

    def __init__(self, family: str, *, note: str = "", **params: float) -> None:
        if family not in FAMILIES:
            near = difflib.get_close_matches(family, FAMILIES, n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise PriorError(f"unknown prior family {family!r}. Available: {list(FAMILIES)}.{hint}")
        names = FAMILIES[family]
        if set(params) != set(names):
            raise PriorError(
                f"{family} takes parameters {list(names)}; received {sorted(params)}. "
                f"For example Prior({family!r}, {', '.join(f'{n}=...' for n in names)})."
            )
        values = tuple((n, _number(family, n, params[n], names)) for n in names)
        for n, v in values:
            if not math.isfinite(v):
                raise PriorError(
                    f"{family} parameter {n}={v} must be finite. Pass a finite value (a wide "
                    "prior is a large finite scale)."
                )
            if n in _POSITIVE and not v > 0:
                raise PriorError(
                    f"{family} parameter {n} must be positive; received {n}={v:g}. For example "
                    f"Prior({family!r}, {', '.join(f'{m}=1.0' for m in names)})."
                )
        bounds = dict(values)
        if "low" in bounds and not bounds["low"] < bounds["high"]:
            raise PriorError(
                f"{family} needs low < high; received low={bounds['low']:g}, "
                f"high={bounds['high']:g}. Swap them or widen the range."
            )
        if family == "LogUniform" and not bounds["low"] > 0:
            raise PriorError(
                f"LogUniform needs 0 < low; received low={bounds['low']:g}. Use Uniform for a "
                "range that includes 0, or a small positive low."
            )
        object.__setattr__(self, "family", family)
        object.__setattr__(self, "params", values)
        object.__setattr__(self, "note", note)

    @property
    def values(self) -> tuple[float, ...]:
        """The parameter values in the family's order."""
        return tuple(v for _, v in self.params)

    def to_numpyro(self) -> Any:
        """Return the numpyro distribution."""
        return make_distribution(self.family, *self.values)

    def to_dict(self) -> dict[str, Any]:
        """Serialise to a plain dict (for file attributes)."""
        return {"family": self.family, **dict(self.params), "note": self.note}

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Prior:
        """Inverse of `to_dict`."""
        spec = dict(spec)
        return cls(spec.pop("family"), note=spec.pop("note", ""), **spec)

    def __repr__(self) -> str:
        args = ", ".join(f"{n}={v:.4g}" for n, v in self.params)
        return f"{self.family}({args})"


def make_distribution(family: str, *values: Any) -> Any:
    """Build the numpyro distribution of ``family`` from positional parameter values."""
    import numpyro.distributions as dist

    if family == "LogUniform":
        low, high = values
        return dist.LogUniform(low, high)
    return getattr(dist, family)(*values)

"""Prior specifications and the default priors of each law.

A `Prior` is a printable, serialisable description of a numpyro distribution
(``Prior("LogNormal", loc=0.0, scale=2.5)``). `default_priors` gives every parameter of a law a
weakly informative prior from its role, using only coarse facts about the data (the range of the
losses and of the log inputs), so the defaults are invariant to the units of the inputs.

Role defaults (see `bayescale.model.laws.ROLES`):

===============  ==========================================================================
role             default prior
===============  ==========================================================================
floor            ``Uniform(0, min loss)``: positive and below every observed loss
amplitude        ``LogNormal(log median loss, 2.5)`` on the term's size at the data centre,
                 ``A * xbar^-alpha``, where ``xbar`` is the geometric mean of the variable
exponent         ``LogNormal(log 0.3, 1)``: positive; 95% between 0.04 and 2.1
exponent_change  ``StudentT(3, 0, 1)``: changes of order 1, with tails for sharp transitions
location         ``LogUniform(min x, max x)``: inside the observed range (sorted when several)
sharpness        ``LogNormal(log 0.3, 1)``
scale            ``LogNormal(5, 5)`` on the scale relative to the data centre, ``N_c / xbar``
ceiling          ``Uniform(max loss, 2 max loss)``
shape            ``HalfNormal(1)``
retention        ``LogNormal(log 10, 1.5)``
sigma            ``HalfNormal(0.1)``: the noise scale of log loss (10% relative error)
===============  ==========================================================================
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from bayescale.errors import PriorError
from bayescale.io.data import ScalingData
from bayescale.model.distributions import FAMILIES, Prior
from bayescale.model.laws import Law

__all__ = ["Prior", "Priors", "default_priors", "resolve_priors", "FAMILIES"]


class Priors(dict[str, Prior]):
    """The priors of a fit: parameter name -> `Prior`, printed as a table."""

    def to_frame(self) -> pd.DataFrame:
        """One row per parameter: the prior and what it is placed on."""
        rows = [{"parameter": k, "prior": repr(p), "on": p.note} for k, p in self.items()]
        return pd.DataFrame(rows).set_index("parameter")

    def __repr__(self) -> str:
        width = max(len(k) for k in self) if self else 0
        lines = [
            f"  {k:<{width}}  ~ {p!r}" + (f"   ({p.note})" if p.note else "")
            for k, p in self.items()
        ]
        return "Priors:\n" + "\n".join(lines)


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def default_priors(law: Law, data: ScalingData, likelihood: str = "student_t") -> Priors:
    """Weakly informative default priors for ``law`` given coarse facts about ``data``.

    Parameters
    ----------
    law : Law
        The scaling law.
    data : ScalingData
        The runs; only the loss range and the ranges of the log inputs are used.
    likelihood : str
        Unused for now; every likelihood gets a ``sigma`` prior on the log-loss noise scale.

    Returns
    -------
    Priors
        Parameter name -> Prior, the law's parameters first, then ``sigma``.
    """
    loss = data.loss
    lo_loss, hi_loss, mid_loss = float(loss.min()), float(loss.max()), float(np.median(loss))
    out = Priors()
    for p in law.params:
        if p.prior is not None:
            out[p.name] = p.prior
            continue
        var = p.variable
        x = data.column(var) if var else None
        centre = float(np.exp(np.mean(np.log(x)))) if x is not None else math.nan
        if p.role == "floor":
            prior = Prior("Uniform", low=0.0, high=lo_loss, note="below the smallest loss")
        elif p.role == "amplitude":
            prior = Prior(
                "LogNormal",
                loc=math.log(mid_loss),
                scale=2.5,
                note=f"on {p.name} * {var}^-{p.exponent} at {var} = {_fmt(centre)}",
            )
        elif p.role in ("exponent", "sharpness"):
            prior = Prior("LogNormal", loc=math.log(0.3), scale=1.0)
        elif p.role == "exponent_change":
            # heavy tails: sharp (emergent) transitions change the exponent by 5 to 10
            # (Caballero et al. 2023), which a Normal(0, 1) would shrink along with the floor
            prior = Prior("StudentT", df=3.0, loc=0.0, scale=1.0)
        elif p.role == "location":
            prior = Prior(
                "LogUniform",
                low=float(x.min()),
                high=float(x.max()),
                note=f"inside the observed {var}; sorted when several",
            )
        elif p.role == "scale":
            prior = Prior("LogNormal", loc=5.0, scale=5.0, note=f"on {p.name} / {_fmt(centre)}")
        elif p.role == "ceiling":
            prior = Prior("Uniform", low=hi_loss, high=2 * hi_loss, note="above the largest loss")
        elif p.role == "shape":
            prior = Prior("HalfNormal", scale=1.0)
        elif p.role == "retention":
            prior = Prior("LogNormal", loc=math.log(10.0), scale=1.5)
        else:  # pragma: no cover - register_law validates roles
            raise PriorError(f"no default prior for role {p.role!r} of {p.name!r}")
        out[p.name] = prior
    out["sigma"] = Prior("HalfNormal", scale=0.1, note="noise sd of log loss")
    return out


#: roles whose parameter may take either sign; every other parameter (and sigma) is positive
SIGNED_ROLES = frozenset({"exponent_change"})
#: a prior of a positive parameter may put at most this share of its mass at or below zero
NEGATIVE_MASS = 0.01


def negative_mass(prior: Prior) -> float:
    """The probability that ``prior`` gives a value at or below zero."""
    from scipy import stats

    v = dict(prior.params)
    if prior.family == "Normal":
        return float(stats.norm.cdf(0.0, v["loc"], v["scale"]))
    if prior.family == "StudentT":
        return float(stats.t.cdf(0.0, v["df"], v["loc"], v["scale"]))
    if prior.family == "Uniform":
        return float(np.clip(-v["low"] / (v["high"] - v["low"]), 0.0, 1.0))
    if prior.family == "TruncatedNormal":
        lo, hi = (stats.norm.cdf(x, v["loc"], v["scale"]) for x in (v["low"], v["high"]))
        below = stats.norm.cdf(min(max(0.0, v["low"]), v["high"]), v["loc"], v["scale"])
        return float((below - lo) / (hi - lo)) if hi > lo else float(v["high"] <= 0)
    return 0.0  # the other families live on positive values


def _check_support(name: str, role: str, prior: Prior) -> None:
    """Refuse a prior that puts a positive parameter at or below zero with real probability.

    The model takes logs of positive parameters, so such draws have no density: MAP stops
    where it started and NUTS cannot initialise.
    """
    if role in SIGNED_ROLES:
        return
    mass = negative_mass(prior)
    if mass > NEGATIVE_MASS:
        what = "the noise scale of log loss" if name == "sigma" else f"a {role}"
        raise PriorError(
            f"the prior {prior!r} for {name!r} puts {mass:.0%} of its mass at or below zero, "
            f"but {name} ({what}) is positive. Use a prior on positive values, such as "
            "HalfNormal(scale=...), LogNormal(loc=log(typical value), scale=...) or "
            "TruncatedNormal(..., low=0, high=...)."
        )


def resolve_priors(
    law: Law, data: ScalingData, priors: Mapping[str, Prior] | None, likelihood: str
) -> Priors:
    """Defaults for ``law`` with the user's ``priors`` laid over them, validated.

    Raises
    ------
    PriorError
        If a key names no parameter of the law, a value is not a `Prior`, or a prior of a
        positive parameter (every role but ``exponent_change``, and ``sigma``) puts more
        than `NEGATIVE_MASS` of its mass at or below zero.
    """
    out = default_priors(law, data, likelihood)
    for name, prior in (priors or {}).items():
        if name not in out:
            near = difflib.get_close_matches(name, out, n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise PriorError(
                f"prior given for {name!r}, which is not a parameter of law {law.name!r}; "
                f"parameters are {list(out)}.{hint}"
            )
        if not isinstance(prior, Prior):
            raise PriorError(
                f"prior for {name!r} must be a bayescale.Prior, received "
                f"{type(prior).__name__}: {prior!r}. For example Prior('Normal', loc=0, scale=1)."
            )
        role = next((p.role for p in law.params if p.name == name), "sigma")
        _check_support(name, role, prior)
        if role == "location" and prior.family != "LogUniform":
            raise PriorError(
                f"break locations take a LogUniform prior (they are sorted jointly); received "
                f"{prior!r} for {name!r}."
            )
        out[name] = prior
    locations = [out[p.name] for p in law.params if p.role == "location"]
    if len({loc.values for loc in locations}) > 1:
        raise PriorError(
            "all break locations of a law share one LogUniform range; received "
            f"{[repr(p) for p in locations]}."
        )
    return out

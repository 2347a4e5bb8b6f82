"""The start of a grouped fit: one lone MAP fit per curve, and the choice of sampler coordinates.

A grouped fit (`bayescale.fit` with ``group=``) is one model (`bayescale.model.hierarchy`); what
lives here is inference about how to sample it. Each group's own MAP fit with default priors
(`lone_fits`) tells whether the groups' exponents differ by more than their runs measure them
(`exponents_differ`, which picks centred or non-centred coordinates) and starts the joint MAP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from bayescale.inference.sampling import exact_laplace, exact_mode
from bayescale.io.data import ScalingData
from bayescale.model.laws import Law
from bayescale.model.likelihoods import Likelihood
from bayescale.model.priors import resolve_priors

__all__ = ["CENTRED_WEIGHT", "exponents_differ", "group_anchors", "lone_fits"]

#: a pooled exponent is sampled centred when the typical group's partial-centring weight
#: ``tau^2 / (tau^2 + se^2)`` reaches this (see `exponents_differ`)
CENTRED_WEIGHT = 0.89


def lone_fits(
    law: Law, data: ScalingData, labels: Sequence[str], likelihood: Likelihood, seed: int
) -> list[Any]:
    """One lone MAP fit (`bayescale.inference.sampling.Laplace`) per group with default priors.

    None for a group with fewer runs than the law has parameters plus one, or whose mode is
    not proper. They decide the kind of curves (`exponents_differ`) and start the joint MAP
    (`lone_start`).
    """
    out: list[Any] = []
    for sub in _group_data(data, labels):
        lap = None
        if sub.n_runs >= len(law.params) + 1:
            priors = resolve_priors(law, sub, None, likelihood.name)
            lap = exact_laplace(law, sub, priors, likelihood, seed, 400)
        out.append(lap if lap is not None and lap.ok else None)
    return out


def group_anchors(
    law: Law,
    data: ScalingData,
    labels: Sequence[str],
    likelihood: Likelihood,
    seed: int,
    lone: Sequence[Any] = (),
) -> dict[str, dict[str, float] | None]:
    """Each group's exact-law mode with default priors: the anchor of its misfit's walk.

    A group's lone fit (`lone_fits`) gives it where there is one; else its own MAP search
    (`bayescale.inference.sampling.exact_mode`).
    """
    out: dict[str, dict[str, float] | None] = {}
    for i, (g, sub) in enumerate(zip(labels, _group_data(data, labels), strict=True)):
        if lone and lone[i] is not None:
            out[g] = {k: float(lone[i].mode[k]) for k in law.param_names}
        else:
            priors = resolve_priors(law, sub, None, likelihood.name)
            out[g] = exact_mode(law, sub, priors, likelihood, seed)
    return out


def _group_data(data: ScalingData, labels: Sequence[str]) -> list[ScalingData]:
    """Each group's runs, in the order of ``labels``."""
    group_of = data.table["group"].astype(str).to_numpy()
    return [
        ScalingData(data.table[group_of == g].reset_index(drop=True), data.source) for g in labels
    ]


def exponents_differ(
    law: Law,
    data: ScalingData,
    labels: Sequence[str],
    likelihood: Likelihood,
    seed: int,
    lone: Sequence[Any] | None = None,
) -> bool:
    """Whether the groups' exponents differ by far more than their runs measure them.

    Decides the sampler's coordinates of a partial fit whose exponent is pooled: where it is
    True, `bayescale.model.geometry`'s ridge coordinates (the exponent centred, as the log slope at
    each group's centre); where it is False, numpyro's non-centred coordinates. It is the
    partial non-centring rule of Papaspiliopoulos, Roberts and Skold (2007) for the typical
    group: centred where ``tau^2 / (tau^2 + se^2)`` is at least `CENTRED_WEIGHT`, with ``se``
    the median over groups of the Laplace sd of ``log alpha`` in a lone MAP fit with default
    priors (groups with fewer runs than the law has parameters plus one, or no proper mode,
    are left out) and ``tau^2`` the variance of the lone estimates less ``se^2``.

    Curves whose exponents really differ mix well only centred; families that share their exponent
    only non-centred (centred, they sit in the funnel of ``tau``). The threshold separates the two
    kinds on simulated families and on real curves (the ratios measured, and the test that was tried
    before this one, are in the design notes, *Measurements behind the code*). ``lone``: the groups'
    `lone_fits` where they are already at hand.
    """
    exponent = next((p.name for p in law.params if p.role == "exponent"), None)
    if exponent is None:
        return False
    if lone is None:
        lone = lone_fits(law, data, labels, likelihood, seed)
    est = np.array([math.log(float(f.mode[exponent])) if f else np.nan for f in lone])
    se = np.array([float(np.std(np.log(f.constrained[exponent]))) if f else np.inf for f in lone])
    ok = np.isfinite(se) & (se > 0)
    if ok.sum() < 2:
        return False
    spread, typical = float(np.var(est[ok], ddof=1)), float(np.median(se[ok])) ** 2
    return spread - typical >= CENTRED_WEIGHT / (1 - CENTRED_WEIGHT) * typical

r"""Many curves in one model: per-group law parameters drawn from a population.

`bayescale.inference.fit` with ``group=`` fits every curve of a table at once (one numpyro model,
one
compilation). This module holds the model, its inputs and priors, the draws of a single group
(or of a new group from the population) and `priors_from`; `bayescale.inference.fit` turns its
output
into a `Fit`.

Notes
-----
Pooling (``pooling=``):

``"none"``
    every group has its own parameters with its own default priors (computed from that group's
    runs and centred at its own inputs, exactly as a separate `bayescale.inference.fit` of the
    group);
    the joint posterior is the product of the separate posteriors.
``"partial"``
    the parameters named in ``pool`` (default `default_pool`: exponents, floor and noise scale)
    are drawn from a population, **non-centred**: with ``t = log theta`` (``theta`` itself for a
    parameter on the real line, the centred amplitude ``log(A xbar^-alpha)`` for amplitudes)

    .. math::

        t_g = \mu + \tau z_g, \qquad z_g \sim N(0, 1), \quad
        \mu \sim N(m_0, s_0), \quad \tau \sim \text{HalfNormal}(s_\tau),

    so NUTS sees independent unit normals instead of the funnel of ``(tau, t_g)``. A pooled floor
    (``floor=``, `FLOOR_POOLINGS`) is pooled as ``t_g = log E_g`` where the curves are of one kind
    (families trained on the same data share their irreducible loss in absolute terms, whatever
    scale their runs reached), and as a share of each group's smallest loss, ``E_g = min loss_g *
    sigmoid(t_g)`` (the support of the single-curve prior ``Uniform(0, min loss)``), where they are
    different tasks on unrelated loss scales: there ``log E`` mixes badly (see the explanation page
    *Pooling across curves*), and the share assumes that the groups' runs reach comparable losses.
    `bayescale.inference.fit` tells the two apart with
    `bayescale.inference.grouped.exponents_differ`. ``m_0, s_0`` come from the parameter's prior
    (the default or the user's, moment-matched on ``t``: the prior of the population median);
    ``s_tau`` is `TAU_SCALES` by role (override with a ``"<name>_tau"`` prior). The other parameters
    are per group as in ``"none"``. All groups share one centre (the mean log input over all runs),
    so a pooled amplitude means the same thing in every group.
``"complete"``
    one set of parameters for every group: the ordinary single-curve fit through all runs.

A **new group** (`group_draws` with ``group=None``) draws ``z ~ N(0, 1)`` per posterior draw:
the population predictive distribution of a family with no runs yet. It needs every law
parameter and ``sigma`` pooled.

The model is `bayescale.model.build.build_model` with a `GroupStructure`: the structure draws
each group's parameters, the misfit and observation parts are those of the single-curve model.
With a misfit each group has its own walk over its own runs and the walks' scales are shared
(a new group draws a fresh walk from them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bayescale import streams
from bayescale.errors import DataError, OptionError, PlausibilityWarning, PriorError, warn
from bayescale.io.data import ScalingData
from bayescale.model.build import bucket_size, build_model
from bayescale.model.distributions import Prior, make_distribution
from bayescale.model.geometry import ridge_map
from bayescale.model.laws import Law
from bayescale.model.likelihoods import Likelihood
from bayescale.model.misfit import (
    COEFS,
    MISFIT_SITES,
    SCALES,
    Misfit,
    MisfitCoords,
    coordinate_columns,
    law_jacobian,
    misfit_coords,
    new_walk_knots,
    orthogonal,
    walk_directions,
    walk_names,
)
from bayescale.model.priors import Priors, resolve_priors

__all__ = [
    "FLOOR_POOLINGS",
    "POOLINGS",
    "TAU_SCALES",
    "GroupInputs",
    "GroupStructure",
    "build_group_model",
    "default_pool",
    "expanded",
    "group_attrs",
    "group_draws",
    "group_inputs",
    "group_labels",
    "group_start",
    "lone_start",
    "model_for",
    "priors_from",
    "ran_away",
    "repaired_mode",
    "require_groups",
    "resolve_pool",
]

POOLINGS = ("partial", "none", "complete")
#: how a pooled floor is pooled: its log, or the logit of its share of the group's smallest loss
FLOOR_POOLINGS = ("log", "share")

#: default prior scale of tau (sd across groups of the parameter's log) by role
TAU_SCALES = {"exponent": 0.5, "floor": 1.0, "amplitude": 1.0, "scale": 1.0, "sigma": 0.5}
_DEFAULT_TAU = 0.5
#: roles of pooled parameters that the samplers' ridge map takes centred: each group's runs
#: pin them down (see the explanation page *Pooling*)
_CENTRED = ("floor", "sigma")


def centred_min_runs(law: Law) -> int:
    """Runs a group needs for its pooled floor and noise scale to be sampled centred.

    Twice the law's parameters plus ``sigma``: fewer runs do not pin them down, and a group
    that its runs fit almost exactly (two runs of a new family) would put the centred
    coordinates in the funnel of the population's spread, where chains stall at the
    tree-depth limit.
    """
    return 2 * (len(law.params) + 1)


#: families of parameters on the whole real line (pooled as they are, not in logs)
_REAL = ("Normal", "StudentT")


def group_labels(data: ScalingData) -> list[str]:
    """The sorted group labels of ``data`` (its ``group`` column)."""
    return sorted(str(g) for g in data.table["group"].unique())


def default_pool(law: Law) -> tuple[str, ...]:
    """The parameters pooled by default: exponents, the floor and the noise scale ``sigma``.

    Chosen by measurement on the 20 language curves of Alabdulmohsin et al. (2022): see the
    explanation page *Pooling across curves*.
    """
    keep = ("exponent", "floor")
    return (*(p.name for p in law.params if p.role in keep), "sigma")


def resolve_pool(law: Law, pool: Sequence[str] | str | None) -> tuple[str, ...]:
    """Validated names of the pooled parameters (``"all"``: every parameter and sigma)."""
    names = [*law.param_names, "sigma"]
    if pool is None:
        return default_pool(law)
    if isinstance(pool, str):
        pool = names if pool == "all" else [pool]
    unknown = [p for p in pool if p not in names]
    if unknown:
        raise OptionError(
            f"pool names {unknown}, which are not parameters of law {law.name!r}; parameters "
            f"are {names}. For example pool={list(default_pool(law))} or pool='all'."
        )
    return tuple(n for n in names if n in pool)


def require_groups(
    data: ScalingData, law: Law, pooling: str, n_free: int, labels: Sequence[str]
) -> None:
    """Check that grouped runs can be fitted; `DataError` naming the group otherwise.

    ``n_free`` is the number of parameters (sigma included) without a user-given prior. With
    ``"none"`` each group must identify its own law (more runs than ``n_free``); with
    ``"partial"`` a group may have fewer runs than parameters (the population fills in), but
    every group needs one run and the variables must vary over the table.
    """
    if pooling not in POOLINGS:
        raise OptionError(f"unknown pooling {pooling!r}. Available: {', '.join(POOLINGS)}.")
    if len(labels) < 2 and pooling == "partial":
        raise DataError(
            f"partial pooling needs at least 2 groups; the data has {len(labels)} "
            f"({labels}). Fit one curve without group=, or add groups."
        )
    data.require(law.variables, 0 if pooling == "partial" else n_free, law.name)
    sizes = data.table.groupby("group").size()
    if pooling == "partial" and sizes.max() < 2:
        warn(
            f"every group has a single run ({len(labels)} groups): partial pooling cannot tell "
            "a group's own curve from the noise, so each group's parameters are the "
            "population's, set by one point. Fit one curve through all runs (pooling="
            "'complete', or no group=), or add runs to the groups.",
            PlausibilityWarning,
        )
    if pooling != "none":
        return
    sizes = data.table.groupby("group").size()
    small = {str(g): int(n) for g, n in sizes.items() if n <= n_free}
    if small:
        raise DataError(
            f"with pooling='none' each group is fitted on its own, and law {law.name!r} has "
            f"{n_free} parameters without a given prior, but groups {small} have fewer runs "
            "than that. Use pooling='partial' (the population fills in), pass informative "
            "priors, or drop those groups."
        )


# ------------------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class GroupInputs:
    """Arrays of the hierarchical model (float32, runs padded to a bucket).

    Attributes
    ----------
    logx : dict
        Variable -> log inputs ``(bucket,)``; padding rows hold the centre.
    gidx : ndarray
        Group index of each row ``(bucket,)`` as float32 (0 in padding rows).
    centre : dict
        Variable -> centre of each group ``(groups,)``: the group's own mean log input with
        ``pooling="none"``, the mean over all runs otherwise.
    hyper : dict
        Site -> tuple of prior parameters: ``(groups,)`` arrays for per-group parameters,
        scalars for the population's ``<name>_mu`` and ``<name>_tau``.
    log_loss : ndarray or None
        Observed log losses ``(bucket,)``.
    mask : ndarray
        Boolean ``(bucket,)``: the scored rows.
    n_runs : int
        The number of real runs.
    misfit : dict or None
        The misfit's inputs: ``t`` and ``r`` per row, each in its own group's coordinates, and
        ``half`` per group; None for the exact law.
    coords : dict or None
        Group label -> `MisfitCoords` of its runs (None without misfit).
    """

    logx: Mapping[str, np.ndarray]
    gidx: np.ndarray
    centre: Mapping[str, np.ndarray]
    hyper: Mapping[str, tuple[np.ndarray, ...]]
    log_loss: np.ndarray | None
    mask: np.ndarray
    n_runs: int
    misfit: Mapping[str, np.ndarray] | None = None
    coords: Mapping[str, MisfitCoords] | None = None

    def args(self, mask: np.ndarray | None = None) -> tuple[Any, ...]:
        """Positional arguments of the model (optionally with another observation mask)."""
        return (
            dict(self.logx),
            dict(self.centre),
            dict(self.hyper),
            self.log_loss,
            self.mask if mask is None else mask,
            None if self.misfit is None else dict(self.misfit),
            self.gidx,
        )


def _log_moments(prior: Prior) -> tuple[float, float]:
    """(mean, sd) of ``log x`` (or ``x`` for real families) under ``prior``, for pooling."""
    v = dict(prior.params)
    fam = prior.family
    if fam in _REAL:
        return v["loc"], v["scale"]
    if fam == "LogNormal":
        return v["loc"], v["scale"]
    if fam == "HalfNormal":  # log|N(0, s)|: mean log s - 0.635, sd 1.11
        return math.log(v["scale"]) - 0.635, 1.11
    if fam == "HalfCauchy":
        return math.log(v["scale"]), math.pi / 2
    if fam == "Uniform" and v["low"] >= 0:
        # a floor's Uniform(0, h): its median h / 2, spread one unit in logs
        return math.log(0.5 * (v["low"] + v["high"])), 1.0
    if fam == "LogUniform":
        lo, hi = math.log(v["low"]), math.log(v["high"])
        return 0.5 * (lo + hi), (hi - lo) / math.sqrt(12)
    if fam == "Gamma":
        k, r = v["concentration"], v["rate"]
        return math.log(k / r), 1 / math.sqrt(k)
    if fam == "Exponential":
        return math.log(math.log(2) / v["rate"]), 1.28
    raise PriorError(
        f"a {fam} prior cannot be pooled across groups (its support is bounded on both sides, "
        f"{prior!r}). Leave that parameter out of pool=, or give it a LogNormal or Normal prior."
    )


def _min_loss(data: ScalingData, labels: Sequence[str]) -> list[float]:
    """Each group's smallest loss: the bound of its floor."""
    lows = data.table.groupby(data.table["group"].astype(str))["loss"].min()
    return [float(lows[g]) for g in labels]


def _role(law: Law, name: str) -> str:
    return next((p.role for p in law.params if p.name == name), "sigma")


def group_inputs(
    law: Law,
    data: ScalingData,
    labels: Sequence[str],
    pooling: str,
    pool: Sequence[str],
    priors: Mapping[str, Prior] | None,
    likelihood: str,
    floor: str = "log",
    misfit: Misfit | bool | None = None,
    anchors: Mapping[str, Mapping[str, float] | None] | None = None,
) -> tuple[GroupInputs, Priors, dict[str, dict[str, float]]]:
    """The model's arrays, the printable priors and each group's centre.

    Returns ``(inputs, priors, centres)``. ``priors`` maps every population site
    (``<name>_mu``, ``<name>_tau``) and every per-group parameter (``<name>[<group>]``) to its
    `Prior`. The user's ``priors`` may name a parameter (its per-group prior, or for a pooled
    parameter the prior of the population median, moment-matched on its log) or
    ``<name>_tau`` (a HalfNormal on the spread of the pooled parameter's log). ``floor``
    (`FLOOR_POOLINGS`) says how a pooled floor is pooled: ``"log"`` its log, ``"share"`` the
    logit of its share of each group's smallest loss (the module notes). With ``misfit`` (its
    settings; True: the default `Misfit`), each group's misfit coordinates come from its own
    runs (its walk spans its own range), a group too short for whole walks keeps the
    directions its runs leave room for (``keep`` ``(group, knots - 2)``,
    `bayescale.model.misfit.walk_directions`), and where ``anchors`` gives a group's exact-law
    mode its walk is made orthogonal to its law there (`bayescale.model.misfit.orthogonal`).
    """
    if floor not in FLOOR_POOLINGS:
        raise OptionError(f"floor pooling is one of {FLOOR_POOLINGS}; received {floor!r}.")
    f32 = np.float32
    user = dict(priors or {})
    names = [*law.param_names, "sigma"]
    extra = [k for k in user if k not in names and k.removesuffix("_tau") not in pool]
    if extra:
        raise PriorError(
            f"priors name {extra}, which are neither parameters of law {law.name!r} nor the "
            f"spread of a pooled parameter; parameters are {names}, pooled {list(pool)} (give "
            "'<name>_tau' a HalfNormal prior)."
        )
    law_user = {k: v for k, v in user.items() if k in names}
    group_of = data.table["group"].astype(str).to_numpy()
    per_group = {}
    for g in labels:
        sub = ScalingData(data.table[group_of == g].reset_index(drop=True), data.source)
        per_group[g] = resolve_priors(law, sub, law_user, likelihood)
    pooled_all = resolve_priors(law, data, law_user, likelihood)
    raw = {v: np.log(data.column(v)) for v in law.variables}
    gidx = np.array([labels.index(g) for g in group_of])
    if pooling == "none":
        centres = {
            g: {v: float(np.mean(x[gidx == i])) for v, x in raw.items()}
            for i, g in enumerate(labels)
        }
    else:
        common = {v: float(np.mean(x)) for v, x in raw.items()}
        centres = {g: dict(common) for g in labels}
    out = Priors()
    hyper: dict[str, tuple[np.ndarray, ...]] = {}
    for name in names:
        if name in pool:
            if name in user:
                m0, s0 = _log_moments(user[name])
            else:  # the median over groups of each group's default, at its usual spread
                moments = [_log_moments(per_group[g][name]) for g in labels]
                m0 = float(np.median([m for m, _ in moments]))
                s0 = float(np.max([s for _, s in moments]))
                if _role(law, name) == "amplitude":  # per-group defaults sit at other centres
                    s0 = max(s0, 2.5)
            real = pooled_all[name].family in _REAL
            on = name if real else f"log {name}"
            if _role(law, name) in ("amplitude", "scale"):
                on = f"log of {name} at the common centre"
            if _role(law, name) == "floor" and floor == "share":
                on = f"logit of {name} / (the group's smallest loss)"
                share = 0.5
                if name in user:  # the user's typical floor as a share of the typical bound
                    bound = float(np.median(_min_loss(data, labels)))
                    share = min(max(math.exp(m0) / bound, 0.01), 0.99)
                m0, s0 = math.log(share / (1 - share)), 1.5
                hyper[f"{name}_bound"] = (np.asarray(_min_loss(data, labels), f32),)
            out[f"{name}_mu"] = Prior("Normal", loc=m0, scale=s0, note=f"population mean of {on}")
            tau = user.get(f"{name}_tau") or Prior(
                "HalfNormal",
                scale=TAU_SCALES.get(_role(law, name), _DEFAULT_TAU),
                note=f"sd across groups of {on}",
            )
            if tau.family != "HalfNormal":
                raise PriorError(
                    f"the spread {name}_tau takes a HalfNormal prior; received {tau!r}. For "
                    f"example Prior('HalfNormal', scale=0.5)."
                )
            out[f"{name}_tau"] = tau
            hyper[f"{name}_mu"] = (f32(m0), f32(s0))
            hyper[f"{name}_tau"] = (f32(tau.values[0]),)
        else:
            fams = {per_group[g][name].family for g in labels}
            if len(fams) > 1:  # pragma: no cover - defaults share a family per role
                raise PriorError(f"the groups' priors for {name!r} differ in family: {fams}")
            for g in labels:
                out[f"{name}[{g}]"] = per_group[g][name]
            values = np.array([per_group[g][name].values for g in labels], f32)
            hyper[name] = tuple(values[:, j] for j in range(values.shape[1]))
    n = data.n_runs
    size = bucket_size(n)
    centre_arr = {v: np.array([centres[g][v] for g in labels], f32) for v in law.variables}
    logx = {v: np.zeros(size, f32) for v in law.variables}
    for v, x in raw.items():
        logx[v][:] = centre_arr[v][0]
        logx[v][:n] = x
    gidx_ = np.zeros(size, f32)
    gidx_[:n] = gidx
    log_loss = np.zeros(size, f32)
    log_loss[:n] = np.log(data.loss)
    mask = np.zeros(size, bool)
    mask[:n] = True
    extra = coords = None
    spec = Misfit() if misfit is True else misfit or None
    if spec is not None:
        extra = {"t": np.zeros(size, f32), "r": np.zeros(size, f32)}
        coords = {}
        keep = np.ones((len(labels), spec.knots - 2))
        p = len(law.param_names)
        if anchors is not None:
            ortho = {"q": np.zeros((size, p)), "jac": np.zeros((size, p))}
            ortho["m"] = np.zeros((len(labels), p, p))
        for i, g in enumerate(labels):
            rows = np.flatnonzero(gidx == i)
            cols = {c: data.column(c)[rows] for c in law.variables}
            anchor = None if anchors is None else anchors.get(g)
            coords[g] = misfit_coords(law.variables, cols, anchor)
            extra["t"][rows], extra["r"][rows] = coords[g].scaled(cols)
            own = {c: data.column(c)[rows] for c in coordinate_columns(coords[g], law.variables)}
            short = walk_directions(spec, coords[g], own, len(law.param_names))
            if short is not None:
                keep[i] = short
            if anchor is not None:  # the group's walk against its own law
                lx = {v: np.log(np.asarray(x, np.float64)) for v, x in cols.items()}
                parts = orthogonal(law_jacobian(law, anchor, lx), np.ones(len(rows), bool))
                ortho["q"][rows], ortho["jac"][rows] = parts["q"], parts["jac"]
                ortho["m"][i] = parts["m"]
        extra["half"] = np.array([coords[g].half for g in labels], f32)
        if not keep.all():
            extra["keep"] = keep.astype(f32)
        if anchors is not None:
            extra.update({k: v.astype(f32) for k, v in ortho.items()})
    inputs = GroupInputs(logx, gidx_, centre_arr, hyper, log_loss, mask, n, extra, coords)
    return inputs, out, centres


# ------------------------------------------------------------------------------ the model


def _families(law: Law, priors: Priors, pool: Sequence[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for name in (*law.param_names, "sigma"):
        if name not in pool:
            first = next(p for k, p in priors.items() if k.startswith(f"{name}["))
            out.append((name, first.family))
    return tuple(out)


def _is_real(law: Law, priors: Priors, name: str) -> bool:
    """Whether a pooled parameter lives on the real line (pooled as is, not in logs)."""
    return _role(law, name) in ("exponent_change",)


@dataclass(frozen=True)
class GroupStructure:
    """The group structure part of `bayescale.model.build.build_model`: pooling across groups.

    It supplies each group's law parameters and ``sigma`` (`sample`); the model hands each run
    its group's, then adds the misfit and observation parts it shares with the single-curve
    model. Hashable: it shapes the compiled model.

    Attributes
    ----------
    law : Law
        The law.
    families : tuple
        ``(name, family)`` of each per-group parameter's prior.
    pool : tuple of str
        The pooled parameters (non-centred, see the module notes).
    real : tuple of str
        Those of them pooled on the real line (the rest in logs).
    n_groups : int
        The number of groups.
    ridge : bool
        Sample in the ridge coordinates of `bayescale.model.geometry` where the law has them.
    """

    law: Law
    families: tuple[tuple[str, str], ...]
    pool: tuple[str, ...]
    real: tuple[str, ...]
    n_groups: int
    ridge: bool = True

    def geometry(self) -> Any:
        """The samplers' change of variables per group (`ridge_map`), or None.

        With its own priors the same as a separate fit's; pooled parameters through their
        population.
        """
        if not self.ridge:
            return None
        pooled = tuple(n for n in self.pool if n not in self.real)
        centred = tuple(n for n in pooled if _role(self.law, n) in _CENTRED)
        return ridge_map(
            self.law, dict(self.families), grouped=True, pooled=pooled, centred=centred,
            min_runs=centred_min_runs(self.law),
        )  # fmt: skip

    def sample(self, hyper: Any, centre: Any, expand: bool) -> dict[str, Any]:
        """Sample the populations and each group's parameters and ``sigma``: ``(groups,)`` each.

        With ``expand`` each spread is parameter-expanded (see `build_group_model`).
        """
        import jax
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist

        law, pool, real = self.law, self.pool, self.real
        family = dict(self.families)
        params = [p for p in law.params if p.role != "location"]
        roles = {p.name: p for p in params}
        pop = {}
        for name in pool:
            mu = numpyro.sample(f"{name}_mu", dist.Normal(*hyper[f"{name}_mu"]))
            if expand:  # tau = s |w|, w ~ N(0, 1): HalfNormal(s), sampled through the signed s w
                (scale,) = hyper[f"{name}_tau"]
                signed = scale * numpyro.sample(f"_{name}_w", dist.Normal(0.0, 1.0))
                numpyro.deterministic(f"{name}_tau", jnp.abs(signed))
                pop[name] = (mu, signed)
                continue
            tau = numpyro.sample(f"{name}_tau", dist.HalfNormal(*hyper[f"{name}_tau"]))
            pop[name] = (mu, tau)
        values: dict[str, Any] = {}
        with numpyro.plate("group", self.n_groups):
            for name in (*(p.name for p in params), "sigma"):
                p = roles.get(name)
                centred = p is not None and p.role in ("amplitude", "scale")
                shared = f"{name}_bound" in hyper  # a floor pooled as a share (`FLOOR_POOLINGS`)
                if name in pool and p is not None and p.role == "floor" and shared:
                    mu, tau = pop[name]
                    t = mu + tau * numpyro.sample(f"_{name}_z", dist.Normal(0.0, 1.0))
                    value = hyper[f"{name}_bound"][0] * jax.nn.sigmoid(t)
                    values[name] = numpyro.deterministic(name, value)
                    continue
                if name in pool:
                    mu, tau = pop[name]
                    t = mu + tau * numpyro.sample(f"_{name}_z", dist.Normal(0.0, 1.0))
                    if not centred:
                        value = t if name in real else jnp.exp(jnp.clip(t, -85.0, 85.0))
                        values[name] = numpyro.deterministic(name, value)
                        continue
                    log_raw = t
                elif centred:
                    prior = make_distribution(family[name], *hyper[name])
                    log_raw = jnp.log(numpyro.sample(f"{name}_c", prior))
                else:
                    prior = make_distribution(family[name], *hyper[name])
                    values[name] = numpyro.sample(name, prior)
                    continue
                coef = values[p.exponent] if p.role == "amplitude" else 1.0
                value = jnp.exp(jnp.clip(log_raw + coef * centre[p.variable], -85.0, 85.0))
                values[name] = numpyro.deterministic(name, value)
        return values


def build_group_model(
    law: Law,
    families: tuple[tuple[str, str], ...],
    pool: tuple[str, ...],
    real: tuple[str, ...],
    likelihood: Likelihood,
    n_groups: int,
    ridge: bool = True,
    misfit: Misfit | None = None,
) -> Any:
    """The model of many groups: `build_model` with a `GroupStructure`.

    Its arguments are ``(logx, centre, hyper, log_loss, mask, mf, gidx)`` (`GroupInputs.args`).
    ``families`` gives the prior family of each per-group parameter; ``pool`` the pooled
    parameters (non-centred, see the module notes); ``real`` those of them pooled on the real
    line (the rest in logs). Sites: ``<name>_mu``, ``<name>_tau`` (population), ``_<name>_z``
    (standardised group effects), ``<name>`` over ``group`` (papers' units; ``<name>_c`` for a
    per-group amplitude's centred value), the misfit's (its scales shared by the groups, a walk
    per group) and ``loss`` over runs.

    Where the sampler runs in numpyro's coordinates (no ridge map: ``ridge=False``, or a law
    the map does not apply to), each spread is **parameter-expanded** (``model.expand``): the
    sampled site is ``_<name>_w ~ N(0, 1)``, the group effects are ``mu + s w z`` and
    ``<name>_tau = s |w|`` is a deterministic site (the same HalfNormal(s) prior and
    posterior). A spread near 0 is then an interior point the chains cross, not the far end
    of ``log tau`` (Gelman 2006; Liu, Rubin and Wu 1998), and the spreads mix better (figures
    in the design notes, *Measurements behind the code*).
    """
    structure = GroupStructure(law, families, pool, real, n_groups, ridge)
    return build_model(law, families, likelihood, misfit, structure)


def ran_away(mode: Mapping[str, np.ndarray], priors: Priors, pool: Sequence[str]) -> bool:
    """Whether a grouped fit's joint mode ran away (chains started there would stay there).

    A population spread beyond its prior's 99.9% point: the joint density grows without
    bound as some groups' runs are fitted exactly (their noise scale towards 0), and chains
    started there stay at the tree-depth limit.
    """
    return any(float(mode[f"{n}_tau"]) > _tau_limit(priors, n) for n in pool)


def _tau_limit(priors: Priors, name: str) -> float:
    """The 99.9% point of the half-normal prior of ``<name>_tau``."""
    return 3.29 * priors[f"{name}_tau"].values[0]


def repaired_mode(
    mode: Mapping[str, np.ndarray],
    law: Law,
    data: ScalingData,
    labels: Sequence[str],
    priors: Priors,
    pool: Sequence[str],
) -> dict[str, np.ndarray] | None:
    """A runaway joint mode (`ran_away`), repaired as a place to start the chains.

    The pooled floor and noise populations are re-set from the groups whose runs pin them
    down (at least `centred_min_runs`): the mean and sd of their values at the mode, the sd
    kept within the spread's prior. The groups of fewer runs sit at the population's
    median. None when no group has that many runs.
    """
    runs = data.table["group"].astype(str).value_counts()
    few = np.array([runs[g] < centred_min_runs(law) for g in labels])
    if few.all():
        return None
    out = dict(mode)
    for name in pool:
        if _role(law, name) not in _CENTRED:
            continue
        mu, tau = float(mode[f"{name}_mu"]), _signed_spread(mode, priors, name)
        z = np.asarray(mode[f"_{name}_z"], np.float64)
        t = (mu + tau * z)[~few]
        limit = _tau_limit(priors, name)
        mu2, tau2 = float(np.mean(t)), float(np.clip(np.std(t), 0.01 * limit, limit))
        out[f"{name}_mu"], out[f"{name}_tau"] = np.asarray(mu2), np.asarray(tau2)
        if f"_{name}_w" in mode:
            out[f"_{name}_w"] = np.asarray(tau2 / priors[f"{name}_tau"].values[0])
        out[f"_{name}_z"] = np.where(few, 0.0, (mu + tau * z - mu2) / tau2)
    return out


def _signed_spread(mode: Mapping[str, np.ndarray], priors: Priors, name: str) -> float:
    """The spread that multiplies ``z``: ``tau``, or ``s w`` in a parameter-expanded model."""
    w = mode.get(f"_{name}_w")
    if w is None:
        return float(mode[f"{name}_tau"])
    return float(w) * priors[f"{name}_tau"].values[0]


def expanded(
    start: Mapping[str, np.ndarray], priors: Priors, pool: Sequence[str]
) -> dict[str, np.ndarray]:
    """Sample-site values for a parameter-expanded model (`build_group_model`).

    Each spread given as ``<name>_tau`` becomes ``_<name>_w = tau / s``; an existing
    ``_<name>_w`` stays.
    """
    out = dict(start)
    for name in pool:
        tau = out.pop(f"{name}_tau", None)
        if tau is not None and f"_{name}_w" not in out:
            out[f"_{name}_w"] = np.asarray(tau) / priors[f"{name}_tau"].values[0]
    return out


def group_attrs(law: Law, inputs: GroupInputs, pool: Sequence[str]) -> dict[str, Any]:
    """Settings of the pooling (`bayescale.inference.settings.FitSettings`).

    ``pool_real`` and ``floor_bounds`` (read by `group_draws`), and ``floor_pooling``
    (`FLOOR_POOLINGS`) where a floor is pooled.
    """
    floors = [n for n in pool if _role(law, n) == "floor"]
    key = f"{floors[0]}_bound" if floors else ""
    bounds = [float(b) for b in inputs.hyper[key][0]] if key in inputs.hyper else []
    out: dict[str, Any] = {
        "pool_real": tuple(n for n in pool if _role(law, n) == "exponent_change"),
        "floor_bounds": tuple(bounds),
    }
    if floors:
        out["floor_pooling"] = "share" if bounds else "log"
    return out


def model_for(
    law: Law,
    priors: Priors,
    pool: Sequence[str],
    likelihood: Likelihood,
    n_groups: int,
    ridge: bool = True,
    misfit: Misfit | None = None,
) -> Any:
    """`build_group_model` for a fit's priors and pool (cached on their structure)."""
    real = tuple(n for n in pool if _is_real(law, priors, n))
    return build_group_model(
        law, _families(law, priors, pool), tuple(pool), real, likelihood, n_groups, ridge, misfit
    )


def _typical(prior: Prior) -> float:
    v = dict(prior.params)
    fam = prior.family
    if fam in _REAL:
        return v["loc"]
    if fam == "LogNormal":
        return math.exp(v["loc"])
    if fam == "HalfNormal":
        return 0.6745 * v["scale"]
    if fam == "Uniform":
        return 0.5 * (v["low"] + v["high"])
    if fam == "LogUniform":
        return math.sqrt(v["low"] * v["high"])
    return math.exp(_log_moments(prior)[0])


def group_start(
    law: Law,
    priors: Priors,
    pool: Sequence[str],
    labels: Sequence[str],
    num_chains: int,
    misfit: Misfit | None = None,
) -> dict[str, np.ndarray]:
    """Sample-site values at the priors' typical values (zero group effects), one row per chain.

    With ``misfit``, its shared scales start at their priors' medians and every group's walk
    flat.
    """
    n = len(labels)
    out: dict[str, np.ndarray] = {}
    if misfit is not None:
        names = walk_names({"n_params", "n_tokens"} <= set(law.variables))
        out[SCALES] = np.tile([0.6745 * getattr(misfit, name) for name in names], (num_chains, 1))
        out[COEFS] = np.zeros((num_chains, len(names), n, misfit.knots - 2))
    for name in (*law.param_names, "sigma"):
        if name in pool:
            out[f"{name}_mu"] = np.full(num_chains, priors[f"{name}_mu"].values[0])
            out[f"{name}_tau"] = np.full(num_chains, 0.3 * priors[f"{name}_tau"].values[0])
            out[f"_{name}_z"] = np.zeros((num_chains, n))
        else:
            site = f"{name}_c" if _role(law, name) in ("amplitude", "scale") else name
            row = [_typical(priors[f"{name}[{g}]"]) for g in labels]
            out[site] = np.tile(np.asarray(row), (num_chains, 1))
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def lone_start(
    law: Law,
    priors: Priors,
    pool: Sequence[str],
    labels: Sequence[str],
    inputs: GroupInputs,
    lone: Sequence[Any],
    misfit: Misfit | None = None,
) -> dict[str, np.ndarray] | None:
    """Sample-site values (one row) assembled from the groups' lone MAP fits: the joint MAP's start.

    ``lone``: the lone fits of `bayescale.inference.grouped.lone_fits`.

    A pooled parameter's population is the mean and sd of the lone modes (on the scale it is pooled
    on; the sd kept within its prior), each group's effect its standardised value, a group without a
    lone mode at the population's mean; per-group parameters take their lone mode, or their prior's
    typical value: the joint L-BFGS then starts near its mode instead of searching from the priors
    (figures in the design notes, *Measurements behind the code*). None where fewer than two groups
    have a lone mode.
    """
    if sum(f is not None for f in lone) < 2:
        return None
    cold = {k: v[0] for k, v in group_start(law, priors, pool, labels, 1, misfit).items()}
    roles = {p.name: p for p in law.params}
    out = dict(cold)

    def lone_values(name: str) -> np.ndarray:
        return np.array([float(f.mode[name]) if f else np.nan for f in lone])

    for name in (*law.param_names, "sigma"):
        p = roles.get(name)
        value = lone_values(name)
        if p is not None and p.role in ("amplitude", "scale"):  # at the common centre
            coef = lone_values(p.exponent) if p.role == "amplitude" else 1.0
            t = np.log(value) - coef * inputs.centre[p.variable]
            if name not in pool:
                out[f"{name}_c"] = np.where(np.isfinite(t), np.exp(t), cold[f"{name}_c"])
                continue
        elif name not in pool:
            out[name] = np.where(np.isfinite(value), value, cold[name])
            continue
        elif _is_real(law, priors, name):
            t = value
        elif f"{name}_bound" in inputs.hyper:  # a floor pooled as a share
            share = np.clip(value / inputs.hyper[f"{name}_bound"][0], 1e-3, 1 - 1e-3)
            t = np.log(share / (1 - share))
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                t = np.log(value)
        known = t[np.isfinite(t)]
        if known.size < 2:
            continue
        mu = float(np.mean(known))
        limit = _tau_limit(priors, name)
        tau = float(np.clip(np.std(known), 0.05 * limit, 0.5 * limit))
        out[f"{name}_mu"], out[f"{name}_tau"] = np.asarray(mu), np.asarray(tau)
        out[f"_{name}_z"] = np.where(np.isfinite(t), (t - mu) / tau, 0.0)
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


# ------------------------------------------------------------------------------ draws


def group_draws(
    post: Any,
    law: Law,
    group: str | None,
    seed: int,
    *,
    labels: Sequence[str],
    pooling: str,
    pool: Sequence[str],
    pool_real: Sequence[str],
    centres: Mapping[str, Mapping[str, float]],
    floor_bounds: Sequence[float],
    misfit: Misfit | None,
    new_coords: MisfitCoords | None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Draws ``(chain, draw)`` of one group's parameters and sigma, and its centre.

    ``post`` is a grouped fit's posterior (an `xarray.Dataset`); the keywords are its settings
    (`bayescale.inference.settings.FitSettings`: ``new_coords`` is its
    ``new_group_misfit_coords``).

    ``group`` is a label of the fit, or None for a new group drawn from the population: each
    posterior draw of ``(mu, tau)`` gets its own ``z ~ N(0, 1)`` from
    the stream ``new_group`` of ``seed`` (`bayescale.streams`). With a misfit, the draws hold
    its sites: the shared scales and the group's walk (``misfit_<name>_knots``), or for a new
    group a fresh walk per draw of the scales, from the stream ``new_group_misfit``, over the
    range of every fitted run.

    Raises
    ------
    OptionError
        If the label is unknown, or a new group is asked of a fit that does not pool every
        parameter.
    """
    labels = list(labels)
    real = pool_real
    names = [*law.param_names, "sigma"]
    if group is not None:
        if group not in labels:
            raise OptionError(
                f"unknown group {group!r}; the fit has groups {labels}. Pass one of them, or "
                "group_label=None for a new group drawn from the population."
            )
        draws = {k: np.asarray(post[k].sel(group=group).values, np.float64) for k in names}
        for k in post.data_vars:  # the misfit: its shared scales and this group's walk
            if k.startswith("misfit_"):
                v = post[k].sel(group=group) if "group" in post[k].dims else post[k]
                draws[k] = np.asarray(v.values, np.float64)
        return draws, dict(centres[group])
    missing = [n for n in names if n not in pool]
    if pooling != "partial" or missing:
        raise OptionError(
            f"a new group is drawn from the population, but this fit (pooling="
            f"{pooling!r}) has no population for {missing or names}. Refit with "
            "pooling='partial', pool='all', or forecast one of the fitted groups: "
            f"group={labels[0]!r}."
        )
    rng = streams.rng(seed, "new_group")
    common = dict(centres[labels[0]])
    out: dict[str, np.ndarray] = {}
    for name in names:
        mu = np.asarray(post[f"{name}_mu"].values, np.float64)
        tau = np.asarray(post[f"{name}_tau"].values, np.float64)
        t = mu + tau * rng.standard_normal(mu.shape)
        p = next((q for q in law.params if q.name == name), None)
        if p is not None and p.role in ("amplitude", "scale"):
            coef = out[p.exponent] if p.role == "amplitude" else 1.0
            out[name] = np.exp(np.clip(t + coef * common[p.variable], -700, 700))
        elif p is not None and p.role == "floor" and len(floor_bounds):
            # a floor pooled as a share: of the groups' median lowest loss
            bound = float(np.median(floor_bounds))
            out[name] = bound / (1.0 + np.exp(-t))
        else:
            out[name] = t if name in real else np.exp(np.clip(t, -700, 700))
    if misfit is not None:  # a fresh walk per draw from the shared scales (`new_walk_knots`)
        spec = misfit
        half = new_coords.half
        walks = streams.rng(seed, "new_group_misfit")
        for k in post.data_vars:
            if k.startswith("misfit_") and "group" not in post[k].dims:
                out[k] = np.asarray(post[k].values, np.float64)
        for name in MISFIT_SITES:
            if name in out:
                scale = out[name]
                knots = new_walk_knots(spec, half, scale, walks)
                out[f"{name}_knots"] = knots.reshape(*scale.shape, spec.knots)
    return out, common


# ------------------------------------------------------------------------------ priors_from


def priors_from(
    fit: Any,
    params: Sequence[str] | None = None,
    *,
    widen: float = 1.0,
    at: Any = None,
) -> Priors:
    """Priors for a new fit from a previous posterior, moment-matched per parameter.

    Parameters
    ----------
    fit : Fit
        A NUTS or MAP fit (one curve, or one group of a grouped fit selected with
        `bayescale.inference.fit.group_fit`).
    params : sequence of str, optional
        Parameters to transfer. Default: every parameter of the law and ``sigma``, except
        amplitudes and scales unless ``at`` is given.
    widen : float, default 1.0
        Multiply every prior's sd by this factor (> 1 to trust the old posterior less, for a
        family that may differ).
    at : DataFrame or ScalingData, optional
        The runs of the new fit. Amplitudes are sampled at the data centre (``A xbar^-alpha``,
        see `bayescale.model.build`), so their prior depends on the new runs' centre ``xbar``; with
        ``at``, amplitudes and scales are transferred at that centre.

    Returns
    -------
    Priors
        Parameter -> `Prior`, ready for ``bs.fit(new_runs, priors=...)``: ``LogNormal`` with the
        mean and sd of the draws' log for positive parameters, ``Normal`` with their mean and
        sd for parameters on the real line (a Normal default prior).

    Raises
    ------
    FitError
        If the fit has no posterior draws.
    OptionError
        If ``params`` names an unknown parameter, or an amplitude without ``at``.

    Examples
    --------
    >>> import bayescale as bs
    >>> old = bs.fit(bs.simulate("power_law", seed=1), "power_law", method="map")
    >>> sorted(bs.priors_from(old))
    ['E', 'alpha', 'sigma']
    """
    from bayescale.errors import FitError
    from bayescale.io.data import from_frame

    if not isinstance(widen, (int, float)) or isinstance(widen, bool) or not widen > 0:
        raise OptionError(f"widen must be a positive number; received {widen!r}.")
    if getattr(fit, "groups", None) and fit.pooling != "complete":
        raise OptionError(
            "priors_from takes one curve's fit; this fit has groups. Select one first: "
            "bs.priors_from(bs.group_fit(fit, '<group>'))."
        )
    law: Law = fit.law
    draws = fit.draws()
    if "sigma" not in draws or len(draws["sigma"]) < 2:
        raise FitError(
            f"priors_from needs posterior draws; the fit has method={fit.method!r}. Fit with "
            "method='nuts' (or 'map')."
        )
    roles = {p.name: p for p in law.params}
    centred = [p.name for p in law.params if p.role in ("amplitude", "scale")]
    names = [*law.param_names, "sigma"]
    if params is None:
        chosen = [n for n in names if n not in centred or at is not None]
    else:
        chosen = list(params)
        bad = [n for n in chosen if n not in names]
        if bad:
            raise OptionError(f"params names {bad}; parameters of the fit are {names}.")
        need = [n for n in chosen if n in centred and at is None]
        if need:
            raise OptionError(
                f"{need} are sampled at the new data's centre; pass at=new_runs to transfer "
                "them, or leave them out of params."
            )
    locations = [n for n in chosen if roles.get(n) is not None and roles[n].role == "location"]
    if locations:
        raise OptionError(
            f"break locations {locations} keep their LogUniform range; leave them out of params."
        )
    centre = {}
    if at is not None:
        runs = from_frame(at)
        centre = {v: float(np.mean(np.log(runs.column(v)))) for v in law.variables}
    out = Priors()
    for name in chosen:
        v = np.asarray(draws[name], np.float64)
        p = roles.get(name)
        old = fit.priors.get(name)
        if p is not None and p.role in ("amplitude", "scale"):
            coef = np.asarray(draws[p.exponent]) if p.role == "amplitude" else 1.0
            x = np.log(v) - coef * centre[p.variable]
            note = f"on {name} * {p.variable}^-{p.exponent} at the new centre (from a posterior)"
            out[name] = Prior("LogNormal", loc=x.mean(), scale=widen * _sd(x), note=note)
        elif old is not None and old.family in _REAL:
            out[name] = Prior("Normal", loc=v.mean(), scale=widen * _sd(v), note="from a posterior")
        else:
            x = np.log(v)
            out[name] = Prior(
                "LogNormal", loc=x.mean(), scale=widen * _sd(x), note="from a posterior"
            )
    return out


def _sd(x: np.ndarray) -> float:
    """The draws' sd, kept above a tiny floor so that a Prior can hold it."""
    return float(max(np.std(x, ddof=1), 1e-6))

r"""Sampler coordinates aligned with what a curve's runs identify (a fixed change of variables).

A power law with a floor, ``L = E + a (x / x0)^-alpha`` (``a``: the amplitude at the centre
``x0`` of the log inputs), is often fitted to runs whose loss barely bends over the observed
range. The runs then pin down two things only: the level ``E + a`` at the centre and the slope
``alpha a`` there. In numpyro's unconstrained coordinates (``logit`` of the floor's share of
its prior range, ``log a``, ``log alpha``) the posterior is a thin curved ridge along which the
floor, the amplitude and the exponent trade off, and NUTS diverges or mixes slowly on it (the
BIG-bench curves of the Revisiting benchmark: 138 divergences and r_hat 1.67 over 20 curves).

NUTS therefore runs in coordinates ``y`` where the ridge is a coordinate axis:

- ``y_E = z_E``: the floor's own unconstrained coordinate (unchanged);
- ``y_a = m``: the level at the centre, ``E + a = s (1 + m)``, relative to the geometric mean
  loss ``s`` of the fitted runs: ``a = w * softplus((s (1 + m) - E) / w)`` with
  ``w = s / 10^4``, so that ``a = s (1 + m) - E`` wherever ``a`` is well above ``w`` and
  ``a > 0`` everywhere (a smooth bijection of the whole space, not a truncation);
- ``y_alpha = v``: the log slope, ``log alpha + log a``.

The model, its priors and its posterior are unchanged: the potential in ``y`` is the model's
potential at ``z(y)`` minus ``log |dz/dy|``, which is ``log sigmoid(x) + log s - log a``
(the map is triangular with unit diagonal except for ``d log a / d m``). Draws are mapped back
to ``z`` before anything else sees them. The map applies to laws with exactly one floor and
one amplitude whose exponent and amplitude have positive supports (``power_law``); for any other
law `ridge_map` returns None and the sampler runs in numpyro's coordinates.

**Grouped fits** (`bayescale.model.hierarchy`) take the same map per group. With partial pooling a
pooled parameter's numpyro coordinate is its standardised group effect ``z = (t - mu) / tau``
(``t``: the log of the exponent or of the amplitude at the common centre ``c``; the floor's
logit share of the group's smallest loss, or its log: see `bayescale.model.hierarchy`). The level
and the log slope are then taken at the group's own centre ``x_g`` (its mean log input),
where its runs identify them, and mapped to numpyro's coordinates by
``log alpha = v - log a``, ``log A_c = log a + alpha (x_g - c)`` and, for a pooled parameter,
``z = (t - mu) / tau``; the Jacobian gains ``-log tau`` per group and pooled exponent or
amplitude (the population's ``mu`` and ``tau`` are coordinates of both).
So the pooled exponent and amplitude are sampled centred. So are the pooled floor and noise
scale (``centred``): their coordinate is ``t`` itself, in groups of at least ``min_runs``
runs (the others keep ``z``: few runs do not pin them down). On the 20 Revisiting curves the
non-centred floor and noise scale took 285 to 900 leapfrog steps per iteration; centred,
about 31 (see the explanation page *Pooling across curves*). These coordinates suit curves
whose exponents differ; `bayescale.inference.grouped.exponents_differ` decides whether a grouped fit
takes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bayescale.model.distributions import make_distribution
from bayescale.model.laws import Law

__all__ = ["BrokenMap", "RidgeMap", "ridge_map"]

#: width of the softplus that keeps the amplitude positive, as a share of the mean loss
WIDTH = 1e-4
#: the level coordinate's unit, as a share of the mean loss (posterior sds of order 0.1-1)
LEVEL_UNIT = 1000.0
#: prior families whose support numpyro maps to the real line by a log (LogUniform is an
#: interval: a sigmoid, so the map does not apply to it)
_POSITIVE = ("LogNormal", "HalfNormal", "HalfCauchy", "Exponential", "Gamma")


@dataclass(frozen=True)
class RidgeMap:
    """The change of variables for one law's sites (see the module docstring).

    Attributes
    ----------
    floor, amplitude, exponent : str
        Parameter names of the floor, the amplitude and the exponent.
    floor_family : str
        The floor prior's family (its support gives the floor's unconstrained transform);
        unused where the floor is pooled.
    grouped : bool
        The sites are vectors over groups (`bayescale.model.build.build_model` with a group
        structure, whose last argument ``gidx`` gives each run's group), each group with its own
        map.
    pooled : tuple of str
        Those of the three parameters drawn from a population (partial pooling): their sites
        are the standardised effects ``_<name>_z``, with ``<name>_mu`` and ``<name>_tau``.
    variable : str or None
        With partial pooling, the law's variable: the level and slope are taken at each
        group's own centre, and the amplitude moved to the model's common centre.
    centred : tuple of str
        Pooled parameters other than the amplitude and exponent (the floor, ``sigma``) sampled
        centred: the sampler's coordinate is the group's own ``t = mu + tau z`` rather than
        ``z`` (for parameters that each group's runs pin down, where the non-centred form
        couples every group to ``mu`` and ``tau``).
    min_runs : int
        The ``centred`` parameters are sampled centred in groups of at least this many runs
        and non-centred in the others: a group of few runs does not pin its floor and noise
        scale down, and the centred form would put it in the funnel of ``tau``.
    """

    floor: str
    amplitude: str
    exponent: str
    floor_family: str
    grouped: bool = False
    pooled: tuple[str, ...] = ()
    variable: str | None = None
    centred: tuple[str, ...] = ()
    min_runs: int = 0

    def _site(self, name: str) -> str:
        if name in self.pooled:
            return f"_{name}_z"
        return f"{name}_c" if name == self.amplitude else name

    def positions(self, template: Mapping[str, Any]) -> dict[str, Any]:
        """Indices in the flat vector of ``template`` (sorted site names) of the map's sites."""
        offset, where = 0, {}
        for name in sorted(template):
            size = int(np.prod(np.shape(template[name])))
            where[name] = np.arange(offset, offset + size)
            offset += size
        out = {role: where[self._site(getattr(self, role))] for role in _ROLES}
        for name in self.centred:
            out[name] = where[f"_{name}_z"]
        for name in (*self.pooled, *self.centred):
            # scalar sites: an integer index, so that their values are scalars
            out[f"{name}_mu"], out[f"{name}_tau"] = (
                int(where[f"{name}_{h}"][0]) for h in ("mu", "tau")
            )
        return out

    def _parts(
        self, v: Any, args: tuple[Any, ...], where: Mapping[str, Any], sampler: bool
    ) -> tuple[Any, ...]:
        """Floor, scale, width, each group's distance ``x_g - c`` and the populations in ``v``.

        ``v`` is the sampler's vector (``sampler``) or numpyro's: the populations' coordinates
        are the same in both, and so is the floor's unless it is pooled centred.
        """
        import jax
        import jax.numpy as jnp
        from numpyro.distributions.transforms import biject_to

        logx, centre, hyper, log_loss, mask = args[:5]  # the arguments of `build_model`
        gidx = args[6] if self.grouped else None
        pop = {
            name: (v[where[f"{name}_mu"]], jnp.exp(v[where[f"{name}_tau"]]))
            for name in (*self.pooled, *self.centred)
        }
        weight = mask.astype(log_loss.dtype)
        if gidx is None:
            total, count = jnp.sum(weight * log_loss), jnp.sum(weight)
        else:  # per group
            n = jnp.shape(centre[next(iter(centre))])[0]
            g = gidx.astype(jnp.int32)
            total = jax.ops.segment_sum(weight * log_loss, g, n)
            count = jax.ops.segment_sum(weight, g, n)
        on = count >= self.min_runs  # the groups whose centred parameters are sampled centred
        count = jnp.maximum(count, 1.0)
        scale = jnp.exp(total / count)
        y_e = v[where["floor"]]
        if self.floor in self.pooled:
            mu, tau = pop[self.floor]
            t = mu + tau * y_e
            if sampler and self.floor in self.centred:
                t = jnp.where(on, y_e, t)
            bound = hyper.get(f"{self.floor}_bound")  # pooled as a share, or its log
            floor = jnp.exp(t) if bound is None else bound[0] * jax.nn.sigmoid(t)
        else:
            prior = make_distribution(self.floor_family, *hyper[self.floor])
            floor = biject_to(prior.support)(y_e)
        delta = 0.0
        if self.variable is not None:  # partial pooling: a grouped map
            mean_logx = jax.ops.segment_sum(weight * logx[self.variable], g, n) / count
            delta = mean_logx - centre[self.variable]
        return floor, scale, WIDTH * scale, delta, pop, on

    def _standardise(self, name: str, t: Any, pop: Mapping[str, Any]) -> Any:
        if name not in self.pooled:
            return t
        mu, tau = pop[name]
        return (t - mu) / tau

    def _raw(self, name: str, z: Any, pop: Mapping[str, Any]) -> Any:
        if name not in self.pooled:
            return z
        mu, tau = pop[name]
        return mu + tau * z

    def to_z(self, y: Any, args: tuple[Any, ...], where: Mapping[str, Any]) -> Any:
        """Numpyro's flat unconstrained vector from the sampler's ``y``."""
        return self.forward(y, args, where)[0]

    def log_det(self, y: Any, args: tuple[Any, ...], where: Mapping[str, Any]) -> Any:
        """``log |dz/dy|`` at ``y``."""
        return self.forward(y, args, where)[1]

    def forward(self, y: Any, args: tuple[Any, ...], where: Mapping[str, Any]) -> Any:
        """``(z, log |dz/dy|)`` at ``y``, in one pass (what a potential needs)."""
        import jax
        import jax.numpy as jnp

        i_a, i_x = where["amplitude"], where["exponent"]
        floor, scale, width, delta, pop, on = self._parts(y, args, where, True)
        x = (scale * (1.0 + y[i_a] / LEVEL_UNIT) - floor) / width
        low = x < -30.0  # softplus(x) = e^x there; both branches kept finite for the gradient
        log_a = jnp.log(width) + jnp.where(low, x, jnp.log(jax.nn.softplus(jnp.where(low, 0.0, x))))
        log_alpha = y[i_x] - log_a
        # (a Python branch: the maps without pooling keep the arithmetic, and so the draws,
        # of the single-curve map)
        log_amp = log_a if self.variable is None else log_a + jnp.exp(log_alpha) * delta
        z_a = self._standardise(self.amplitude, log_amp, pop)
        z_x = self._standardise(self.exponent, log_alpha, pop)
        z = y.at[i_a].set(z_a).at[i_x].set(z_x)
        log_det = jnp.sum(jax.nn.log_sigmoid(x) + jnp.log(scale / LEVEL_UNIT) - log_a)
        for name in (self.amplitude, self.exponent):
            if name in self.pooled:
                log_det = log_det - jnp.size(log_a) * jnp.log(pop[name][1])
        for name in self.centred:
            y_c, (mu, tau) = y[where[name]], pop[name]
            z = z.at[where[name]].set(jnp.where(on, (y_c - mu) / tau, y_c))
            log_det = log_det - jnp.sum(on) * jnp.log(tau)
        return z, log_det

    def to_y(self, z: Any, args: tuple[Any, ...], where: Mapping[str, Any]) -> Any:
        """The sampler's ``y`` from numpyro's flat unconstrained vector (inverse of `to_z`)."""
        import jax.numpy as jnp

        i_a, i_x = where["amplitude"], where["exponent"]
        floor, scale, width, delta, pop, on = self._parts(z, args, where, False)
        log_alpha = self._raw(self.exponent, z[i_x], pop)
        log_a = self._raw(self.amplitude, z[i_a], pop)
        if self.variable is not None:
            log_a = log_a - jnp.exp(log_alpha) * delta
        ratio = jnp.exp(log_a) / width  # a / w
        # softplus^-1(r) = r + log(1 - e^-r), stable for large and small r
        x = ratio + jnp.log(-jnp.expm1(-ratio))
        level = ((floor + width * x) / scale - 1.0) * LEVEL_UNIT
        y = z.at[i_a].set(level).at[i_x].set(log_alpha + log_a)
        for name in self.centred:
            z_c, (mu, tau) = z[where[name]], pop[name]
            y = y.at[where[name]].set(jnp.where(on, mu + tau * z_c, z_c))
        return y


#: the three parameters of the map, by role
_ROLES = ("floor", "amplitude", "exponent")


@dataclass(frozen=True)
class BrokenMap:
    r"""Coordinates of a broken law's floor and amplitude aligned with what its runs identify.

    With the floor's prior ``Uniform(low, high)`` (``high``: the smallest observed loss) numpyro
    samples ``z_E = logit(q)``, ``q = (E - low) / (high - low)``, and the amplitude at the
    centre by its log. Past a break the runs pin the slope of ``log(L - E)``, so along the
    floor's ridge the exponent after the break moves with the log headroom ``log(high - E)``,
    nearly linearly, and far from linearly with ``z_E`` (measured on the explanation page
    *Detecting scaling breaks*); and before the break
    they pin the level ``E + b_c`` at the centre, as for the power law (`RidgeMap`). NUTS
    therefore runs on

    - ``y_E = log(-log q)``: ``log((high - E) / (high - low))`` to first order while the floor
      is near the smallest loss, and still a bijection of the line onto ``(low, high)``:
      ``z_E = -log(expm1(e^y))``, ``log |dz_E/dy_E| = y + e^y - log(expm1(e^y))``;
    - ``y_b = m``: the level at the centre, ``E + b_c = s (1 + m / LEVEL_UNIT)``, with
      ``b_c = w softplus((s (1 + m / LEVEL_UNIT) - E) / w)`` as in `RidgeMap`.

    The map is triangular, so ``log |dz/dy|`` is the sum of the two diagonal terms. The prior
    and the posterior are unchanged.

    Attributes
    ----------
    floor, amplitude : str
        Parameter names of the floor and of the amplitude (sampled at the centre).
    """

    floor: str
    amplitude: str

    def positions(self, template: Mapping[str, Any]) -> dict[str, Any]:
        """Indices in the flat vector of ``template`` (sorted site names) of the two sites."""
        offset, where = 0, {}
        for name in sorted(template):
            where[name] = offset
            offset += int(np.prod(np.shape(template[name])))
        return {"floor": where[self.floor], "amplitude": where[f"{self.amplitude}_c"]}

    def to_z(self, y: Any, args: tuple[Any, ...], where: Mapping[str, Any]) -> Any:
        """Numpyro's flat unconstrained vector from the sampler's ``y``."""
        return self.forward(y, args, where)[0]

    def log_det(self, y: Any, args: tuple[Any, ...], where: Mapping[str, Any]) -> Any:
        """``log |dz/dy|`` at ``y``."""
        return self.forward(y, args, where)[1]

    def _scale(self, args: tuple[Any, ...]) -> tuple[Any, Any, Any]:
        import jax.numpy as jnp

        _, _, hyper, log_loss, mask = args[:5]
        weight = mask.astype(log_loss.dtype)
        scale = jnp.exp(jnp.sum(weight * log_loss) / jnp.maximum(jnp.sum(weight), 1.0))
        low, high = hyper[self.floor][:2]
        return scale, low, high

    def forward(self, y: Any, args: tuple[Any, ...], where: Mapping[str, Any]) -> Any:
        """``(z, log |dz/dy|)`` at the sampler's ``y``."""
        import jax
        import jax.numpy as jnp

        i_e, i_a = where["floor"], where["amplitude"]
        scale, low, high = self._scale(args)
        u = jnp.exp(y[i_e])
        log_expm1 = u + jnp.log(-jnp.expm1(-u))  # log(e^u - 1), stable for small and large u
        floor = low + (high - low) * jnp.exp(-u)
        width = WIDTH * scale
        x = (scale * (1.0 + y[i_a] / LEVEL_UNIT) - floor) / width
        low_x = x < -30.0  # softplus(x) = e^x there; both branches finite for the gradient
        soft = jnp.log(jax.nn.softplus(jnp.where(low_x, 0.0, x)))
        log_a = jnp.log(width) + jnp.where(low_x, x, soft)
        z = y.at[i_e].set(-log_expm1).at[i_a].set(log_a)
        log_det = y[i_e] + u - log_expm1
        log_det = log_det + jax.nn.log_sigmoid(x) + jnp.log(scale / LEVEL_UNIT) - log_a
        return z, log_det

    def to_y(self, z: Any, args: tuple[Any, ...], where: Mapping[str, Any]) -> Any:
        """The sampler's ``y`` from numpyro's flat unconstrained vector (inverse of `forward`)."""
        import jax
        import jax.numpy as jnp

        i_e, i_a = where["floor"], where["amplitude"]
        scale, low, high = self._scale(args)
        floor = low + (high - low) * jax.nn.sigmoid(z[i_e])
        width = WIDTH * scale
        ratio = jnp.exp(z[i_a]) / width
        x = ratio + jnp.log(-jnp.expm1(-ratio))  # softplus^-1
        level = ((floor + width * x) / scale - 1.0) * LEVEL_UNIT
        return z.at[i_e].set(jnp.log(jax.nn.softplus(-z[i_e]))).at[i_a].set(level)


def ridge_map(
    law: Law,
    families: Mapping[str, str],
    grouped: bool = False,
    pooled: tuple[str, ...] = (),
    centred: tuple[str, ...] = (),
    min_runs: int = 0,
) -> RidgeMap | BrokenMap | None:
    """The change of variables for ``law`` with prior ``families``, or None where it does not apply.

    It applies to a law whose parameters are exactly one floor, one exponent and one amplitude
    of that exponent, each sampled with its own prior (``families`` names it) with a
    positive support for the amplitude and the exponent, or pooled (named in ``pooled``: a
    population on the log of the amplitude or exponent, on the logit share of the floor).
    ``grouped``: the model of `bayescale.model.hierarchy` (vector sites over groups); ``centred``:
    other pooled parameters sampled centred (see `RidgeMap`).
    """
    roles = sorted(p.role for p in law.params)
    if "location" in roles and not grouped:  # a broken law (`BrokenMap`)
        floors = [p for p in law.params if p.role == "floor"]
        amps = [p for p in law.params if p.role == "amplitude"]
        if (
            len(floors) == 1
            and len(amps) == 1
            and families.get(floors[0].name) == "Uniform"
            and family_positive(families.get(amps[0].name))
        ):
            return BrokenMap(floors[0].name, amps[0].name)
        return None
    if roles != ["amplitude", "exponent", "floor"]:
        return None
    amp = next(p for p in law.params if p.role == "amplitude")
    floor = next(p for p in law.params if p.role == "floor")
    ok = all(
        name in pooled or family_positive(families.get(name)) for name in (amp.name, amp.exponent)
    )
    if not ok or (floor.name not in pooled and floor.name not in families):
        return None
    three = (floor.name, amp.name, amp.exponent)
    centred = tuple(n for n in pooled if n in centred and n not in three[1:])
    pooled = tuple(n for n in three if n in pooled)
    return RidgeMap(
        floor.name,
        amp.name,
        amp.exponent,
        families.get(floor.name, ""),
        grouped,
        pooled,
        amp.variable if pooled else None,
        centred,
        min_runs,
    )


def family_positive(family: str | None) -> bool:
    """Whether numpyro maps this prior family to the unconstrained line by a log."""
    return family in _POSITIVE

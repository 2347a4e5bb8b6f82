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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bayescale.distributions import make_distribution
from bayescale.laws import Law

__all__ = ["RidgeMap", "ridge_map"]

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
        Sample-site names of the floor, the centred amplitude and the exponent.
    floor_family : str
        The floor prior's family (its support gives the floor's unconstrained transform).
    grouped : bool
        The sites are vectors over groups (`bayescale.hierarchy`'s model, whose arguments
        are ``(logx, gidx, centre, hyper, log_loss, mask)``), each group with its own map.
    """

    floor: str
    amplitude: str
    exponent: str
    floor_family: str
    grouped: bool = False

    def positions(self, template: Mapping[str, Any]) -> tuple[Any, Any, Any]:
        """Indices of the three sites in the flat vector of ``template`` (sorted site names)."""
        offset, where = 0, {}
        for name in sorted(template):
            size = int(np.prod(np.shape(template[name])))
            where[name] = np.arange(offset, offset + size)
            offset += size
        return where[self.floor], where[self.amplitude], where[self.exponent]

    def _parts(self, args: tuple[Any, ...]) -> tuple[Any, Any, Any]:
        import jax
        import jax.numpy as jnp
        from numpyro.distributions.transforms import biject_to

        if self.grouped:
            gidx, hyper, log_loss, mask = args[1], args[3], args[4], args[5]
        else:
            gidx, (hyper, log_loss, mask) = None, args[2:5]
        prior = make_distribution(self.floor_family, *hyper[self.floor])
        weight = mask.astype(log_loss.dtype)
        if gidx is None:
            total, count = jnp.sum(weight * log_loss), jnp.sum(weight)
        else:  # per group
            n = jnp.shape(hyper[self.floor][0])[0]
            g = gidx.astype(jnp.int32)
            total = jax.ops.segment_sum(weight * log_loss, g, n)
            count = jax.ops.segment_sum(weight, g, n)
        scale = jnp.exp(total / jnp.maximum(count, 1.0))
        return biject_to(prior.support), scale, WIDTH * scale

    def to_z(self, y: Any, args: tuple[Any, ...], where: tuple[Any, Any, Any]) -> Any:
        """Numpyro's flat unconstrained vector from the sampler's ``y``."""
        return self.forward(y, args, where)[0]

    def log_det(self, y: Any, args: tuple[Any, ...], where: tuple[Any, Any, Any]) -> Any:
        """``log |dz/dy|`` at ``y``."""
        return self.forward(y, args, where)[1]

    def forward(self, y: Any, args: tuple[Any, ...], where: tuple[Any, Any, Any]) -> Any:
        """``(z, log |dz/dy|)`` at ``y``, in one pass (what a potential needs)."""
        import jax
        import jax.numpy as jnp

        i_e, i_a, i_x = where
        to_floor, scale, width = self._parts(args)
        floor = to_floor(y[i_e])
        x = (scale * (1.0 + y[i_a] / LEVEL_UNIT) - floor) / width
        low = x < -30.0  # softplus(x) = e^x there; both branches kept finite for the gradient
        log_a = jnp.log(width) + jnp.where(low, x, jnp.log(jax.nn.softplus(jnp.where(low, 0.0, x))))
        z = y.at[i_a].set(log_a).at[i_x].set(y[i_x] - log_a)
        log_det = jax.nn.log_sigmoid(x) + jnp.log(scale / LEVEL_UNIT) - log_a
        return z, jnp.sum(log_det)

    def to_y(self, z: Any, args: tuple[Any, ...], where: tuple[Any, Any, Any]) -> Any:
        """The sampler's ``y`` from numpyro's flat unconstrained vector (inverse of `to_z`)."""
        import jax.numpy as jnp

        i_e, i_a, i_x = where
        to_floor, scale, width = self._parts(args)
        floor = to_floor(z[i_e])
        ratio = jnp.exp(z[i_a]) / width  # a / w
        # softplus^-1(r) = r + log(1 - e^-r), stable for large and small r
        x = ratio + jnp.log(-jnp.expm1(-ratio))
        level = ((floor + width * x) / scale - 1.0) * LEVEL_UNIT
        return z.at[i_a].set(level).at[i_x].set(z[i_x] + z[i_a])


def ridge_map(law: Law, families: Mapping[str, str], grouped: bool = False) -> RidgeMap | None:
    """The change of variables for ``law`` with prior ``families``, or None where it does not apply.

    It applies to a law whose parameters are exactly one floor, one exponent and one amplitude
    of that exponent, sampled with their own priors (``families`` names all three), with
    positive-support priors on the amplitude and the exponent. ``grouped``: the model of
    `bayescale.hierarchy` (vector sites over groups).
    """
    roles = sorted(p.role for p in law.params)
    if roles != ["amplitude", "exponent", "floor"]:
        return None
    amp = next(p for p in law.params if p.role == "amplitude")
    floor = next(p for p in law.params if p.role == "floor")
    if family_positive(families.get(amp.name)) and family_positive(families.get(amp.exponent)):
        if floor.name in families:
            return RidgeMap(
                floor.name, f"{amp.name}_c", amp.exponent, families[floor.name], grouped
            )
    return None


def family_positive(family: str | None) -> bool:
    """Whether numpyro maps this prior family to the unconstrained line by a log."""
    return family in _POSITIVE

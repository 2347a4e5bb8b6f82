"""The one numpyro model of every path, composed of parts (`build_model`).

The parts: the law with its priors, a group structure (pooling), the misfit and the
observation model.

Notes
-----
The observation model is ``log L_i ~ StudentT(nu, log f(x_i; theta), sigma)`` (default, nu = 4)
or ``Normal(log f(x_i; theta), sigma)`` (the registry of `bayescale.model.likelihoods`): the
Student-t is the Bayesian analogue of the Huber loss on log residuals used by Hoffmann et al.
(2022) and Besiroglu et al. (2024), robust to the few runs that sit far from the law.

Amplitudes are sampled centred at the data: with ``m = mean(log x)`` the sampler sees
``A_c = A * exp(-alpha m)`` (the term's size at the data centre) and ``log A = log A_c + alpha
m``. The map (log A_c, alpha) -> (log A, alpha) is a shear with unit Jacobian, so the posterior is
unchanged while the near-collinearity of log A and alpha disappears. Scales (``N_c``) are
sampled relative to the centre in the same way; break locations are sampled jointly as sorted
log-uniform positions inside the observed range.

The model takes its data, prior hyper-parameters and an observation mask as arguments, and the
runs are padded to a few bucketed sizes (`bucket_size`), so one compiled sampler serves every
data set of a bucket and every subset of it (leave-one-out and leave-future-out refits).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bayescale.io.data import ScalingData
from bayescale.model.distributions import make_distribution
from bayescale.model.geometry import ridge_map
from bayescale.model.laws import Law
from bayescale.model.likelihoods import Likelihood
from bayescale.model.misfit import (
    COEFS,
    SCALES,
    Misfit,
    MisfitCoords,
    coordinate_columns,
    law_jacobian,
    misfit_coords,
    orthogonal,
    sample_delta,
    walk_directions,
)
from bayescale.model.priors import Priors

__all__ = [
    "OBS",
    "MIN_BUCKET",
    "ModelInputs",
    "bucket_size",
    "build_model",
    "curve_params",
    "internal_sites",
    "model_inputs",
    "observe",
]

OBS = "loss"
#: smallest padded number of runs; larger tables pad to the next 2^k or 1.5 * 2^k
MIN_BUCKET = 64


def bucket_size(n_runs: int) -> int:
    """The padded number of runs for ``n_runs``: one compiled sampler serves a whole bucket.

    Buckets are ``64, 96, 128, 192, 256, 384, ...`` (powers of two and 1.5 times them), so at
    most a third of the rows are padding and a ladder of any size up to 64 runs shares one
    compilation.
    """
    if n_runs <= MIN_BUCKET:
        return MIN_BUCKET
    k = 2 ** math.floor(math.log2(n_runs))
    return k if n_runs <= k else (3 * k // 2 if n_runs <= 3 * k // 2 else 2 * k)


@dataclass(frozen=True)
class ModelInputs:
    """Arrays passed to the numpyro model (float32 numpy arrays, padded to a bucket).

    Attributes
    ----------
    logx : dict
        Variable -> natural log of the inputs, shape ``(bucket,)``; padding rows hold the centre.
    centre : dict
        Variable -> mean of its log inputs over the runs that define the fit (scalar).
    hyper : dict
        Parameter -> tuple of its prior's parameter values.
    log_loss : ndarray or None
        Observed log losses ``(bucket,)`` (0 in padding rows), or None for prediction.
    mask : ndarray
        Boolean ``(bucket,)``: True for the runs whose loss is scored by the likelihood.
    n_runs : int
        The number of real runs (the first ``n_runs`` rows).
    misfit : dict or None
        The misfit's inputs (``t``, ``r`` per row and ``half``; see `bayescale.model.misfit`), or
        None for the exact-law model.
    coords : MisfitCoords or None
        Where the fitted runs lie in the misfit's coordinates.
    """

    logx: Mapping[str, np.ndarray]
    centre: Mapping[str, np.ndarray]
    hyper: Mapping[str, tuple[np.ndarray, ...]]
    log_loss: np.ndarray | None
    mask: np.ndarray
    n_runs: int
    misfit: Mapping[str, np.ndarray] | None = None
    coords: MisfitCoords | None = None

    def args(self, mask: np.ndarray | None = None) -> tuple[Any, ...]:
        """Positional arguments of the model (optionally with another observation mask)."""
        return (
            dict(self.logx),
            dict(self.centre),
            dict(self.hyper),
            self.log_loss,
            self.mask if mask is None else mask,
            None if self.misfit is None else dict(self.misfit),
        )


def model_inputs(
    law: Law,
    data: ScalingData,
    priors: Priors,
    centre: Mapping[str, float] | None = None,
    observed: bool = True,
    mask: np.ndarray | None = None,
    pad: bool = True,
    misfit: Misfit | bool | None = None,
    coords: MisfitCoords | None = None,
    anchor: Mapping[str, float] | None = None,
) -> ModelInputs:
    """Arrays for the model, padded to `bucket_size` rows unless ``pad=False``.

    ``centre`` defaults to the mean log inputs of the runs selected by ``mask`` (all runs when
    ``mask`` is None); only those runs are scored. With ``misfit`` (its settings; True: the
    default `Misfit`), the misfit's coordinates (``coords``, default: from the runs selected by
    ``mask``, orthogonal to the law at ``anchor`` when it is given) are added; where the
    coordinates carry an anchor, the inputs of `bayescale.model.misfit.orthogonal` for the
    scored runs too, and for a curve too short for whole walks the directions they keep
    (``keep``, `bayescale.model.misfit.walk_directions`).
    """
    f32 = np.float32
    n = data.n_runs
    size = bucket_size(n) if pad else n
    mask_ = np.ones(n, bool) if mask is None else np.asarray(mask, bool)
    raw = {v: np.log(data.column(v)) for v in law.variables}
    if centre is None:
        centre = {v: float(np.mean(x[mask_])) for v, x in raw.items()}
    logx = {v: np.full(size, centre[v], f32) for v in law.variables}
    for v, x in raw.items():
        logx[v][:n] = x
    hyper = {k: tuple(np.asarray(v, f32) for v in p.values) for k, p in priors.items()}
    log_loss = None
    if observed:
        log_loss = np.zeros(size, f32)
        log_loss[:n] = np.log(data.loss)
    full_mask = np.zeros(size, bool)
    full_mask[:n] = mask_
    centre_ = {v: np.asarray(c, f32) for v, c in centre.items()}
    extra = None
    spec = Misfit() if misfit is True else misfit or None
    if spec is not None:
        if coords is None:
            fitted = {v: data.column(v)[mask_] for v in law.variables}
            coords = misfit_coords(law.variables, fitted, anchor)
        t, r = coords.scaled({k: data.column(k) for k in coordinate_columns(coords, law.variables)})
        extra = {"t": np.zeros(size, f32), "r": np.zeros(size, f32)}
        extra["t"][:n], extra["r"][:n] = t, r
        extra["half"] = np.asarray(coords.half, f32)
        if coords.anchor is not None:
            lx = {v: x.astype(np.float64) for v, x in logx.items()}
            jac = law_jacobian(law, coords.anchor, lx)
            extra.update({k: v.astype(f32) for k, v in orthogonal(jac, full_mask).items()})
        scored = {k: data.column(k)[mask_] for k in coordinate_columns(coords, law.variables)}
        keep = walk_directions(spec, coords, scored, len(law.param_names))
        if keep is not None:
            extra["keep"] = keep.astype(f32)
    return ModelInputs(logx, centre_, hyper, log_loss, full_mask, n, extra, coords)


def internal_sites(law: Law) -> tuple[str, ...]:
    """Sampled sites that are not reported (centred amplitudes, break weights, walk steps)."""
    names = [f"{p.name}_c" for p in law.params if p.role in ("amplitude", "scale")]
    if any(p.role == "location" for p in law.params):
        names.append("_breaks")
    return (*names, SCALES, COEFS, "_pointwise")


@functools.lru_cache(maxsize=32)
def build_model(
    law: Law,
    families: tuple[tuple[str, str], ...],
    likelihood: Likelihood,
    misfit: Misfit | None = None,
    groups: Any = None,
) -> Any:
    """Return the numpyro model ``model(logx, centre, hyper, log_loss, mask, mf, gidx)``.

    The one model of every path, composed of parts:

    - the **law with its priors**: one curve's parameters (`curve_params`), or, with
      ``groups``, a **group structure** that draws each group's parameters
      (`bayescale.model.hierarchy.GroupStructure`: pooling) and hands each run its group's;
    - the **misfit** (optional): `bayescale.model.misfit.sample_delta`, one walk per curve or
      per group, its scales shared;
    - the **observation model**: `observe` with a registered `Likelihood`.

    A single fit, a grouped fit and each curve of `bayescale.inference.many.fit_many` build from
    here, so a new likelihood or misfit form written once works on every path. Cached on its
    static structure (law, prior families, likelihood, misfit settings, group structure), so
    repeated fits reuse one function object and therefore one compiled sampler. Rows with
    ``mask`` False (padding, held-out runs) do not enter the likelihood. ``mf`` holds the
    misfit's inputs (`ModelInputs.misfit`), ``gidx`` each run's group index (grouped models).
    """
    import jax.numpy as jnp

    family = dict(families)
    tilt = {"n_params", "n_tokens"} <= set(law.variables)
    ridged = ridge_map(law, family) if groups is None else groups.geometry()
    expand = groups is not None and ridged is None  # numpyro's coordinates: spreads expanded

    def model(logx, centre, hyper, log_loss=None, mask=None, mf=None, gidx=None):  # type: ignore[no-untyped-def]
        g = None
        if groups is None:
            values = curve_params(law, family, hyper, centre)
        else:  # each group's parameters, handed to its runs
            g = gidx.astype(jnp.int32)
            values = {k: v[g] for k, v in groups.sample(hyper, centre, expand).items()}
        sigma = values.pop("sigma")
        mu = law.fn(values, logx)
        n_groups = 0 if groups is None else groups.n_groups
        observe(likelihood, misfit, tilt, mu, sigma, log_loss, mask, mf, g, n_groups)

    model.ridge = ridged  # the samplers' change of variables (or None)
    model.expand = expand
    return model


def curve_params(law: Law, family: Mapping[str, str], hyper: Any, centre: Any) -> dict[str, Any]:
    """The law-with-priors part of one curve: sample its parameters and ``sigma`` (numpyro).

    Amplitudes and scales are sampled centred at the data (``<name>_c``, see the module notes),
    break locations jointly as sorted positions in their range.
    """
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    locations = [p for p in law.params if p.role == "location"]
    values: dict[str, Any] = {}
    for p in law.params:
        if p.role == "location":
            continue
        prior = make_distribution(family[p.name], *hyper[p.name])
        if p.role in ("amplitude", "scale"):
            raw = numpyro.sample(f"{p.name}_c", prior)
            coef = values[p.exponent] if p.role == "amplitude" else 1.0
            # clipped so that float32 cannot overflow (|log value| <= 85) far in the tails
            value = jnp.exp(jnp.clip(jnp.log(raw) + coef * centre[p.variable], -85.0, 85.0))
            values[p.name] = numpyro.deterministic(p.name, value)
        else:
            values[p.name] = numpyro.sample(p.name, prior)
    if locations:
        low, high = (jnp.log(v) for v in hyper[locations[0].name])
        weights = numpyro.sample("_breaks", dist.Dirichlet(jnp.ones(len(locations) + 1)))
        positions = jnp.cumsum(weights)[: len(locations)]
        for i, p in enumerate(locations):
            value = jnp.exp(low + (high - low) * positions[i])
            values[p.name] = numpyro.deterministic(p.name, value)
    values["sigma"] = numpyro.sample("sigma", make_distribution(family["sigma"], *hyper["sigma"]))
    return values


def observe(
    likelihood: Likelihood,
    misfit: Misfit | None,
    tilt: bool,
    mu: Any,
    sigma: Any,
    log_loss: Any,
    mask: Any,
    mf: Any,
    group: Any = None,
    n_groups: int = 0,
) -> None:
    """The misfit and observation parts (numpyro), written once for every model.

    ``mu`` and ``sigma`` are the law's log loss and the noise scale at each run. With
    ``misfit`` the location is shifted by its ``delta`` (one walk per group where ``group``
    gives each run's group index), and the runs where ``mask`` is True are scored by
    ``likelihood`` at the ``loss`` site.
    """
    import numpyro

    if misfit is not None:
        delta = sample_delta(misfit, tilt, mf, group, n_groups)
        if misfit.p_exact > 0 and log_loss is not None:
            on, mask = _mixture(likelihood, misfit.p_exact, mu, delta, sigma, log_loss, mask)
            delta = on * delta
        mu = mu + delta
    with numpyro.plate("run", mu.shape[0]):
        noise = likelihood.distribution(mu, sigma)
        if mask is not None:
            noise = noise.mask(mask)
        numpyro.sample(OBS, noise, obs=log_loss)


def _mixture(
    likelihood: Likelihood,
    p_exact: float,
    mu: Any,
    delta: Any,
    sigma: Any,
    log_loss: Any,
    mask: Any,
) -> tuple[Any, Any]:
    """The exact-law-or-misfit mixture (``p_exact > 0``) inside the model.

    The scored runs' likelihood ``p L(law) + (1 - p) L(law + delta)`` is added as a factor, and
    ``misfit_weight`` records the misfit's conditional probability at the draw. Returns the
    indicator ``misfit_on`` (1 while sampling) and the mask of the ``loss`` site, which scores
    nothing while sampling. For pointwise densities the caller substitutes ``_pointwise = 1``
    and a drawn ``misfit_on`` (`bayescale.model.misfit.draw_indicator`): the ``loss`` site then
    scores every run given the indicator, and the factor is off.
    """
    import jax
    import jax.numpy as jnp
    import numpyro

    scored = jnp.ones(mu.shape[0], bool) if mask is None else mask

    def total(loc: Any) -> Any:
        return jnp.sum(jnp.where(scored, likelihood.distribution(loc, sigma).log_prob(log_loss), 0))

    exact = math.log(p_exact) + total(mu)
    off_law = math.log1p(-p_exact) + total(mu + delta)
    numpyro.deterministic("misfit_weight", jax.nn.sigmoid(off_law - exact))
    pointwise = numpyro.deterministic("_pointwise", jnp.zeros((), mu.dtype))
    numpyro.factor("_loss_mixture", (1.0 - pointwise) * jnp.logaddexp(exact, off_law))
    on = numpyro.deterministic("misfit_on", jnp.ones((), mu.dtype))
    return on, scored & (pointwise > 0)

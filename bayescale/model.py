"""The numpyro model built from a law, its priors and a likelihood on log loss.

Notes
-----
The observation model is ``log L_i ~ StudentT(nu, log f(x_i; theta), sigma)`` (default, nu = 4)
or ``Normal(log f(x_i; theta), sigma)``: the Student-t is the Bayesian analogue of the Huber loss
on log residuals used by Hoffmann et al. (2022) and Besiroglu et al. (2024), robust to the few
runs that sit far from the law.

Amplitudes are sampled centred at the data: with ``m = mean(log x)`` the sampler sees
``A_c = A * exp(-alpha m)`` (the term's size at the data centre) and ``log A = log A_c + alpha
m``. The map (log A_c, alpha) -> (log A, alpha) is a shear with unit Jacobian, so the posterior is
unchanged while the near-collinearity of log A and alpha disappears. Scales (``N_c``) are
sampled relative to the centre in the same way; break locations are sampled jointly as sorted
log-uniform positions inside the observed range.

The model takes its data and prior hyper-parameters as arguments, so one compiled sampler
serves every data set of the same shape.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bayescale.data import ScalingData
from bayescale.laws import Law
from bayescale.priors import Priors, make_distribution

__all__ = ["LIKELIHOODS", "ModelInputs", "build_model", "model_inputs", "OBS", "internal_sites"]

LIKELIHOODS = ("student_t", "normal")
OBS = "loss"


@dataclass(frozen=True)
class ModelInputs:
    """Arrays passed to the numpyro model (all float32 numpy arrays).

    Attributes
    ----------
    logx : dict
        Variable -> natural log of the inputs, shape ``(run,)``.
    centre : dict
        Variable -> mean of its log inputs over the observed runs.
    hyper : dict
        Parameter -> tuple of its prior's parameter values.
    log_loss : ndarray or None
        Observed log losses, or None for prior/posterior prediction.
    """

    logx: Mapping[str, np.ndarray]
    centre: Mapping[str, np.ndarray]
    hyper: Mapping[str, tuple[np.ndarray, ...]]
    log_loss: np.ndarray | None

    def args(self) -> tuple[Any, ...]:
        """Positional arguments of the model."""
        return (dict(self.logx), dict(self.centre), dict(self.hyper), self.log_loss)


def model_inputs(
    law: Law,
    data: ScalingData,
    priors: Priors,
    centre: Mapping[str, float] | None = None,
    observed: bool = True,
) -> ModelInputs:
    """Arrays for the model; ``centre`` defaults to the data's mean log inputs."""
    f32 = np.float32
    logx = {v: np.log(data.column(v)).astype(f32) for v in law.variables}
    if centre is None:
        centre = {v: float(np.mean(x)) for v, x in logx.items()}
    hyper = {k: tuple(np.asarray(v, f32) for v in p.values) for k, p in priors.items()}
    log_loss = np.log(data.loss).astype(f32) if observed else None
    return ModelInputs(logx, {v: np.asarray(c, f32) for v, c in centre.items()}, hyper, log_loss)


def internal_sites(law: Law) -> tuple[str, ...]:
    """Names of the sampled sites that are not reported (centred amplitudes, break weights)."""
    names = [f"{p.name}_c" for p in law.params if p.role in ("amplitude", "scale")]
    if any(p.role == "location" for p in law.params):
        names.append("_breaks")
    return tuple(names)


@functools.lru_cache(maxsize=64)
def build_model(law: Law, families: tuple[tuple[str, str], ...], likelihood: str, nu: float) -> Any:
    """Return the numpyro model function ``model(logx, centre, hyper, log_loss)``.

    Cached on its static structure (law, prior families, likelihood), so repeated fits reuse
    one function object and therefore one compiled sampler.
    """
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    family = dict(families)
    locations = [p for p in law.params if p.role == "location"]

    def model(logx, centre, hyper, log_loss=None):  # type: ignore[no-untyped-def]
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
        sigma = numpyro.sample("sigma", make_distribution(family["sigma"], *hyper["sigma"]))
        mu = law.fn(values, logx)
        n_runs = next(iter(logx.values())).shape[0]
        with numpyro.plate("run", n_runs):
            if likelihood == "student_t":
                noise = dist.StudentT(nu, mu, sigma)
            else:
                noise = dist.Normal(mu, sigma)
            numpyro.sample(OBS, noise, obs=log_loss)

    return model

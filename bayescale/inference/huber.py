"""The literature's point estimate: Huber loss on log residuals, L-BFGS from a grid of starts.

As in Hoffmann et al. (2022, Approach 3) and Besiroglu et al. (2024): minimise
``sum_i huber_delta(log f(x_i; theta) - log L_i)`` with ``delta = 1e-3`` over unconstrained
parameters (logs of the positive ones), starting from the points of a grid and keeping the
best optimum. The objective is evaluated at every grid point (JAX, float64; in chunks of
starts, so that memory stays bounded for any number of runs) and SciPy's L-BFGS-B runs from
the ``n_polish`` best of them; on the Epoch data this finds the same optimum as running from
all 4500 starts (``benchmarks/fit_speed.py`` checks it).

References
----------
Hoffmann et al. (2022), arXiv:2203.15556. Besiroglu, Erdil, Barnett and You (2024),
"Chinchilla Scaling: A replication attempt", arXiv:2404.10102.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from bayescale import streams
from bayescale.errors import FitError
from bayescale.io.data import ScalingData
from bayescale.model.laws import Law
from bayescale.model.priors import Priors

__all__ = ["GRID_PAIRS", "epoch_grid", "grid_chunk", "huber_bootstrap", "huber_fit"]

#: roles optimised on the real line as they are (as Besiroglu et al. do for the exponents);
#: every other parameter is positive and optimised through its log
_IDENTITY_ROLES = ("exponent", "exponent_change")


def epoch_grid() -> dict[str, np.ndarray]:
    """Besiroglu et al.'s grid of 4500 starts for the Chinchilla law (log E, log A, ...)."""
    axes = {
        "A": np.arange(0, 30, 5.0),
        "B": np.arange(0, 30, 5.0),
        "E": np.arange(-1, 1.5, 0.5),
        "alpha": np.arange(0, 2.5, 0.5),
        "beta": np.arange(0, 2.5, 0.5),
    }
    points = np.array(list(itertools.product(*axes.values())))
    return {k: points[:, i] for i, k in enumerate(axes)}


def _to_unconstrained(law: Law, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        p.name: (
            np.asarray(values[p.name])
            if p.role in _IDENTITY_ROLES
            else np.log(np.asarray(values[p.name]))
        )
        for p in law.params
    }


@functools.lru_cache(maxsize=32)
def _objective(law: Law, delta: float) -> tuple[Any, Any]:
    """Jitted (objective over a batch of starts, value and gradient at one point)."""
    import jax
    import jax.numpy as jnp

    names = law.param_names
    identity = {p.name for p in law.params if p.role in _IDENTITY_ROLES}

    def objective(z: Any, logx: Any, log_loss: Any) -> Any:
        params = {k: (z[i] if k in identity else jnp.exp(z[i])) for i, k in enumerate(names)}
        r = law.fn(params, logx) - log_loss
        a = jnp.abs(r)
        value = jnp.sum(jnp.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta)))
        return jnp.where(jnp.isfinite(value), value, jnp.inf)

    batch = jax.vmap(objective, in_axes=(0, None, None))
    return jax.jit(batch), jax.jit(jax.value_and_grad(objective))


#: (start, run) pairs of the grid's objective evaluated in one call: the starts go in chunks so
#: that the memory stays bounded (tens of MB) whatever the number of runs
GRID_PAIRS = 1 << 22


#: bootstrap refits per call of the vectorised BFGS: a batch runs until its slowest lane has
#: converged, and the cost per refit grows with the batch beyond a few tens of lanes
#: (docs/design_notes/measurements.md, "Huber bootstrap")
BOOTSTRAP_LANES = 32


def grid_chunk(n_starts: int, n_runs: int) -> int:
    """Starts per call of the grid's objective: at most `GRID_PAIRS` (start, run) pairs."""
    return max(1, min(n_starts, GRID_PAIRS // max(n_runs, 1)))


def _grid_values(batch: Any, z0: np.ndarray, logx: Any, log_loss: np.ndarray) -> np.ndarray:
    """The objective at every start, in chunks of `grid_chunk` starts (one compiled shape)."""
    size = grid_chunk(len(z0), len(log_loss))
    out = np.empty(len(z0))
    for first in range(0, len(z0), size):
        part = z0[first : first + size]
        padded = np.concatenate([part, np.repeat(part[-1:], size - len(part), axis=0)])
        out[first : first + len(part)] = np.asarray(batch(padded, logx, log_loss))[: len(part)]
    return out


def huber_fit(
    law: Law,
    data: ScalingData,
    priors: Priors,
    *,
    delta: float = 1e-3,
    starts: Mapping[str, np.ndarray] | None = None,
    n_starts: int = 512,
    n_polish: int = 64,
    seed: int = 0,
) -> tuple[dict[str, float], float]:
    """Minimise the summed Huber loss of log residuals from a grid of starts.

    Parameters
    ----------
    law, data, priors
        The law, the runs and the priors (used only to draw starts for laws without a
        published grid).
    delta : float, default 1e-3
        Huber threshold on log residuals.
    starts : mapping, optional
        Parameter -> array of starting values (papers' units). Default: Besiroglu et al.'s 4500
        point grid for ``chinchilla``, else ``n_starts`` draws from the priors.
    n_starts : int, default 512
        Number of prior draws used as starts when there is no grid.
    n_polish : int, default 64
        L-BFGS-B runs from this many starts, those with the lowest objective; pass
        ``len(starts)`` to run from every start, as the papers do (slow).
    seed : int, default 0
        Seed of those draws.

    Returns
    -------
    (dict, float)
        The estimate in the papers' units and the summed Huber objective at it.

    Raises
    ------
    FitError
        If the objective is not finite at any start or optimum (the law returns NaN or inf).
    """
    import jax
    import scipy.optimize
    from threadpoolctl import threadpool_limits

    names = law.param_names
    if starts is None and law.name == "chinchilla":
        z0 = np.column_stack([epoch_grid()[k] for k in names])
    else:
        if starts is None:
            rng = streams.rng(seed, "huber_starts")
            starts = _prior_draws(law, priors, data, rng, n_starts)
        z0 = np.column_stack([_to_unconstrained(law, starts)[k] for k in names])
    logx = {v: np.log(data.column(v)) for v in law.variables}
    log_loss = np.log(data.loss)
    with jax.enable_x64(True):
        batch, value_and_grad = _objective(law, float(delta))
        f0 = _grid_values(batch, np.asarray(z0, np.float64), logx, log_loss)

        def fg(z: np.ndarray) -> tuple[float, np.ndarray]:
            v, g = value_and_grad(z, logx, log_loss)
            return float(v), np.asarray(g, dtype=np.float64)

        best_z, best_f = z0[np.argmin(f0)], float(np.min(f0))
        # BLAS on one thread: L-BFGS-B's tiny BLAS calls (see bayescale.inference.sampling's notes)
        with threadpool_limits(limits=1, user_api="blas"):
            for i in np.argsort(f0, kind="stable")[: min(n_polish, len(f0))]:
                res = scipy.optimize.minimize(fg, z0[i], jac=True, method="L-BFGS-B")
                if np.isfinite(res.fun) and res.fun < best_f:
                    best_z, best_f = res.x, float(res.fun)
    if not np.isfinite(best_f):
        raise FitError(
            f"the Huber fit of law {law.name!r} failed: the law's prediction is NaN or infinite "
            f"for some runs at every one of the {len(z0)} starts and after L-BFGS-B, so there "
            "is no estimate. Check the law function (for example log of a negative number, or "
            "a parameter it does not read) on these runs: "
            f"{law.name}.fn(params, {{v: log(x)}}) must be finite for positive parameters."
        )
    z, value = best_z, best_f
    identity = {p.name for p in law.params if p.role in _IDENTITY_ROLES}
    est = {k: float(z[i] if k in identity else np.exp(z[i])) for i, k in enumerate(names)}
    return est, value


def huber_bootstrap(
    law: Law,
    data: ScalingData,
    estimate: Mapping[str, float],
    *,
    n_resamples: int,
    seed: int,
    delta: float = 1e-3,
) -> dict[str, np.ndarray]:
    """Bootstrap refits of the Huber point fit, as in Besiroglu et al. (2024).

    Each resample draws the runs with replacement (multinomial counts, from the stream
    ``huber_bootstrap`` of ``seed``) and minimises the count-weighted Huber objective by BFGS
    from ``estimate``; the refits are vectorised over resamples (``jax.vmap``, float64), in
    chunks of `BOOTSTRAP_LANES` resamples (fewer where that would exceed `GRID_PAIRS` (resample,
    run) pairs). These are bootstrap draws of the
    estimator, not a posterior.

    Returns
    -------
    dict
        Parameter -> array of ``n_resamples`` refitted values (papers' units).
    """
    import jax
    import jax.numpy as jnp
    from jax.scipy.optimize import minimize

    names = law.param_names
    identity = {p.name for p in law.params if p.role in _IDENTITY_ROLES}
    start = _to_unconstrained(law, estimate)
    z0 = np.array([start[k] for k in names], np.float64)
    logx = {v: np.log(data.column(v)) for v in law.variables}
    log_loss = np.log(data.loss)
    n = len(log_loss)
    counts = streams.rng(seed, "huber_bootstrap").multinomial(n, np.full(n, 1.0 / n), n_resamples)

    def objective(z: Any, weights: Any) -> Any:
        params = {k: (z[i] if k in identity else jnp.exp(z[i])) for i, k in enumerate(names)}
        r = law.fn(params, logx) - log_loss
        a = jnp.abs(r)
        # divided by delta: the summed loss is about 1e-3 on real data, below BFGS's tolerance
        return (
            jnp.sum(weights * jnp.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))) / delta
        )

    refit = jax.jit(jax.vmap(lambda w: minimize(objective, z0, args=(w,), method="BFGS").x))
    size = min(BOOTSTRAP_LANES, grid_chunk(n_resamples, n))
    out = np.empty((n_resamples, len(names)))
    with jax.enable_x64(True):
        for first in range(0, n_resamples, size):
            part = counts[first : first + size].astype(np.float64)
            padded = np.concatenate([part, np.repeat(part[-1:], size - len(part), axis=0)])
            out[first : first + len(part)] = np.asarray(refit(padded))[: len(part)]
    return {k: (out[:, i] if k in identity else np.exp(out[:, i])) for i, k in enumerate(names)}


def _prior_draws(
    law: Law, priors: Priors, data: ScalingData, rng: np.random.Generator, n: int
) -> dict[str, np.ndarray]:
    """Starting points from the priors, in the papers' units (amplitudes un-centred)."""
    import jax

    out: dict[str, np.ndarray] = {}
    centre = {v: float(np.mean(np.log(data.column(v)))) for v in law.variables}
    key = jax.random.PRNGKey(int(rng.integers(2**31)))
    for p in law.params:
        key, sub = jax.random.split(key)
        draw = np.asarray(priors[p.name].to_numpyro().sample(sub, (n,)), dtype=np.float64)
        if p.role == "amplitude":
            draw = np.exp(np.log(draw) + out[p.exponent] * centre[p.variable])
        elif p.role == "scale":
            draw = np.exp(np.log(draw) + centre[p.variable])
        out[p.name] = draw
    locs = [p.name for p in law.params if p.role == "location"]
    if len(locs) > 1:
        ordered = np.sort(np.column_stack([out[k] for k in locs]), axis=1)
        out.update({k: ordered[:, i] for i, k in enumerate(locs)})
    return out

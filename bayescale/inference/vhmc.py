r"""Vectorised Hamiltonian Monte Carlo for many independent posteriors in lock step.

`bayescale.fit_many` fits one law to many curves; each curve is an independent posterior of
the same (small) dimension. NUTS vectorises badly: every iteration of a batch lasts as long
as the deepest tree in it, and the batched ``while`` loops of its tree building run every
branch. This module runs **jittered, fixed-length HMC** instead, written on batched arrays
``(curve, chain, dim)`` so that one leapfrog step is one vectorised gradient of every lane:

- **Trajectories.** At iteration ``i`` every lane integrates for the time ``u_i T`` with
  ``u_i ~ U(0, 1)`` drawn from a key of the iteration alone (the same for every curve and
  chunk, so a curve's draws do not depend on its neighbours), in ``ceil(u_i T / eps_c)``
  leapfrog steps of its curve's step size ``eps_c`` (at most ``max_steps``; during the
  warm-up the steps are counted in the dual average of the step size, `step_unit`, which
  moves slowly, while the step size being tried jumps from one iteration to the next). The
  number of steps does not depend on the state, so each lane is an exact Metropolis-adjusted
  HMC chain; the jitter avoids the periodicity of a fixed length (Neal 2011; Hoffman, Radul &
  Sountsov 2021, ChEES-HMC, which runs the same lock-step scheme on accelerators).
- **Preconditioning** is dense, per curve: ``theta = L x`` with ``L L^T = Sigma``, unit
  momentum in ``x``. ``Sigma`` starts at the Laplace covariance at the curve's best mode and
  is re-estimated from the draws of all its chains in windows of the warm-up (Stan's
  schedule: a fast phase, doubling slow windows, a fast phase; Stan's shrinkage towards a
  small diagonal). After preconditioning every curve's posterior has unit scale, so one
  trajectory time ``T`` (in posterior standard deviations) serves every curve.
- **Step size** per curve, by dual averaging (Hoffman & Gelman 2014) of the mean acceptance
  probability of its chains to ``target_accept``, restarted after each new ``Sigma``.
- **Divergences**: a transition whose energy error exceeds 1000 (numpyro's threshold) or is
  not finite; it is rejected.

The program is pure JAX (``jax.jit``); ``potential(z, args)`` is the potential energy of one
lane, with ``args`` the curve's arguments (a pytree with a leading curve axis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from bayescale.errors import OptionError
from bayescale.options import counts

__all__ = [
    "HmcSettings",
    "State",
    "adaptation_windows",
    "draw",
    "init_state",
    "laplace_chol",
    "step_size",
    "step_unit",
    "warm_up",
]

#: energy error above which a transition counts as divergent (numpyro's threshold)
MAX_ENERGY_ERROR = 1000.0


@dataclass(frozen=True)
class HmcSettings:
    """Settings that shape the compiled program (hashable: they key its cache).

    Attributes
    ----------
    num_chains, num_warmup, num_samples : int
        Chains per curve, warm-up iterations (step size and dense preconditioner) and draws.
    target_accept : float
        Target mean acceptance probability of the step-size adaptation.
    trajectory : float
        Longest integration time ``T``, in posterior standard deviations (after
        preconditioning); each iteration integrates for ``u T``, ``u ~ U(0, 1)``.
    max_steps : int
        Most leapfrog steps in one iteration (a curve whose step size would need more
        integrates for less time that iteration).
    """

    num_chains: int = 4
    num_warmup: int = 1000
    num_samples: int = 1000
    target_accept: float = 0.8
    trajectory: float = 4.0
    max_steps: int = 64

    def __post_init__(self) -> None:
        counts(self, ("num_chains", "num_samples", "num_warmup", "max_steps"))
        if not 0.0 < float(self.target_accept) < 1.0:
            raise OptionError(
                f"target_accept must be in (0, 1); received {self.target_accept!r}. "
                "For example 0.8."
            )
        if not float(self.trajectory) > 0.0:
            raise OptionError(f"trajectory must be positive; received {self.trajectory!r}.")
        object.__setattr__(self, "target_accept", float(self.target_accept))
        object.__setattr__(self, "trajectory", float(self.trajectory))


def adaptation_windows(num_warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """Stan's warm-up schedule: ``(collect, update)`` booleans, one per warm-up iteration.

    ``collect[i]``: iteration ``i``'s draws enter the current covariance window; ``update[i]``:
    the window ends after iteration ``i`` (a new preconditioner, a restarted step size). A
    fast phase of 15% (at most 75 iterations), slow windows of 25, 50, 100, ... iterations
    (the last stretched to the end of the slow phase) and a fast phase of 10% (at most 50).
    Below 20 iterations there is no slow phase: the Laplace preconditioner is kept.
    """
    collect = np.zeros(num_warmup, bool)
    update = np.zeros(num_warmup, bool)
    if num_warmup < 20:
        return collect, update
    start = min(75, int(0.15 * num_warmup))
    end = num_warmup - min(50, int(0.1 * num_warmup))
    size = 25
    while start < end:
        stop = start + size
        if stop + 2 * size > end:  # the next window would not fit: stretch this one
            stop = end
        collect[start:stop] = True
        update[stop - 1] = True
        start, size = stop, 2 * size
    return collect, update


def _leapfrog_many(value_and_grad: Any, eps: Any, chol: Any, n_steps: Any, state: Any) -> Any:
    """``n_steps[c]`` leapfrog steps of each lane of curve ``c`` (lanes with fewer stop early).

    ``theta = L x`` with unit momentum in ``x``: a position step is ``theta += eps L p``, a
    momentum step ``p -= eps L^T g``. A lane that has finished takes steps of size 0, which
    leave it exactly where it is (no masking of the state). The products with the small
    ``L`` are written elementwise, which XLA fuses (a batched ``dot`` of 4 x 4 matrices costs
    more than the gradient on a CPU).
    """
    import jax
    import jax.numpy as jnp

    z, p, u, g = state
    lower = chol[:, None, :, :]  # (curve, 1, d, d)

    def times_l(v: Any) -> Any:  # L v
        return jnp.sum(lower * v[..., None, :], axis=-1)

    def times_lt(v: Any) -> Any:  # L^T v
        return jnp.sum(lower * v[..., :, None], axis=-2)

    def body(j: Any, carry: Any) -> Any:
        z, p, u, g, gx = carry
        h = jnp.where(j < n_steps, eps, 0.0)[:, None, None]
        p = p - 0.5 * h * gx
        z = z + h * times_l(p)
        u, g = value_and_grad(z)
        gx = times_lt(g)
        p = p - 0.5 * h * gx
        return z, p, u, g, gx

    z, p, u, g, _ = jax.lax.fori_loop(0, jnp.max(n_steps), body, (z, p, u, g, times_lt(g)))
    return z, p, u, g


def _covariance(n: Any, m2: Any) -> Any:
    """Stan's regularised covariance of a window: shrunk towards ``1e-3 I``."""
    import jax.numpy as jnp

    d = m2.shape[-1]
    n = n[:, None, None]
    cov = m2 / jnp.maximum(n - 1.0, 1.0)
    eye = jnp.eye(d, dtype=m2.dtype)
    return (n / (n + 5.0)) * cov + 1e-3 * (5.0 / (n + 5.0)) * eye


def laplace_chol(hessian: Any) -> Any:
    """Cholesky factor of a covariance from Hessians ``(curve, d, d)`` at the modes.

    Eigenvalues are clipped to ``[1, 1e12]`` (a posterior sd of at most 1 in unconstrained
    space, the priors' scale); a non-finite Hessian gives ``0.1 I``.
    """
    import jax.numpy as jnp

    h = 0.5 * (hessian + jnp.swapaxes(hessian, -1, -2))
    ok = jnp.all(jnp.isfinite(h), axis=(-1, -2))
    h = jnp.where(ok[:, None, None], h, jnp.eye(h.shape[-1], dtype=h.dtype) * 100.0)
    w, v = jnp.linalg.eigh(h)
    w = jnp.clip(w, 1.0, 1e12)
    cov = jnp.einsum("cij,cj,ckj->cik", v, 1.0 / w, v)
    return jnp.linalg.cholesky(cov)


class State(NamedTuple):
    """Every curve's sampler state (each field has a leading curve axis; sortable by curve)."""

    z: Any  # (curve, chain, d) positions
    u: Any  # (curve, chain) potential energies
    g: Any  # (curve, chain, d) gradients
    da: Any  # dual averaging: (log eps, log eps bar, H bar, mu, t), each (curve,)
    chol: Any  # (curve, d, d) preconditioner
    welford: Any  # (count (curve,), mean (curve, d), M2 (curve, d, d)) of the open window


def _value_and_grad(potential: Any, args: Any) -> Any:
    """Batched ``z (curve, chain, d) -> (U, dU/dz)``; non-finite values become inf and 0."""
    import jax
    import jax.numpy as jnp

    def lane(z: Any, a: Any) -> Any:
        u, g = jax.value_and_grad(potential)(z, a)
        return jnp.where(jnp.isfinite(u), u, jnp.inf), jnp.where(jnp.isfinite(g), g, 0.0)

    batched = jax.vmap(jax.vmap(lane, in_axes=(0, None)), in_axes=(0, 0))
    return lambda z: batched(z, args)


def _da_init(eps: Any) -> Any:
    import jax.numpy as jnp

    zero = jnp.zeros_like(eps)
    return (jnp.log(eps), zero, zero, jnp.log(10.0 * eps), zero)


def _da_update(da: Any, accept: Any, target: float) -> Any:
    """One dual-averaging update of every curve's log step size (Hoffman & Gelman 2014)."""
    import jax.numpy as jnp

    log_eps, log_bar, h_bar, mu, t = da
    t = t + 1.0
    h_bar = (1.0 - 1.0 / (t + 10.0)) * h_bar + (target - accept) / (t + 10.0)
    log_eps = mu - jnp.sqrt(t) / 0.05 * h_bar
    w = t**-0.75
    return (log_eps, w * log_eps + (1.0 - w) * log_bar, h_bar, mu, t)


def init_state(potential: Any, z0: Any, chol0: Any, args: Any, eps0: float = 0.5) -> State:
    """The state before warm-up: chains at ``z0``, preconditioner ``chol0``, step ``eps0``."""
    import jax.numpy as jnp

    n_curves, _, d = z0.shape
    u, g = _value_and_grad(potential, args)(z0)
    zeros = (
        jnp.zeros(n_curves, z0.dtype),
        jnp.zeros((n_curves, d), z0.dtype),
        jnp.zeros((n_curves, d, d), z0.dtype),
    )
    eps = jnp.full(n_curves, eps0, z0.dtype)
    return State(z0, u, g, _da_init(eps), chol0, zeros)


def _transition(
    vg: Any,
    settings: HmcSettings,
    i: Any,
    keys: Any,
    jitter_key: Any,
    state: State,
    eps: Any,
    unit: Any = None,
) -> tuple[State, tuple[Any, ...]]:
    """Iteration ``i`` of every lane: momentum, jittered trajectory, Metropolis correction.

    Each curve takes ``ceil(u T / unit)`` leapfrog steps of size ``eps`` (``unit``: ``eps``
    unless given; the number of steps never depends on the state).
    """
    import jax
    import jax.numpy as jnp

    z, u, g = state.z, state.u, state.g
    per_lane = lambda f: jax.vmap(jax.vmap(f))  # noqa: E731
    lane_keys = per_lane(lambda k: jax.random.split(jax.random.fold_in(k, i)))(keys)
    p = per_lane(lambda k: jax.random.normal(k[0], z.shape[-1:], z.dtype))(lane_keys)
    coin = per_lane(lambda k: jax.random.uniform(k[1], (), z.dtype))(lane_keys)
    frac = jax.random.uniform(jax.random.fold_in(jitter_key, i), (), z.dtype, 1e-3, 1.0)
    unit = eps if unit is None else unit
    n_steps = jnp.clip(jnp.ceil(frac * settings.trajectory / unit), 1, settings.max_steps)
    n_steps = n_steps.astype(jnp.int32)
    z1, p1, u1, g1 = _leapfrog_many(vg, eps, state.chol, n_steps, (z, p, u, g))
    h0 = u + 0.5 * jnp.sum(p * p, axis=-1)
    h1 = u1 + 0.5 * jnp.sum(p1 * p1, axis=-1)
    delta = h1 - h0
    diverging = ~(delta < MAX_ENERGY_ERROR)
    accept = jnp.where(jnp.isfinite(delta), jnp.exp(jnp.minimum(-delta, 0.0)), 0.0)
    take = coin < accept
    state = state._replace(
        z=jnp.where(take[..., None], z1, z),
        u=jnp.where(take, u1, u),
        g=jnp.where(take[..., None], g1, g),
    )
    energy = jnp.where(take, h1, h0)
    steps = jnp.broadcast_to(n_steps[:, None], u.shape)
    return state, (diverging, steps, accept, energy, state.u)


def warm_up(
    potential: Any,
    settings: HmcSettings,
    keys: Any,
    jitter_key: Any,
    state: State,
    args: Any,
    start: int,
    stop: int,
) -> State:
    """Warm-up iterations ``start`` to ``stop`` (ints or traced scalars) of every lane.

    Step size by dual averaging of each curve's mean acceptance; dense preconditioner from
    the windows of `adaptation_windows`. Splitting the warm-up at any iteration gives the
    same result as running it at once.
    """
    import jax
    import jax.numpy as jnp

    vg = _value_and_grad(potential, args)
    collect_np, update_np = adaptation_windows(settings.num_warmup)
    collect, update = jnp.asarray(collect_np), jnp.asarray(update_np)

    def body(i: Any, state: State) -> State:
        # the trajectory's steps are counted in the dual average of the step size, not in the
        # step size being tried: that one jumps from one iteration to the next, and the
        # smallest of a block's curves would set the whole block's steps
        eps = jnp.exp(state.da[0])
        state, stats = _transition(vg, settings, i, keys, jitter_key, state, eps, step_unit(state))
        da = _da_update(state.da, jnp.mean(stats[2], axis=1), settings.target_accept)
        # Welford update of the open window with this iteration's positions of every chain
        n, mean, m2 = state.welford
        z = state.z
        k = z.shape[1]
        n_new = n + k
        batch_mean = jnp.mean(z, axis=1)
        delta = batch_mean - mean
        centred = z - batch_mean[:, None, :]
        m2_new = (
            m2
            + jnp.einsum("cki,ckj->cij", centred, centred)
            + jnp.einsum("ci,cj->cij", delta, delta) * (n * k / n_new)[:, None, None]
        )
        on = collect[i]
        n, mean, m2 = (
            jnp.where(on, n_new, n),
            jnp.where(on, mean + delta * (k / n_new)[:, None], mean),
            jnp.where(on, m2_new, m2),
        )
        state = state._replace(da=da, welford=(n, mean, m2))
        # at a window's end (a few iterations of the warm-up: a branch, not a select, so the
        # others skip the factorisation): a new preconditioner (kept if not finite), a
        # restarted step size and an empty window
        return jax.lax.cond(update[i], _new_window, lambda s: s, state)

    return jax.lax.fori_loop(start, stop, body, state)


def _new_window(state: State) -> State:
    """The state at a window's end: its covariance as the preconditioner, step size restarted."""
    import jax.numpy as jnp

    n, _, m2 = state.welford
    new_chol = jnp.linalg.cholesky(_covariance(n, m2))
    good = jnp.all(jnp.isfinite(new_chol), axis=(-1, -2))[:, None, None]
    return state._replace(
        chol=jnp.where(good, new_chol, state.chol),
        da=_da_init(jnp.exp(state.da[1])),
        welford=tuple(jnp.zeros_like(w) for w in state.welford),
    )


def step_unit(state: State) -> Any:
    """Each curve's step size that counts the warm-up's leapfrog steps: the dual average.

    (The step size being tried before the first update of a window, which has no average.)
    """
    import jax.numpy as jnp

    log_eps, log_bar, _, _, t = state.da
    return jnp.exp(jnp.where(t > 0, log_bar, log_eps))


def step_size(state: State, settings: HmcSettings) -> Any:
    """Each curve's step size after warm-up (the dual-averaged one; the first without)."""
    import jax.numpy as jnp

    return jnp.exp(state.da[1]) if settings.num_warmup else jnp.exp(state.da[0])


def draw(
    potential: Any,
    settings: HmcSettings,
    keys: Any,
    jitter_key: Any,
    state: State,
    args: Any,
    first: Any,
    size: int,
) -> tuple[State, Any, dict[str, Any]]:
    """Iterations ``first`` (an int or a traced scalar) to ``first + size`` after the warm-up.

    Pure JAX. Returns the state, the draws ``(curve, chain, size, d)`` and the statistics
    ``diverging``, ``n_steps``, ``acceptance_rate``, ``energy``, ``lp`` (minus the potential)
    and ``step_size``, ``(curve, chain, size)``. Splitting the draws at any iteration gives
    the same draws.
    """
    import jax
    import jax.numpy as jnp

    vg = _value_and_grad(potential, args)
    eps = step_size(state, settings)
    n_curves, n_chains, d = state.z.shape
    shape = (n_curves, n_chains, size)
    dtype = state.z.dtype

    def body(j: Any, carry: Any) -> Any:
        state, out = carry
        i = first + j
        state, stats = _transition(vg, settings, i, keys, jitter_key, state, eps)
        rows = (state.z, *stats)
        out = tuple(o.at[:, :, j].set(r.astype(o.dtype)) for o, r in zip(out, rows, strict=True))
        return state, out

    out = (
        jnp.zeros((*shape, d), dtype),
        jnp.zeros(shape, bool),
        jnp.zeros(shape, jnp.int32),
        jnp.zeros(shape, dtype),
        jnp.zeros(shape, dtype),
        jnp.zeros(shape, dtype),
    )
    state, out = jax.lax.fori_loop(0, size, body, (state, out))
    draws, diverging, steps, accept, energy, potential_energy = out
    return (
        state,
        draws,
        {
            "diverging": diverging,
            "n_steps": steps,
            "acceptance_rate": accept,
            "energy": energy,
            "lp": -potential_energy,
            "step_size": jnp.broadcast_to(eps[:, None, None], shape),
        },
    )

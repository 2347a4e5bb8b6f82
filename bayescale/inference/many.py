"""Independent fits of many curves in one compiled, vectorised sampler: ``fit_many``.

`bayescale.inference.fit` fits one law to one curve. A table with a ``group`` column holds many
curves
(one per architecture, task or data mixture); ``fit_many(data, law)`` fits the law to each
group **independently** (no pooling: each curve gets exactly the model and the priors that
``fit`` would give it alone) but in compiled programs over blocks of curves instead of a
Python loop:

- every curve's runs are padded to the same length (the longest curve's), with an observation
  mask so that padding rows add nothing to the likelihood; the data-dependent inputs of the
  model (log inputs, their centre, the priors' hyper-parameters) are per-curve arrays;
- the sampler is `bayescale.inference.vhmc`: jittered fixed-length HMC written on batched arrays,
  with a dense preconditioner and a step size per curve (vectorised NUTS is slower than a loop
  of `bayescale.fit` on a CPU: every iteration waits for the deepest tree). It runs as a
  kernel (`_Many`) of the sampler driver, `bayescale.inference.driver`, as ``fit``'s NUTS
  does: the driver owns the chunks of iterations, the progress bar, Ctrl-C and the keys;
- every compiled call runs `BLOCK` curves. A pilot program (the chains' starts and the
  first `PILOT` warm-up iterations) runs the curves in their order; then, for each chunk of
  the warm-up (every `RESORT` iterations) and of the draws, the curves are sorted by their
  current step size and run in blocks of similar curves, so that a hard curve (a small step
  size, many leapfrog steps) slows only its own block;
- curves are dispatched in chunks of ``chunk_size`` (one chunk by default): in this process on
  JAX's default device (a GPU when there is one), as the lanes of one run of the driver, or on
  the workers of a Dask ``client``, each chunk a run of the driver there.

Contracts
---------
- **Same seed, same draws.** Curve ``i`` (its position in the sorted list of groups) gets the
  key ``fold_in(PRNGKey(seed), i)``, split into ``num_chains`` chain keys; the trajectory
  jitter comes from ``seed`` alone (`bayescale.inference.driver.curve_keys` and
  `bayescale.inference.driver.jitter_key`). Each lane's arithmetic depends only on its own
  curve, and every compiled call has the same shape (`BLOCK` curves), so the draws are
  bitwise the same whatever the chunking, the order of the other curves, or the machine
  (in this process or on a Dask cluster).
- **Inputs are arguments** of the compiled programs, which are cached per (model, settings)
  in a bounded LRU cache.
- **Starts.** Inside the pilot program each chain takes the best (lowest potential) of
  `NUM_CANDIDATES` points (`bayescale.inference.driver.best_candidate`) drawn within a unit
  box (unconstrained space) around the priors' typical values (for the power law's ridge
  coordinates, with the level at the centre set to the geometric mean of the curve's losses,
  which the runs pin down) and runs `MODE_STEPS` Adam steps down the potential (a fixed
  count, so that the curves stay in lock step). The
  lowest of the chains' modes gives the curve's Laplace covariance (the first
  preconditioner), and the chains start at Laplace draws around it (clipped at 2 sd): the
  vectorised counterpart of ``fit``'s default MAP start (a SciPy L-BFGS-B search per curve,
  with Laplace draws).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayescale import options as opt
from bayescale.errors import (
    ConvergenceWarning,
    DataError,
    OptionError,
    OptionTypeError,
    warn,
)
from bayescale.inference import vhmc
from bayescale.inference.diagnostics import batch_diagnostics, interval_probs
from bayescale.inference.driver import (
    best_candidate,
    curve_keys,
    jitter_key,
    progress_bar,
    progress_default,
    run,
    schedule,
)
from bayescale.inference.fit import Fit, make_fit
from bayescale.inference.sampling import (
    pointwise_draws,
    start_from_prior,
)
from bayescale.inference.settings import FitSettings, fit_settings
from bayescale.inference.vhmc import HmcSettings
from bayescale.io.data import ScalingData, from_frame
from bayescale.model.build import build_model, model_inputs
from bayescale.model.laws import Law, declaration, get_law
from bayescale.model.likelihoods import Likelihood, get_likelihood
from bayescale.model.misfit import (
    MISFIT_SITES,
    Misfit,
    draw_indicator,
    law_jacobian,
    orthogonal,
    resolve_misfit,
)
from bayescale.model.priors import Prior, Priors, resolve_priors

__all__ = ["ManyFits", "fit_many", "run_chunk"]


# ------------------------------------------------------------------------------ the engine


#: Adam steps and step size of the search for each chain's start (a posterior mode)
MODE_STEPS, MODE_RATE = 300, 0.05
#: jittered points around the priors' typical values from which each chain's search starts
NUM_CANDIDATES = 32
#: curves per compiled call (after the first warm-up chunk, blocks of curves of similar step size);
#: chosen with benchmarks/many_curves.py (figures in the how-to *Many groups*)
BLOCK = 128
#: warm-up iterations before the first sorting of the curves by step size (enough for the
#: dual averaging to find each curve's scale from its start of 0.5), and between two sortings
PILOT, RESORT = 25, 50


def _mode(potential: Any, z: Any) -> Any:
    """The lowest point of ``potential`` seen in `MODE_STEPS` Adam steps from ``z``.

    A fixed number of steps (no convergence test), so that curves in lock step take the same
    time; non-finite values and gradients are ignored.
    """
    import jax
    import jax.numpy as jnp

    def value(z: Any) -> Any:
        e = potential(z)
        return jnp.where(jnp.isfinite(e), e, jnp.inf)

    grad = jax.value_and_grad(value)

    def step(i: Any, carry: Any) -> Any:
        z, m, v, best, best_e = carry
        e, g = grad(z)
        g = jnp.where(jnp.isfinite(g), g, 0.0)
        best, best_e = jnp.where(e < best_e, z, best), jnp.minimum(e, best_e)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        t = (i + 1).astype(z.dtype)
        z = z - MODE_RATE * (m / (1 - 0.9**t)) / (jnp.sqrt(v / (1 - 0.999**t)) + 1e-8)
        return z, m, v, best, best_e

    zeros = jnp.zeros_like(z)
    init = (z, zeros, zeros, z, value(z))
    return jax.lax.fori_loop(0, MODE_STEPS, step, init)[3]


def _coordinates(model: Any, starts: Any, args: Any) -> Any:
    """``mapped(y, a) -> (sites, log |dz/dy|)`` for the sampler's flat vector ``y`` of a lane.

    ``y`` is numpyro's flattened unconstrained vector (log Jacobian 0), or the coordinates of
    the model's `bayescale.model.geometry.RidgeMap` where it has one. Shapes come from the first
    lane.
    """
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import unconstrain_fn

    first = jax.tree_util.tree_map(lambda a: a[0, 0], starts)
    args0 = jax.tree_util.tree_map(lambda a: a[0], args)
    sites = unconstrain_fn(model, args0, {}, first)
    unravel = ravel_pytree(sites)[1]
    ridge = getattr(model, "ridge", None)
    if ridge is None:
        return lambda y, a: (unravel(y), jnp.zeros((), y.dtype))
    where = ridge.positions(sites)

    def mapped(y: Any, a: Any) -> tuple[Any, Any]:
        z, log_det = ridge.forward(y, a, where)
        return unravel(z), log_det

    return mapped


def _search_start(model: Any, start: Any, a: Any) -> Any:
    """The sampler's flat vector ``y`` of one lane's search start (sample-site values).

    In the ridge map's coordinates the level at the centre starts at 0, the geometric mean
    of the curve's fitted losses, which the runs pin down to a fraction of a percent: mapped
    from the priors' typical values it lay 300 to 500 units away (posterior sd about 5),
    out of reach of the Adam search, and the chains spent the first half of the warm-up
    walking in, with tiny step sizes in the curves that never arrived.
    """
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import unconstrain_fn

    sites = unconstrain_fn(model, a, {}, start)
    z = ravel_pytree(sites)[0]
    ridge = getattr(model, "ridge", None)
    if ridge is None:
        return z
    where = ridge.positions(sites)
    y = ridge.to_y(z, a, where)
    return y.at[where["amplitude"]].set(0.0) if "amplitude" in where else y


def _potential(model: Any, mapped: Any) -> Any:
    """Potential energy of one lane in the sampler's coordinates (minus the log Jacobian)."""
    from numpyro.infer.util import potential_energy

    def energy(y: Any, a: Any) -> Any:
        sites, log_det = mapped(y, a)
        return potential_energy(model, a, {}, sites) - log_det

    return energy


@functools.lru_cache(maxsize=8)
def _pilot_program(model: Any, settings: HmcSettings, num_candidates: int) -> Any:
    """Compiled starts and first warm-up chunk: ``run(keys, starts, args, jitter_key)``.

    Each chain searches a mode (`_mode` from the best of ``num_candidates`` jittered points
    around its prior start); each curve's best mode gives the Laplace preconditioner, and
    its chains start at Laplace draws (clipped at 2 sd) around it; then the warm-up's first
    `PILOT` iterations (at most), which set each curve's step size. Returns the `vhmc.State`.
    One program: compiled apart, the starts and the warm-up round differently at the last bit,
    which the trajectories amplify into other draws.
    """
    import jax
    import jax.numpy as jnp

    def run(keys: Any, starts: Any, args: Any, jitter: Any) -> Any:
        potential = _potential(model, _coordinates(model, starts, args))

        def flat(start: Any, a: Any) -> Any:
            return _search_start(model, start, a)

        def lane_mode(key: Any, z: Any, a: Any) -> Any:
            k_cand = jax.random.fold_in(key, 1 << 30)
            best = best_candidate(lambda c: potential(c, a), z, k_cand, num_candidates)
            return _mode(lambda c: potential(c, a), best)

        per_lane = lambda f: jax.vmap(jax.vmap(f, (0, None)), (0, 0))  # noqa: E731
        z_prior = per_lane(flat)(starts, args)
        modes = jax.vmap(jax.vmap(lane_mode, (0, 0, None)), (0, 0, 0))(keys, z_prior, args)
        energy = per_lane(potential)(modes, args)
        best_chain = jnp.argmin(jnp.where(jnp.isfinite(energy), energy, jnp.inf), axis=1)
        best = modes[jnp.arange(modes.shape[0]), best_chain]
        chol0 = vhmc.laplace_chol(jax.vmap(jax.hessian(potential))(best, args))
        d = best.shape[-1]
        normal = lambda k: jax.random.normal(jax.random.fold_in(k, (1 << 30) + 1), (d,))  # noqa: E731
        spread = jnp.clip(jax.vmap(jax.vmap(normal))(keys), -2.0, 2.0)
        z0 = best[:, None, :] + jnp.einsum("cij,ckj->cki", chol0, spread)
        state = vhmc.init_state(potential, z0, chol0, args)
        pilot = min(PILOT, settings.num_warmup)
        return vhmc.warm_up(potential, settings, keys, jitter, state, args, 0, pilot)

    return jax.jit(run)


@functools.lru_cache(maxsize=8)
def _mode_program(model: Any) -> Any:
    """Compiled exact-law modes: ``run(starts, args) -> sites`` at each lane's mode.

    `_mode` from each curve's prior start (one chain), the sites in the model's units: the
    anchors of the curves' misfits (`bayescale.model.misfit.orthogonal`).
    """
    import jax
    from numpyro.infer.util import constrain_fn

    def run(starts: Any, args: Any) -> Any:
        mapped = _coordinates(model, starts, args)
        potential = _potential(model, mapped)

        def lane(start: Any, a: Any) -> Any:
            start = jax.tree_util.tree_map(lambda v: v[0], start)
            y = _mode(lambda c: potential(c, a), _search_start(model, start, a))
            return constrain_fn(model, a, {}, mapped(y, a)[0], return_deterministic=True)

        return jax.vmap(lane)(starts, args)

    return jax.jit(run)


def _anchors(
    law: Law,
    families: tuple[tuple[str, str], ...],
    noise: Likelihood,
    curves: list[tuple[Any, Priors]],
    args: tuple[Any, ...],
) -> list[dict[str, float] | None]:
    """Each curve's exact-law mode (its misfit's anchor), in blocks of `BLOCK` curves.

    Fixed blocks (the last padded with copies), as the sampler's, so that a curve's anchor
    does not depend on how many curves are fitted with it.
    """
    model = build_model(_same_law(law), families, noise, None)
    exact_args = (*args[:5], None)
    starts = [start_from_prior(law, pri, 1) for _, pri in curves]
    starts_ = {k: np.stack([s[k] for s in starts]) for k in starts[0]}
    n = len(curves)
    program = _mode_program(model)
    out: list[dict[str, float] | None] = []
    for first in range(0, n, BLOCK):
        idx = np.minimum(np.arange(first, first + BLOCK), n - 1)
        sites = program(_take(starts_, idx), _take(exact_args, idx))
        for j in range(min(BLOCK, n - first)):
            mode = {k: float(sites[k][j]) for k in law.param_names}
            out.append(mode if all(np.isfinite(list(mode.values()))) else None)
    return out


@functools.lru_cache(maxsize=8)
def _warm_program(model: Any, settings: HmcSettings) -> Any:
    """Compiled warm-up: ``run(keys, starts, state, args, jitter_key, first, stop) -> state``.

    Iterations ``first`` to ``stop`` of the warm-up (run-time arguments: one compilation
    serves every chunk).
    """
    import jax

    def run(
        keys: Any, starts: Any, state: Any, args: Any, jitter: Any, first: Any, stop: Any
    ) -> Any:
        potential = _potential(model, _coordinates(model, starts, args))
        return vhmc.warm_up(potential, settings, keys, jitter, state, args, first, stop)

    return jax.jit(run)


@functools.lru_cache(maxsize=8)
def _draw_program(model: Any, settings: HmcSettings, size: int) -> Any:
    """Compiled draws: ``run(keys, starts, state, args, jitter_key, first)``.

    Iterations ``first`` to ``first + size`` after the warm-up (``size`` is compiled in: a
    loop of a run-time length rounds the potential differently at the last bit); returns the
    state, every sample and deterministic site ``(curve, chain, size, ...)`` and the `STATS`
    with each curve's ``step_size``.
    """
    import jax
    from numpyro.infer.util import constrain_fn

    def run(keys: Any, starts: Any, state: Any, args: Any, jitter: Any, first: Any) -> Any:
        mapped = _coordinates(model, starts, args)
        potential = _potential(model, mapped)
        state, draws, stats = vhmc.draw(potential, settings, keys, jitter, state, args, first, size)

        def sites(y: Any, a: Any) -> Any:
            z, log_det = mapped(y, a)
            return constrain_fn(model, a, {}, z, return_deterministic=True), log_det

        per_draw = jax.vmap(lambda y, a: jax.vmap(jax.vmap(sites, (0, None)), (0, None))(y, a))
        out, log_det = per_draw(draws, args)
        # the model's log density, not the sampler's (which has the log Jacobian in it)
        return state, out, {**stats, "lp": stats["lp"] - log_det}

    return jax.jit(run)


#: a chunk's arguments travel as numpy arrays; the law travels by value (cloudpickle) to Dask
#: workers, where this cache maps it back to one object per (name, options, declaration), so
#: that every chunk on a worker reuses one compiled program
_WORKER_LAWS: dict[str, Law] = {}


def _same_law(law: Law) -> Law:
    key = json.dumps([law.name, dict(law.options), declaration(law)], default=str)
    return _WORKER_LAWS.setdefault(key, law)


def run_chunk(
    law: Law,
    families: tuple[tuple[str, str], ...],
    noise: Likelihood,
    settings: HmcSettings,
    keys: np.ndarray,
    jitter_key: np.ndarray,
    starts: Mapping[str, np.ndarray],
    args: tuple[Any, ...],
    misfit: Misfit | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run the vectorised sampler on one chunk of curves on a Dask worker (no progress bar).

    Parameters
    ----------
    law, families, noise, settings
        What shapes the compiled program: the law, the priors' families, the likelihood and
        the sampler's settings (and ``misfit``, the misfit's settings or None).
    keys : ndarray
        ``(curve, chain, 2)`` chain keys (`bayescale.inference.driver.curve_keys`).
    jitter_key : ndarray
        The key of the trajectory jitter (`bayescale.inference.driver.jitter_key`), the same
        for every chunk.
    starts : mapping
        Sample site -> ``(curve, chain, ...)`` starting values (constrained).
    args : tuple
        The model's arguments with a leading curve axis (padded runs, mask, hyper-parameters).
    misfit : Misfit, optional
        The misfit part of each curve's model (`bayescale.model.build.build_model`).

    Returns
    -------
    sites, stats : dict
        Every site, and the `STATS` with ``step_size``, ``(curve, chain, draw, ...)``.
    """
    model = build_model(_same_law(law), families, noise, misfit)
    kernel = _Many(model, settings, keys, jitter_key, starts, args, [np.arange(len(keys))])
    return run(kernel, progress=False, description="")


class _Many:
    """The vectorised HMC (`bayescale.inference.vhmc`) as a kernel of the driver.

    One lane per chunk of curves, one lane at a time (each already fills the machine). Every
    compiled call runs `BLOCK` curves (the last block padded with copies), whatever the number
    of curves or the chunking: the same program on the same shapes, so that a curve's draws
    are bitwise the same in any chunk (each lane's arithmetic depends only on its own curve).
    The starts run the curves in their order; then each chunk of iterations runs them sorted
    by their step size, in blocks of similar curves (lock step costs each block its smallest
    step size, and step sizes move a lot while the preconditioner adapts, so sorting once is
    not enough: the design note *fit_many* has the figures).
    """

    def __init__(
        self,
        model: Any,
        settings: HmcSettings,
        keys: np.ndarray,
        jitter: np.ndarray,
        starts: Mapping[str, np.ndarray],
        args: tuple[Any, ...],
        parts: list[np.ndarray],
    ) -> None:
        self.settings, self.jitter = settings, jitter
        self.parts = [(keys[i], _take(dict(starts), i), _take(args, i)) for i in parts]
        self.model = model
        self.pilot = _pilot_program(model, settings, NUM_CANDIDATES)
        self.warm = _warm_program(model, settings)
        self.lanes, self.workers = len(parts), 1
        n, w = len(keys), settings.num_warmup
        self.total = n * settings.num_chains * (w + settings.num_samples)
        self.chunks = schedule(w, settings.num_samples, first=PILOT, every=RESORT)

    def init(self, lane: int, tick: Any) -> Any:
        return None  # the starts run with the first chunk of the warm-up (`_pilot_program`)

    def advance(self, lane: int, state: Any, first: int, stop: int, tick: Any) -> tuple[Any, Any]:
        keys, starts, args = self.parts[lane]
        chains, num_warmup = self.settings.num_chains, self.settings.num_warmup
        if state is None:  # the starts, in the curves' order, and the pilot chunk
            pilot = min(PILOT, num_warmup)
            state = _in_blocks(
                self.pilot, np.arange(len(keys)), (keys, starts, args), (self.jitter,),
                pilot * chains, tick,
            )  # fmt: skip
            if first < num_warmup:
                return state, None
        warm = first < num_warmup
        step = vhmc.step_unit(state) if warm else vhmc.step_size(state, self.settings)
        order = np.argsort(np.asarray(step), kind="stable")
        batched, work = (keys, starts, state, args), (stop - first) * chains
        if warm:
            span = (self.jitter, np.int32(first), np.int32(stop))
            return _in_blocks(self.warm, order, batched, span, work, tick), None
        draw = _draw_program(self.model, self.settings, stop - first)
        state, sites, stats = _in_blocks(
            draw, order, batched, (self.jitter, np.int32(first)), work, tick
        )
        return state, (sites, stats)

    def finish(
        self, lane: int, kept: list[Any]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return tuple(  # type: ignore[return-value]
            {k: np.concatenate([c[part][k] for c in kept], axis=2) for k in kept[0][part]}
            for part in (0, 1)
        )


def _in_blocks(
    program: Any,
    order: np.ndarray,
    batched: tuple[Any, ...],
    extra: tuple[Any, ...] = (),
    work: int = 0,
    tick: Any = None,
) -> Any:
    """``program(*batched, *extra)`` over the curves, `BLOCK` at a time.

    Blocks take the curves in ``order``; the last is padded with copies of its last curve, so
    that every call has the same shape. ``batched`` holds pytrees with a leading curve axis;
    ``extra`` goes to every call as it is; ``tick`` is called after each call with ``work``
    times its curves. Returns the results in curve order (padding dropped).
    """
    parts = []
    for first in range(0, len(order), BLOCK):
        rows = order[first : first + BLOCK]
        index = np.concatenate([rows, np.full(BLOCK - len(rows), rows[-1])])
        parts.append((rows, program(*_take(batched, index), *extra)))
        if tick is not None:
            tick(work * len(rows))
    return _gather(parts, len(order))


def _gather(parts: list[tuple[np.ndarray, Any]], n: int) -> Any:
    """One pytree of ``n`` curves from the blocks' results (padding dropped, curve order)."""
    import jax

    rows = np.concatenate([r for r, _ in parts])
    back = np.argsort(rows, kind="stable")
    return jax.tree_util.tree_map(
        lambda *leaves: np.concatenate(
            [np.asarray(leaf)[: len(r)] for (r, _), leaf in zip(parts, leaves, strict=True)]
        )[back],
        *[tree for _, tree in parts],
    )


# ------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class ManyFits:
    """Independent fits of one law to many curves (see `fit_many`).

    Attributes
    ----------
    tree : xarray.DataTree
        ``posterior`` (every sample and deterministic site over ``group, chain, draw``),
        ``sample_stats`` (HMC statistics, same dimensions) and ``settings`` in its
        attributes.
    law : Law
        The law fitted to every curve.
    priors : mapping
        Group -> the `Priors` of that curve (the defaults are computed from each curve's own
        runs, as `bayescale.inference.fit` does, with the user's overrides laid over them).
    data : ScalingData
        All runs, with their ``group`` column.
    settings : FitSettings
        The settings every curve shares (`bayescale.inference.settings`; no centre or priors:
        each curve has its own), with each curve's misfit coordinates in
        ``group_misfit_coords``.
    """

    tree: Any
    law: Law
    priors: Mapping[str, Priors]
    data: ScalingData
    settings: FitSettings = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.settings is None:
            object.__setattr__(self, "settings", FitSettings.from_attrs(self.tree.attrs))

    @property
    def groups(self) -> tuple[str, ...]:
        """The groups, sorted (their positions index the per-curve seeds)."""
        return tuple(str(g) for g in self.tree["posterior"]["group"].values)

    @property
    def posterior(self) -> Any:
        """The draws as an `xarray.Dataset` over ``group, chain, draw``."""
        return self.tree["posterior"].to_dataset()

    @property
    def misfit(self) -> Misfit | None:
        """The misfit model's settings (every curve's), or None for the exact law."""
        return self.settings.misfit

    @property
    def param_names(self) -> list[str]:
        """Reported parameters: the law's, ``sigma`` and the misfit's scales."""
        scales = [k for k in MISFIT_SITES if k in self.tree["posterior"].data_vars]
        return [*self.law.param_names, "sigma", *scales]

    def __len__(self) -> int:
        return len(self.groups)

    def __iter__(self) -> Iterator[str]:
        return iter(self.groups)

    def __contains__(self, group: object) -> bool:
        return str(group) in self.groups

    def __getitem__(self, group: object) -> Fit:
        """The fit of one group: a `bayescale.Fit` that every verb accepts."""
        name = str(group)
        if name not in self.groups:
            shown = ", ".join(repr(g) for g in self.groups[:8])
            more = f", ... ({len(self.groups) - 8} more)" if len(self.groups) > 8 else ""
            raise KeyError(f"no group {group!r}; groups are {shown}{more}.")
        config = self.settings
        noise = get_likelihood(config.likelihood, **config.likelihood_options)
        priors = self.priors[name]
        table = self.data.table
        data = ScalingData(
            table=table[table["group"] == name].reset_index(drop=True),
            source=f"{self.data.source} (group {name!r})",
        )
        post = self.tree["posterior"].to_dataset().sel(group=name)
        samples = {k: np.asarray(post[k].values) for k in post.data_vars}
        index = self.groups.index(name)
        seed = config.seed
        samples = draw_indicator(samples, seed, index)  # Misfit(p_exact > 0): one stream a curve
        families = tuple((k, p.family) for k, p in priors.items())
        spec = self.misfit
        model = build_model(self.law, families, noise, spec)
        coords = None if spec is None else config.group_misfit_coords[name]
        inputs = model_inputs(self.law, data, priors, misfit=spec, coords=coords)
        one = config.replace(
            centre={v: float(c) for v, c in inputs.centre.items()},
            priors=priors,
            data_source=data.source,
            group=name,
            curve_index=index,
            misfit_coords=coords,
            group_misfit_coords=None,
            chunk_size=None,
        )
        loglik, rep = pointwise_draws(model, inputs, samples, noise, seed)
        stats = self.tree["sample_stats"].to_dataset().sel(group=name, drop=True)
        return make_fit(
            one, self.law, data, samples, None, loglik, posterior_predictive=rep, sample_stats=stats
        )

    def summary(self, ci_prob: float = 0.9) -> pd.DataFrame:
        """One row per group and parameter: mean, sd, median, interval, ESS and r_hat.

        Parameters
        ----------
        ci_prob : float, default 0.9
            Probability mass of the equal-tailed interval (columns ``q5`` and ``q95`` by
            default).

        Returns
        -------
        DataFrame
            Indexed by ``(group, parameter)``; the columns of `bayescale.Fit.summary`.
        """
        lo, hi = interval_probs(ci_prob)
        post = self.posterior
        diag = self._diagnostics_by_parameter
        frames = []
        for k in self.param_names:
            v = post[k].values.astype(np.float64).reshape(len(self), -1)
            frame = pd.DataFrame(
                {
                    "mean": v.mean(axis=1),
                    "sd": v.std(axis=1, ddof=1),
                    "median": np.median(v, axis=1),
                    f"q{lo * 100:.10g}": np.quantile(v, lo, axis=1),
                    f"q{hi * 100:.10g}": np.quantile(v, hi, axis=1),
                    **{c: diag[c][k] for c in ("ess_bulk", "ess_tail", "r_hat")},
                },
                index=pd.Index(self.groups, name="group"),
            )
            frame["parameter"] = k
            frames.append(frame)
        table = pd.concat(frames).set_index("parameter", append=True)
        order = {k: i for i, k in enumerate(self.param_names)}
        return table.sort_index(level=1, key=lambda s: s.map(order)).sort_index(
            level=0, sort_remaining=False, kind="stable"
        )

    @functools.cached_property
    def _diagnostics_by_parameter(self) -> dict[str, dict[str, np.ndarray]]:
        """Bulk and tail ESS and r_hat of every reported parameter, one value per group.

        `bayescale.inference.diagnostics.batch_diagnostics`: arviz-stats' numbers, over all groups
        at
        once.
        """
        post = self.posterior
        out: dict[str, dict[str, np.ndarray]] = {"r_hat": {}, "ess_bulk": {}, "ess_tail": {}}
        for k in self.param_names:
            values = post[k].transpose("group", "chain", "draw").values
            for name, v in batch_diagnostics(values).items():
                out[name][k] = v
        return out

    def diagnostics(
        self,
        *,
        max_rhat: float = 1.01,
        min_ess_per_chain: float = 100.0,
        max_divergences: int = 0,
    ) -> pd.DataFrame:
        """One row per group: divergences, the largest r_hat, the smallest ESS, and a verdict.

        Parameters
        ----------
        max_rhat, min_ess_per_chain, max_divergences
            The thresholds of `bayescale.inference.diagnostics.convergence_problems` (same
            defaults).

        Returns
        -------
        DataFrame
            Indexed by ``group``: ``divergences``, ``max_r_hat``, ``min_ess_bulk``,
            ``min_ess_tail`` and ``ok`` (no threshold crossed; a NaN r_hat or ESS, from a
            chain that never moved, is a failure).
        """
        diag = self._diagnostics_by_parameter
        div = self.tree["sample_stats"]["diverging"].values.reshape(len(self), -1).sum(axis=1)
        names = self.param_names
        rhat = np.stack([diag["r_hat"][k] for k in names], axis=1)
        bulk = np.stack([diag["ess_bulk"][k] for k in names], axis=1)
        tail = np.stack([diag["ess_tail"][k] for k in names], axis=1)
        n_chains = self.posterior.sizes["chain"]
        floor = min_ess_per_chain * n_chains
        # NaN counts as a failure: np.max/np.min propagate it and the comparisons are negated
        table = pd.DataFrame(
            {
                "divergences": div.astype(int),
                "max_r_hat": np.max(rhat, axis=1),
                "min_ess_bulk": np.min(bulk, axis=1),
                "min_ess_tail": np.min(tail, axis=1),
            },
            index=pd.Index(self.groups, name="group"),
        )
        rhat_ok = (table["max_r_hat"] <= max_rhat) | (n_chains < 2)
        ess_ok = (table["min_ess_bulk"] >= floor) & (table["min_ess_tail"] >= floor)
        table["ok"] = (table["divergences"] <= max_divergences) & rhat_ok & ess_ok
        return table

    def problems(self, **thresholds: Any) -> dict[str, str]:
        """Group -> what is wrong with its posterior, for the groups with a problem.

        ``thresholds`` are those of `diagnostics`.
        """
        table = self.diagnostics(**thresholds)
        max_rhat = thresholds.get("max_rhat", 1.01)
        floor = thresholds.get("min_ess_per_chain", 100.0) * self.posterior.sizes["chain"]
        out = {}
        for g, row in table[~table["ok"]].iterrows():
            parts = []
            if row["divergences"] > thresholds.get("max_divergences", 0):
                parts.append(f"{row['divergences']} divergences")
            if not row["max_r_hat"] <= max_rhat:
                parts.append(f"r_hat {row['max_r_hat']:.3f}")
            low = min(row["min_ess_bulk"], row["min_ess_tail"])
            if not low >= floor:
                parts.append(f"ESS {low:.0f}")
            out[str(g)] = ", ".join(parts)
        return out

    def __repr__(self) -> str:
        post = self.posterior
        head = (
            f"ManyFits(law={self.law.name!r}, likelihood={self.settings.likelihood!r}, "
            f"groups={len(self)}, runs={self.data.n_runs}, "
            f"draws={post.sizes['chain'] * post.sizes['draw']} per group)"
        )
        problems = self.problems()
        if not problems:
            return f"{head}\n  diagnostics: ok in every group"
        listed = "; ".join(f"{g} ({p})" for g, p in list(problems.items())[:5])
        more = f"; ... ({len(problems) - 5} more)" if len(problems) > 5 else ""
        return (
            f"{head}\n  WARNING: {len(problems)} of {len(self)} groups have diagnostic "
            f"problems: {listed}{more}. See .diagnostics()."
        )

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(repr(self))}</pre>" + self.diagnostics().to_html(
            float_format=lambda x: f"{x:.4g}"
        )


# ------------------------------------------------------------------------------ fit_many


def fit_many(
    data: pd.DataFrame | ScalingData | str | os.PathLike[str],
    law: str | Law,
    *,
    group: str = "group",
    priors: Mapping[str, Prior] | None = None,
    likelihood: str | Likelihood = "contaminated_t",
    nu: float = 4.0,
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    target_accept: float | None = None,
    seed: int = 0,
    chunk_size: int | None = None,
    client: Any = None,
    columns: Mapping[str, str] | None = None,
    variable: str | None = None,
    breaks: int | None = None,
    dropna: bool = False,
    progress_bar: bool | None = None,
    misfit: Misfit | bool | None = None,
) -> ManyFits:
    """Fit one law to every curve of a table, independently, in one vectorised sampler.

    Each group (curve) gets the posterior that ``bayescale.fit(curve, law, ...)`` would
    give
    it alone: the same model, the same default priors computed from the curve's own runs, the
    same likelihood; only the starting points differ from ``fit``'s default (see Notes).

    Parameters
    ----------
    data : DataFrame, ScalingData or path
        One run per row, with a column that names each run's curve (``group``); never
        modified.
    law : str or Law
        A name in `bayescale.model.laws.LAWS` or a `Law`. Every registered law works; the
        one-variable laws (``power_law``, ``broken_power_law``, ``m4``) take ``variable=``.
    group : str, default "group"
        The column that names the curves.
    priors : mapping, optional
        Parameter -> `Prior`, laid over every curve's defaults.
    likelihood : str or Likelihood, default "contaminated_t"
        Observation model of log loss, as in `bayescale.inference.fit`.
    nu : float, default 4
        Degrees of freedom of the Student-t.
    num_chains, num_warmup, num_samples : int
        Chains, warm-up iterations and draws per chain of every curve (defaults 4, 1000,
        1000).
    target_accept : float, optional
        Target mean acceptance probability of each curve's step size; default 0.8, and 0.9
        with ``misfit`` (as `bayescale.inference.fit`).
    seed : int, default 0
        Curve ``i`` of the sorted groups samples with keys from ``(seed, i)`` only.
    chunk_size : int, optional
        Curves per unit of work: one chunk of every curve without a ``client``,
        ``ceil(groups / (2 * workers))`` with one. Within a chunk the curves run in compiled
        blocks of `BLOCK`, sorted by step size; the draws do not depend on the chunking.
    client : distributed.Client, optional
        A Dask client: the chunks run on its workers (``pip install "bayescale[distributed]"``).
        Without one, chunks run in this process on JAX's default device (a GPU when there
        is one).
    columns : mapping, optional
        Canonical name -> your column name, as in `bayescale.inference.fit`.
    variable : str, optional
        Scaling variable of one-variable laws.
    breaks : int, optional
        Number of breaks of ``broken_power_law`` (1 or 2).
    dropna : bool, default False
        Drop invalid runs instead of raising.
    progress_bar : bool, optional
        Show the sampler's progress (iterations of every chain; chunks on a cluster); default
        in a terminal or a notebook. It changes nothing in the draws.
    misfit : Misfit, bool or None, default None
        Each curve's own misfit, as `bayescale.inference.fit` models it by default (the same
        model part: each curve's walk over its own fitted range, its own scales, orthogonal
        to its law); False for the exact law.

    Returns
    -------
    ManyFits
        ``fits[group]`` is a `bayescale.Fit`; ``fits.summary()`` and ``fits.diagnostics()``
        are tables over all groups.

    Raises
    ------
    DataError
        If there is no group column, or a group cannot identify the law (the message names
        the group).
    PriorError, LawError, OptionError
        As `bayescale.inference.fit`.

    Warns
    -----
    ConvergenceWarning
        Naming the groups with divergences, r_hat above 1.01 or a low ESS.

    Notes
    -----
    **Sampler.** Jittered fixed-length HMC with a dense preconditioner and a step size per
    curve (`bayescale.inference.vhmc`; each curve's `Fit` has ``method == "hmc"``), not ``fit``'s
    NUTS, which vectorises badly (every iteration would wait for the deepest tree). Both
    sample the same posterior; the agreement is tested within Monte Carlo error.

    **Same seed, same draws.** Curve ``i`` gets the chain keys
    ``split(fold_in(PRNGKey(seed), i), num_chains)`` and the trajectory jitter comes from
    ``seed`` alone; every compiled call has the same shape, so the draws are bitwise the same
    whatever the other curves, the chunking, or the machine (in this process or on a Dask
    cluster).

    **Starts.** Each chain starts at a Laplace draw around the best posterior mode found
    inside the compiled program (see the module notes), where ``fit`` runs SciPy's L-BFGS-B
    per curve.

    **Cost.** Curves run in lock step within a block of `BLOCK`: an iteration lasts as long
    as the block's longest trajectory in leapfrog steps. Blocks are re-formed from curves of
    similar step size every `RESORT` warm-up iterations and before the draws, so a poorly
    identified curve slows only curves like it (``benchmarks/many_curves.py`` measures it;
    the figures are in the how-to *Many groups*).

    Examples
    --------
    >>> import pandas as pd
    >>> import bayescale as bs
    >>> runs = pd.concat(
    ...     [bs.simulate("power_law", seed=s).assign(group=f"c{s}") for s in (1, 2)]
    ... )
    >>> fits = bs.fit_many(runs, "power_law", num_warmup=200, num_samples=200)  # doctest: +SKIP
    >>> fits.summary().loc[("c1", "alpha"), "median"]  # doctest: +SKIP
    """
    opt.seed(seed)
    progress_bar = opt.optional_flag(progress_bar, "progress_bar")
    nu = opt.positive(nu, "nu", example=4)
    if priors is not None and not isinstance(priors, Mapping):
        raise OptionTypeError(
            f"priors must be a mapping of parameter name -> bayescale.Prior; received "
            f"{type(priors).__name__}: {priors!r}."
        )
    if not isinstance(group, str):
        raise OptionTypeError(
            f"group must be the name of a column; received {type(group).__name__}: {group!r}. "
            "For example group='arch'."
        )
    if chunk_size is not None:
        chunk_size = opt.count(chunk_size, "chunk_size")
    if client is not None and not all(hasattr(client, m) for m in ("submit", "gather", "nthreads")):
        raise OptionTypeError(
            f"client must be a dask.distributed Client; received {type(client).__name__}. "
            "For example client=distributed.Client(distributed.LocalCluster(n_workers=2))."
        )
    noise = get_likelihood(likelihood, nu=nu)
    spec = resolve_misfit(misfit)
    if target_accept is None:
        target_accept = 0.8 if spec is None else 0.9
    settings = HmcSettings(num_chains, num_warmup, num_samples, target_accept)
    law_ = get_law(law, variable=variable, breaks=breaks)
    mapping = dict(columns or {})
    if group != "group":
        mapping["group"] = group
    scaling = from_frame(data, columns=mapping or None, dropna=dropna)
    if "group" not in scaling.table.columns:
        raise DataError(
            f"no column {group!r} names the curves; columns are "
            f"{[c for c in scaling.table.columns]}. Pass group=<your column>, or fit one "
            "curve with bayescale.fit."
        )
    names = sorted(scaling.table["group"].unique())
    by_group = dict(iter(scaling.table.groupby("group", sort=True)))
    curves = [_curve(by_group[g], g, law_, priors, noise.name, spec) for g in names]
    curve_priors = {g: p for g, (_, p) in zip(names, curves, strict=True)}
    families = {tuple((k, p.family) for k, p in pri.items()) for _, pri in curves}
    if len(families) > 1:  # pragma: no cover - defaults share families; user priors are common
        raise OptionError("every curve must have priors of the same families.")
    (families_,) = families
    args, starts = _stack(law_, curves, settings.num_chains, spec)
    if spec is not None:  # each curve's walk orthogonal to its law at its exact-law mode
        anchors = _anchors(law_, families_, noise, curves, args)
        curves, args = _orthogonal_curves(law_, curves, anchors, args)
    keys = curve_keys(seed, np.arange(len(names)), settings.num_chains)
    sites, stats, size = _run(
        law_,
        families_,
        noise,
        settings,
        keys,
        jitter_key(seed),
        starts,
        args,
        chunk_size,
        client,
        progress_bar,
        spec,
    )
    tree = _many_tree(names, sites, stats)
    per_curve = {g: c.coords for g, (c, _) in zip(names, curves, strict=True)}
    config = fit_settings(
        law_,
        scaling,
        priors=None,  # each curve has its own (ManyFits.priors)
        likelihood=noise,
        centre=None,
        method="hmc",
        seed=seed,
        num_warmup=settings.num_warmup,
        dense_mass=True,
        target_accept=settings.target_accept,
        trajectory=settings.trajectory,
        chain_method="jittered HMC vectorised over chains and curves (bayescale.fit_many)",
        init="Laplace draws around the best mode of the chains' Adam searches",
        chunk_size=int(size),
        misfit=spec,
        group_misfit_coords=per_curve if spec is not None else None,  # each curve's own runs
    )
    tree.attrs.update(config.to_attrs())
    result = ManyFits(tree, law_, curve_priors, scaling, config)
    problems = result.problems()
    if problems:
        listed = "; ".join(f"{g} ({p})" for g, p in list(problems.items())[:10])
        more = f"; ... ({len(problems) - 10} more)" if len(problems) > 10 else ""
        warn(
            f"the posteriors of {len(problems)} of {len(names)} groups may not be trustworthy: "
            f"{listed}{more}. Look at fits.diagnostics() and at those groups' fits "
            "(fits[group]); raise num_warmup or target_accept, or tighten their priors.",
            ConvergenceWarning,
        )
    return result


def _curve(
    table: pd.DataFrame,
    name: str,
    law: Law,
    priors: Mapping[str, Prior] | None,
    noise: str,
    misfit: Misfit | None = None,
) -> tuple[Any, Priors]:
    """One curve's unpadded model inputs and priors, validated like `bayescale.inference.fit`'s."""
    sub = ScalingData(table=table.reset_index(drop=True))
    try:
        sub.require(law.variables, len(law.params) + 1, law.name)
    except DataError as exc:
        raise DataError(f"group {name!r}: {exc}") from exc
    pri = resolve_priors(law, sub, priors, noise)
    return model_inputs(law, sub, pri, pad=False, misfit=misfit), pri


def _stack(
    law: Law, curves: list[tuple[Any, Priors]], num_chains: int, misfit: Misfit | None = None
) -> tuple[tuple[Any, ...], dict[str, np.ndarray]]:
    """The model's arguments of every curve padded to the longest and stacked; the starts."""
    width = max(inputs.n_runs for inputs, _ in curves)
    f32 = np.float32
    logx = {v: np.empty((len(curves), width), f32) for v in law.variables}
    log_loss = np.zeros((len(curves), width), f32)
    mask = np.zeros((len(curves), width), bool)
    for i, (inputs, _) in enumerate(curves):
        n = inputs.n_runs
        for v in law.variables:
            logx[v][i] = inputs.centre[v]  # padding rows at the centre, masked out
            logx[v][i, :n] = inputs.logx[v]
        log_loss[i, :n] = inputs.log_loss
        mask[i, :n] = True
    centre = {v: np.stack([c.centre[v] for c, _ in curves]).astype(f32) for v in law.variables}
    first = curves[0][0].hyper
    hyper = {
        k: tuple(np.stack([c.hyper[k][j] for c, _ in curves]).astype(f32) for j in range(len(v)))
        for k, v in first.items()
    }
    mf = None
    if misfit is not None:  # each curve's coordinates; padding rows at 0, masked out
        mf = {k: np.zeros((len(curves), width), f32) for k in ("t", "r")}
        for i, (inputs, _) in enumerate(curves):
            for k in ("t", "r"):
                mf[k][i, : inputs.n_runs] = inputs.misfit[k]
        mf["half"] = np.stack([c.misfit["half"] for c, _ in curves]).astype(f32)
        if any("keep" in c.misfit for c, _ in curves):  # short curves' walks (`walk_directions`)
            whole = np.ones(misfit.knots - 2, f32)
            mf["keep"] = np.stack([c.misfit.get("keep", whole) for c, _ in curves]).astype(f32)
    args = (logx, centre, hyper, log_loss, mask, mf)
    per_curve = [start_from_prior(law, pri, num_chains, misfit) for _, pri in curves]
    starts = {k: np.stack([s[k] for s in per_curve]) for k in per_curve[0]}
    return args, starts


def _orthogonal_curves(
    law: Law,
    curves: list[tuple[Any, Priors]],
    anchors: list[dict[str, float] | None],
    args: tuple[Any, ...],
) -> tuple[list[tuple[Any, Priors]], tuple[Any, ...]]:
    """The curves' misfit inputs made orthogonal to their laws at ``anchors``.

    Returns the curves with the anchor in their coordinates (for each curve's own `Fit`) and
    the stacked arguments with ``q``, ``m`` and ``jac`` (`bayescale.model.misfit.orthogonal`;
    zeros for a curve without an anchor: its misfit is then not orthogonalised).
    """
    fallback = next((a for a in anchors if a is not None), None)
    if fallback is None:
        return curves, args
    logx, mf = args[0], dict(args[5])
    width, p = mf["t"].shape[1], len(law.param_names)
    parts = {k: np.zeros((len(curves), width, p), np.float32) for k in ("q", "jac")}
    parts["m"] = np.zeros((len(curves), p, p), np.float32)
    known = [fallback if a is None else a for a in anchors]  # unused rows for the former
    theta = {k: np.array([a[k] for a in known]) for k in law.param_names}
    jac = law_jacobian(law, theta, {v: np.asarray(x, np.float64) for v, x in logx.items()})
    out = []
    for i, ((inputs, pri), anchor) in enumerate(zip(curves, anchors, strict=True)):
        if anchor is not None:
            n = inputs.n_runs
            got = orthogonal(jac[i, :n], np.ones(n, bool))
            for k in ("q", "jac"):
                parts[k][i, :n] = got[k]
            parts["m"][i] = got["m"]
            inputs = dataclasses.replace(
                inputs, coords=dataclasses.replace(inputs.coords, anchor=anchor)
            )
        out.append((inputs, pri))
    mf.update(parts)
    return out, (*args[:5], mf)


def _take(tree: Any, index: np.ndarray) -> Any:
    """Rows ``index`` of every array of a pytree (None leaves stay None)."""
    import jax

    return jax.tree_util.tree_map(lambda a: np.asarray(a)[index], tree)


def _run(
    law: Law,
    families: tuple[tuple[str, str], ...],
    noise: Likelihood,
    settings: HmcSettings,
    keys: np.ndarray,
    jitter: np.ndarray,
    starts: Mapping[str, np.ndarray],
    args: tuple[Any, ...],
    chunk_size: int | None,
    client: Any,
    progress: bool | None,
    misfit: Misfit | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """Every curve's draws and statistics, chunk by chunk, locally or on the client's workers.

    Returns them with the chunk size. Locally the chunks are the lanes of one run of the
    driver; on a cluster each runs the driver on a worker (`run_chunk`) and the progress bar
    counts chunks.
    """
    n = len(keys)
    if chunk_size is None:  # one chunk here; two per worker on a cluster
        workers = len(client.nthreads()) if client is not None else 0
        chunk_size = math.ceil(n / (2 * workers)) if workers else n
    size = min(int(chunk_size), n)
    chunks = [np.arange(first, min(first + size, n)) for first in range(0, n, size)]
    label = f"fit_many: {n} curves"
    if client is None:  # in this process, on JAX's default device (a GPU when there is one)
        model = build_model(_same_law(law), families, noise, misfit)
        kernel = _Many(model, settings, keys, jitter, starts, args, chunks)
        sites, stats = run(kernel, progress=progress, description=label)
        return sites, stats, size
    from distributed import as_completed

    payloads = [(keys[i], jitter, _take(dict(starts), i), _take(args, i)) for i in chunks]
    futures = [
        client.submit(run_chunk, law, families, noise, settings, *p, misfit, pure=False)
        for p in payloads
    ]
    show = progress_default() if progress is None else progress
    with progress_bar(len(futures), label, show) as bar:
        for _ in as_completed(futures):
            bar.update()
    results = client.gather(futures)
    sites, stats = (
        {k: np.concatenate([r[part][k] for r in results]) for k in results[0][part]}
        for part in (0, 1)
    )
    return sites, stats, size


def _many_tree(names: list[str], sites: Mapping[str, np.ndarray], stats: Mapping[str, Any]) -> Any:
    """A DataTree with ``posterior`` and ``sample_stats`` over ``group, chain, draw``."""
    import xarray as xr

    def dataset(arrays: Mapping[str, np.ndarray]) -> Any:
        out = {}
        for k, v in arrays.items():
            extra = [f"{k}_dim_{i}" for i in range(v.ndim - 3)]
            out[k] = (("group", "chain", "draw", *extra), v)
        n_chain, n_draw = next(iter(arrays.values())).shape[1:3]
        coords = {"group": names, "chain": np.arange(n_chain), "draw": np.arange(n_draw)}
        return xr.Dataset(out, coords=coords)

    return xr.DataTree.from_dict({"posterior": dataset(sites), "sample_stats": dataset(stats)})

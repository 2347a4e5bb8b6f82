"""The inference engine: numpyro's NUTS as a kernel of the driver, MAP + Laplace, the DataTree.

Every verb that samples one posterior goes through `sample_nuts` (fit, grouped fits, update,
leave-one-out and leave-future-out refits, break detection), which runs numpyro's NUTS under
`bayescale.inference.driver` (the schedule, the threads, the progress bar, Ctrl-C, the starts,
the keys and the statistics); `bayescale.inference.fit` is the only module that turns its
draws into a `Fit`.

Contracts
---------
- **Inputs are arguments.** The data, the observation mask, the prior hyper-parameters, the
  starting point and the jitter are arguments of the compiled programs, never closed over; runs
  are padded to bucketed sizes (`bayescale.model.build.bucket_size`). A new data set of a size
  already seen, or any subset of it, costs no compilation. Compiled programs are cached per
  (model, settings) in bounded LRU caches.
- **Same seed, same draws.** Chain ``c`` always gets key ``split(PRNGKey(seed))[1]`` split into
  ``num_chains``, index ``c`` (`bayescale.inference.driver.chain_keys`), and runs one
  single-device program, compiled once on the default device, whatever the number of host
  devices: each chain is a lane of the driver, in its own thread, and XLA runs calls from
  different threads concurrently, so the chains run in parallel without
  ``--xla_force_host_platform_device_count``. A program mapped over devices (``pmap``) is
  not used: XLA partitions it for the number of devices, which changes the compiled
  arithmetic at the last bit, and NUTS trajectories amplify that into other draws. Sampling
  always advances in the same chunks of iterations (`bayescale.inference.driver.schedule`);
  the progress bar only reports between chunks, so showing it changes nothing.
- **Interruptible.** On ``KeyboardInterrupt`` (Ctrl-C) in the calling thread every chain stops
  after its current chunk and the interrupt is raised (the driver's contract).
- **The MAP search runs BLAS on one thread.** SciPy's L-BFGS-B makes thousands of tiny BLAS
  calls; a multi-threaded OpenBLAS spends far more time waking its threads than computing,
  the more so while JAX keeps the cores busy (measured: 20 lone fits of Revisiting curves
  from 43.7 s to 4.6 s, warm, at load 5).
- **Starts** are values of the model's sample sites (constrained), one row per chain; each
  chain draws ``num_candidates`` points uniformly within ``jitter`` of its start in the
  unconstrained space and starts from the one with the lowest potential energy
  (`bayescale.inference.driver.best_candidate`).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bayescale import streams
from bayescale.errors import OptionError
from bayescale.inference.driver import (
    CHUNK,
    STATS,
    best_candidate,
    chain_keys,
    run,
    schedule,
)
from bayescale.io.data import ScalingData
from bayescale.model.build import OBS, ModelInputs, build_model, internal_sites, model_inputs
from bayescale.model.distributions import Prior
from bayescale.model.laws import Law, declaration, fingerprint_record
from bayescale.model.misfit import COEFS, SCALES, Misfit, draw_indicator, walk_names
from bayescale.model.priors import Priors
from bayescale.options import counts
from bayescale.version import __version__

__all__ = [
    "Laplace",
    "NutsSettings",
    "build_tree",
    "laplace_fit",
    "laplace_start",
    "misfit_start",
    "pointwise_log_likelihood",
    "pointwise_draws",
    "sample_nuts",
    "start_from_params",
    "start_from_prior",
]


@dataclass(frozen=True)
class NutsSettings:
    """NUTS settings that shape the compiled program (hashable: they key its cache).

    Attributes
    ----------
    num_chains, num_warmup, num_samples : int
        Chains, warm-up iterations (step size and dense mass matrix adaptation) and draws.
    dense_mass : bool
        Adapt a dense mass matrix (else diagonal).
    target_accept : float
        Target acceptance probability of the step-size adaptation.
    num_candidates : int
        Candidate starting points per chain (see the module notes).
    """

    num_chains: int = 4
    num_warmup: int = 1000
    num_samples: int = 1000
    dense_mass: bool = True
    target_accept: float = 0.8
    num_candidates: int = 32

    def __post_init__(self) -> None:
        counts(self, ("num_chains", "num_samples", "num_warmup", "num_candidates"))
        ta = self.target_accept
        if isinstance(ta, bool) or not isinstance(ta, (int, float)) or not 0 < ta < 1:
            raise OptionError(
                f"target_accept must be a probability strictly between 0 and 1; received "
                f"{ta!r}. The default is 0.8; raise it (0.9, 0.95) after divergences."
            )
        object.__setattr__(self, "target_accept", float(ta))
        object.__setattr__(self, "dense_mass", bool(self.dense_mass))


# ------------------------------------------------------------------------------ NUTS


@functools.lru_cache(maxsize=8)
def _program(
    model: Any, settings: NutsSettings, sites: tuple[tuple[str, tuple[int, ...]], ...]
) -> tuple[Any, ...]:
    """Compiled programs: init, advance, postprocess, laplace and from_y.

    The first three run one chain each (`sample_nuts` calls them from one thread per chain);
    ``laplace`` and ``from_y`` serve `laplace_start`. NUTS runs on numpyro's
    unconstrained sites (a dict, as numpyro's own NUTS), or, where the model carries a
    `bayescale.model.geometry.RidgeMap`, on the flat vector of that map's coordinates (the
    draws are mapped back to numpyro's). ``advance(state, args, length)`` runs
    ``length <= CHUNK`` iterations (a dynamic trip count, so one compilation serves every
    chunk) and returns the unconstrained draws and the sampler statistics in buffers of
    ``CHUNK`` rows. ``sites``: the unconstrained sites'
    names and shapes. ``init`` takes an initial inverse mass matrix, or None for numpyro's
    identity.
    """
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.hmc import hmc
    from numpyro.infer.util import constrain_fn, potential_energy, unconstrain_fn

    ridge = getattr(model, "ridge", None)
    n_cand = settings.num_candidates
    template = {name: jnp.zeros(shape) for name, shape in sites}
    _, unravel = ravel_pytree(template)
    if ridge is None:  # numpyro's own NUTS: positions are dicts of sites, one dense block
        dense = [tuple(sorted(template))] if settings.dense_mass else []
        to_pos = lambda z, args: z  # noqa: E731
        mapped = lambda pos, args: (pos, 0.0)  # noqa: E731  (sites, log |dz/dy|)
    else:
        dense, where = settings.dense_mass, ridge.positions(template)
        to_pos = lambda z, args: ridge.to_y(ravel_pytree(z)[0], args, where)  # noqa: E731

        def mapped(y: Any, args: tuple[Any, ...]) -> tuple[Any, Any]:
            z, log_det = ridge.forward(y, args, where)
            return unravel(z), log_det

    def energy(pos: Any, args: tuple[Any, ...]) -> Any:
        """The potential in the sampler's coordinates: the model's minus the log Jacobian."""
        sites, log_det = mapped(pos, args)
        return potential_energy(model, args, {}, sites) - log_det

    init_kernel, sample_kernel = hmc(
        potential_fn_gen=lambda *args: lambda pos: energy(pos, args), algo="NUTS"
    )

    def init(key: Any, start: Any, jitter: Any, args: tuple[Any, ...], metric: Any) -> Any:
        k_cand, k_run = jax.random.split(key)
        flat, unflat = ravel_pytree(to_pos(unconstrain_fn(model, args, {}, start), args))
        best = best_candidate(lambda y: energy(unflat(y), args), flat, k_cand, n_cand, jitter)
        return init_kernel(
            unflat(best),
            num_warmup=settings.num_warmup,
            inverse_mass_matrix=metric,
            dense_mass=dense,
            target_accept_prob=settings.target_accept,
            model_args=args,
            rng_key=jax.random.split(k_run)[0],  # the key numpyro's NUTS.init passes on
        )

    def advance(state: Any, args: tuple[Any, ...], length: Any) -> Any:
        flat0, _ = ravel_pytree(state.z)
        kinds = {"z": flat0.dtype, "diverging": bool, "n_steps": jnp.int32}
        buffers = {
            k: jnp.zeros((CHUNK, flat0.size) if k == "z" else CHUNK, kinds.get(k, flat0.dtype))
            for k in ("z", *STATS)
        }

        def body(i: Any, carry: Any) -> Any:
            state, buf = carry
            state = sample_kernel(state, model_args=args)
            sites, log_det = mapped(state.z, args)
            row = {
                "z": ravel_pytree(sites)[0],
                "diverging": state.diverging,
                "n_steps": state.num_steps.astype(jnp.int32),
                "acceptance_rate": state.accept_prob,
                "energy": state.energy,
                # the model's log density, not the sampler's (which has the log Jacobian in it)
                "lp": -(state.potential_energy + log_det),
            }
            buf = {k: buf[k].at[i].set(row[k].astype(buf[k].dtype)) for k in buf}
            return state, buf

        return jax.lax.fori_loop(0, length, body, (state, buffers))

    def postprocess(z_flat: Any, args: tuple[Any, ...]) -> Any:
        def one(z: Any) -> Any:
            return constrain_fn(model, args, {}, unravel(z), return_deterministic=True)

        return jax.vmap(one)(z_flat)

    def laplace(mode: Any, args: tuple[Any, ...]) -> Any:
        """The mode in the sampler's (flat) coordinates and the potential's Hessian there."""
        y, unflat = ravel_pytree(to_pos(unconstrain_fn(model, args, {}, mode), args))
        return y, jax.hessian(lambda v: energy(unflat(v), args))(y)

    def from_y(ys: Any, args: tuple[Any, ...]) -> Any:
        """Sample-site values (constrained) of rows of the sampler's flat coordinates."""
        unflat = ravel_pytree(to_pos(template, args))[1]

        def one(y: Any) -> Any:
            return constrain_fn(model, args, {}, mapped(unflat(y), args)[0])

        return jax.vmap(one)(ys)

    return (
        jax.jit(init),
        jax.jit(advance),
        jax.jit(postprocess),
        jax.jit(laplace),
        jax.jit(from_y),
    )


def sample_nuts(
    model: Any,
    inputs: ModelInputs,
    start: Mapping[str, np.ndarray],
    *,
    jitter: float,
    settings: NutsSettings,
    seed: int,
    progress: bool | None = None,
    description: str = "NUTS",
    metric: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run NUTS on ``model`` with ``inputs``; return draws and statistics over ``(chain, draw)``.

    Parameters
    ----------
    model : callable
        A model of `bayescale.model.build.build_model`.
    inputs : ModelInputs
        Padded inputs; only the rows of ``inputs.mask`` are scored.
    start : mapping
        Sample-site values (constrained), one row per chain.
    jitter : float
        Half-width of the uniform box around the start (unconstrained space) from which each
        chain picks its best of ``settings.num_candidates`` candidates; 0 starts at ``start``.
    settings : NutsSettings
        Chains, iterations and adaptation.
    seed : int
        The seed (see the module's reproducibility contract).
    progress : bool, optional
        Show a progress bar; default `bayescale.inference.driver.progress_default`.
    description : str
        The progress bar's label.
    metric : array, optional
        The initial inverse mass matrix in the sampler's flat coordinates (a vector without
        ``settings.dense_mass``), for example of `laplace_start`; default numpyro's identity.

    Returns
    -------
    samples : dict
        Every sample and deterministic site, ``(chain, draw, ...)``.
    stats : dict
        `bayescale.inference.driver.STATS`, ``(chain, draw)``.
    """
    kernel = _Nuts(model, inputs, start, jitter, settings, seed, metric)
    samples, stats = run(kernel, progress=progress, description=description)
    return draw_indicator(samples, seed), stats


class _Nuts:
    """numpyro's NUTS as a kernel of `bayescale.inference.driver`: one lane per chain."""

    def __init__(
        self,
        model: Any,
        inputs: ModelInputs,
        start: Mapping[str, np.ndarray],
        jitter: float,
        settings: NutsSettings,
        seed: int,
        metric: np.ndarray | None,
    ) -> None:
        import jax

        n_chain = settings.num_chains
        _, self.keys = chain_keys(seed, n_chain)
        self.args = args = inputs.args()
        init, advance, postprocess, _, _ = _compiled(model, args, start, settings)
        self.starts = [{k: np.asarray(v)[c] for k, v in start.items()} for c in range(n_chain)]
        self.jitter, self.metric = np.float32(jitter), metric
        self.num_warmup = settings.num_warmup
        self.lanes = self.workers = n_chain
        self.total = n_chain * (settings.num_warmup + settings.num_samples)
        self.chunks = schedule(settings.num_warmup, settings.num_samples)
        # compiled here, once, before the chains' threads call them (concurrent first calls of
        # a jitted function would each compile it); a program already compiled is found in
        # JAX's cache
        self.init_x = init.lower(self.keys[0], self.starts[0], self.jitter, args, metric).compile()
        self.advance_x = advance.lower(self.init_x.out_info, args, np.int32(CHUNK)).compile()
        z = self.advance_x.out_info[1]["z"]
        z_shape = jax.ShapeDtypeStruct((settings.num_samples, z.shape[1]), z.dtype)
        self.postprocess_x = postprocess.lower(z_shape, args).compile()

    def init(self, lane: int, tick: Any) -> Any:
        return self.init_x(self.keys[lane], self.starts[lane], self.jitter, self.args, self.metric)

    def advance(self, lane: int, state: Any, first: int, stop: int, tick: Any) -> tuple[Any, Any]:
        import jax

        n = stop - first
        state, buf = self.advance_x(state, self.args, np.int32(n))
        kept = None
        if first >= self.num_warmup:
            kept = {k: np.asarray(v)[:n] for k, v in buf.items()}
        jax.block_until_ready(state)
        tick(n)
        return state, kept

    def finish(
        self, lane: int, kept: list[Any]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        out = {k: np.concatenate([b[k] for b in kept]) for k in kept[0]}
        post = self.postprocess_x(out.pop("z"), self.args)
        return {k: np.asarray(v)[None] for k, v in post.items()}, {
            k: v[None] for k, v in out.items()
        }


def _compiled(
    model: Any, args: tuple[Any, ...], start: Mapping[str, np.ndarray], settings: NutsSettings
) -> tuple[Any, ...]:
    """`_program` for ``model``, with the site shapes of ``start`` (one row per chain)."""
    first_row = {k: np.asarray(v)[0] for k, v in start.items()}
    # traced abstractly: run eagerly, each of the model's operations would compile on its own
    shapes = _latent_shapes(model, _shape_key(first_row), _shape_key(args))
    return _program(model, settings, shapes)


def laplace_start(
    model: Any,
    inputs: ModelInputs,
    mode: Mapping[str, np.ndarray],
    settings: NutsSettings,
    seed: int,
) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """Chain starts and an initial mass matrix from a mode's Laplace approximation.

    The approximation is taken in the sampler's coordinates; the result is None where the
    potential's Hessian there is not positive definite, or a start is not finite.

    The MAP's own Laplace approximation (`laplace_fit`) lives in numpyro's unconstrained
    coordinates; where NUTS runs in a ridge map's, its draws land far off the posterior's
    curved ridge. Started there, and from numpyro's identity mass matrix, the warm-up spends
    its first hundreds of iterations at the maximum tree depth (figures in the design notes,
    *Measurements behind the code*).

    Parameters
    ----------
    model, inputs, settings, seed
        As for `sample_nuts`; the starts are seeded by ``seed``.
    mode : mapping
        The mode's sample-site values (constrained).

    Returns
    -------
    start : dict
        Sample-site values (constrained), one row per chain.
    metric : ndarray
        The covariance (its diagonal without ``settings.dense_mass``), float32.
    """
    args = inputs.args()
    point = {k: np.asarray(v, np.float32) for k, v in mode.items()}
    _, _, _, laplace, from_y = _compiled(
        model, args, {k: v[None] for k, v in point.items()}, settings
    )
    y0, hess = (np.asarray(a, np.float64) for a in laplace(point, args))
    w, v = np.linalg.eigh((hess + hess.T) / 2)
    if not (np.all(np.isfinite(w)) and w.min() > 0 and np.all(np.isfinite(y0))):
        return None
    root = v / np.sqrt(w)  # cov = root @ root.T
    noise = streams.rng(seed, "laplace_start").standard_normal((settings.num_chains, y0.size))
    drawn = from_y((y0 + noise @ root.T).astype(np.float32), args)
    starts = {k: np.asarray(drawn[k]) for k in mode}
    if not all(np.all(np.isfinite(v)) for v in starts.values()):  # far along a flat ridge
        return None
    cov = root @ root.T
    metric = cov if settings.dense_mass else np.diag(cov)
    return starts, metric.astype(np.float32)


# ------------------------------------------------------------------------------ MAP


@dataclass(frozen=True)
class Laplace:
    """The posterior mode and a Laplace approximation around it.

    Attributes
    ----------
    constrained : dict
        Draws of every site in the model's units, ``(draw, ...)``, float64.
    ok : bool
        Whether the mode is proper (finite, positive-definite Hessian, finite draws).
    message : str
        Why not, when ``ok`` is False.
    mode : dict
        The mode itself: every site in the model's units, float64 (empty when not computed).
    covariance : ndarray or None
        The approximation's covariance in numpyro's unconstrained coordinates (sites ravelled
        in sorted order), float64; None where the mode is not proper.
    """

    constrained: dict[str, np.ndarray]
    ok: bool
    message: str
    mode: dict[str, np.ndarray] = field(default_factory=dict)
    covariance: np.ndarray | None = None


@functools.lru_cache(maxsize=8)
def _map_functions(model: Any, shapes: tuple[tuple[str, tuple[int, ...]], ...]) -> tuple[Any, ...]:
    """Jitted pieces of the MAP over flat unconstrained vectors (float64 under x64).

    ``shapes`` gives the model's sample sites and their shapes (unconstrained). Returns
    ``unconstrain(params, args) -> z``; ``value_and_grad(z, args)``: the potential (negative
    log posterior, log-Jacobians included) and its gradient, for SciPy's L-BFGS-B; and
    ``constrain(zs, args)``: a batch of vectors to every site in the model's units. No optimiser
    and no second derivative is traced (the Hessian is taken by central differences of the
    compiled gradient), so the MAP costs little to compile.
    """
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import constrain_fn, potential_energy, unconstrain_fn

    _, unravel = ravel_pytree({k: jnp.zeros(shape) for k, shape in shapes})

    def unconstrain(params: Any, args: tuple[Any, ...]) -> Any:
        return ravel_pytree(unconstrain_fn(model, args, {}, params))[0]

    def value_and_grad(z: Any, args: tuple[Any, ...]) -> Any:
        def f(z: Any) -> Any:
            value = potential_energy(model, args, {}, unravel(z))
            return jnp.where(jnp.isfinite(value), value, jnp.inf)

        return jax.value_and_grad(f)(z)

    def constrain(zs: Any, args: tuple[Any, ...]) -> Any:
        return jax.vmap(
            lambda z: constrain_fn(model, args, {}, unravel(z), return_deterministic=True)
        )(zs)

    return jax.jit(unconstrain), jax.jit(value_and_grad), jax.jit(constrain)


#: jittered candidate starts of the MAP besides the prior median; L-BFGS-B runs from the best
_MAP_CANDIDATES = 15
_MAP_RUNS = 3


def laplace_fit(
    model: Any,
    inputs: ModelInputs,
    start: Mapping[str, np.ndarray],
    seed: int,
    num_draws: int,
    runs: int = _MAP_RUNS,
) -> Laplace:
    """The posterior mode (SciPy L-BFGS-B from the best starts) and Laplace draws, float64.

    ``start`` holds sample-site values (one row) at each prior's typical value: the optimiser
    starts there and at ``_MAP_CANDIDATES`` points jittered uniformly by +-0.5 around it in the
    unconstrained space, and runs from the ``runs`` with the lowest potential. Broad
    random starts are avoided: they can land on plateaus where a term has vanished (a huge
    exponent) and the gradient is zero.
    """
    import jax
    import scipy.optimize
    from threadpoolctl import threadpool_limits

    rng = streams.rng(seed, "laplace_draws")
    with jax.enable_x64(True):
        args64 = jax.device_put(
            jax.tree_util.tree_map(
                lambda a: None if a is None else _as64(a),
                inputs.args(),
                is_leaf=lambda a: a is None,
            )
        )
        first = {k: np.asarray(v[0], np.float64) for k, v in start.items()}
        unconstrain, value_and_grad, constrain = _map_functions(
            model, _latent_shapes(model, _shape_key(first), _shape_key(args64))
        )
        z0 = np.asarray(unconstrain(first, args64), np.float64)
        cands = np.concatenate([z0[None], z0 + rng.uniform(-0.5, 0.5, (_MAP_CANDIDATES, z0.size))])

        def fg(x: np.ndarray) -> tuple[float, np.ndarray]:
            v, g = value_and_grad(x, args64)
            return float(v), np.asarray(g, np.float64)

        values = np.array([fg(c)[0] for c in cands])
        order = np.argsort(np.where(np.isfinite(values), values, np.inf))[:runs]
        with threadpool_limits(limits=1, user_api="blas"):  # see the module notes
            results = [
                scipy.optimize.minimize(fg, cands[i], jac=True, method="L-BFGS-B") for i in order
            ]
        res = min(results, key=lambda r: r.fun if np.isfinite(r.fun) else np.inf)
        mode = res.x
        hess = _hessian(lambda x: fg(x)[1], mode)
        cov = None
        try:
            eig = np.linalg.eigvalsh(hess)
            cov = np.linalg.inv(hess) if eig.min() > 0 else None
            chol = None if cov is None else np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            eig, chol, cov = np.array([-1.0]), None, None
        if chol is None:  # no Gaussian around a non-proper mode: the mode itself, repeated
            draws = np.repeat(mode[None], num_draws, axis=0)
        else:
            draws = mode + rng.standard_normal((num_draws, mode.size)) @ chol.T
        # the mode, then draws; sliced in NumPy (each slice of a JAX array compiles a program)
        con = {
            k: np.asarray(v)
            for k, v in constrain(np.concatenate([mode[None], draws]), args64).items()
        }
        at_mode = {k: np.asarray(v[0], np.float64) for k, v in con.items()}
        constrained = {k: np.asarray(v[1:], np.float64) for k, v in con.items()}
    # finite where the sampler runs, in float32: a draw far along a flat direction of the
    # posterior (an exponent of 1e40) is finite in float64 and infinite there
    finite = all(np.all(np.isfinite(v.astype(np.float32))) for v in constrained.values())
    ok = bool(np.isfinite(res.fun) and eig.min() > 0 and finite)
    message = (
        ""
        if ok
        else "the MAP optimisation did not reach a proper mode (the Hessian of the negative log "
        "posterior is not positive definite or not finite); the Laplace approximation is not "
        "valid. Use method='nuts' or tighter priors."
    )
    return Laplace(constrained, ok, message, at_mode, cov if ok else None)


def exact_laplace(
    law: Law, data: ScalingData, priors: Priors, likelihood: Any, seed: int, num_draws: int
) -> Laplace:
    """`laplace_fit` of the exact law (no misfit) on ``data``, from the priors' typical values."""
    families = tuple((k, p.family) for k, p in priors.items())
    model = build_model(law, families, likelihood, None)
    start = start_from_prior(law, priors, 1)
    return laplace_fit(model, model_inputs(law, data, priors), start, seed, num_draws)


def exact_mode(
    law: Law, data: ScalingData, priors: Priors, likelihood: Any, seed: int
) -> dict[str, float] | None:
    """The exact law's posterior mode on ``data``: the anchor of a misfit (`anchor_of`)."""
    return anchor_of(law, exact_laplace(law, data, priors, likelihood, seed, 1))


def anchor_of(law: Law, lap: Laplace) -> dict[str, float] | None:
    """The law's parameters at an exact-law MAP ``lap``: the anchor of a misfit.

    The misfit is made orthogonal to the law's Jacobian there (`bayescale.model.misfit.
    orthogonal`); None where the mode is not finite (the misfit is then not orthogonalised).
    """
    mode = {k: float(lap.mode[k]) for k in law.param_names if k in lap.mode}
    if len(mode) < len(law.param_names) or not all(np.isfinite(list(mode.values()))):
        return None
    return mode


def _shape_key(tree: Any) -> Any:
    """A hashable description of a pytree's structure, shapes and dtypes (a cache key)."""
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((tuple(np.shape(a)), np.dtype(a.dtype).str) for a in leaves)


@functools.lru_cache(maxsize=32)
def _latent_shapes(model: Any, params_key: Any, args_key: Any) -> tuple[Any, ...]:
    """The model's unconstrained sites and their shapes, traced abstractly once per shapes.

    A simplex of k weights has k - 1 unconstrained coordinates, so the shapes come from a trace.
    """
    import jax
    from numpyro.infer.util import unconstrain_fn

    def abstract(key: Any) -> Any:
        treedef, leaves = key
        return treedef.unflatten([jax.ShapeDtypeStruct(s, np.dtype(d)) for s, d in leaves])

    params, args = abstract(params_key), abstract(args_key)
    latent = jax.eval_shape(lambda p, a: unconstrain_fn(model, a, {}, p), params, args)
    return tuple(sorted((k, tuple(v.shape)) for k, v in latent.items()))


def _hessian(grad: Any, x: np.ndarray, step: float = 1e-5) -> np.ndarray:
    """Symmetrised central-difference Hessian from a gradient function (float64)."""
    n = x.size
    hess = np.empty((n, n))
    for i in range(n):
        h = step * max(1.0, abs(x[i]))
        e = np.zeros(n)
        e[i] = h
        hess[i] = (grad(x + e) - grad(x - e)) / (2 * h)
    return 0.5 * (hess + hess.T)


def _as64(a: Any) -> np.ndarray:
    a = np.asarray(a)
    return a if a.dtype == bool else a.astype(np.float64)


# ------------------------------------------------------------------------------ starts


def _typical(prior: Prior) -> float:
    """A central value of a prior (its median where simple), for cold starts."""
    v = dict(prior.params)
    fam = prior.family
    if fam in ("Normal", "StudentT"):
        return v["loc"]
    if fam == "LogNormal":
        return math.exp(v["loc"])
    if fam == "HalfNormal":
        return 0.6745 * v["scale"]
    if fam == "HalfCauchy":
        return v["scale"]
    if fam == "Uniform":
        return 0.5 * (v["low"] + v["high"])
    if fam == "LogUniform":
        return math.sqrt(v["low"] * v["high"])
    if fam == "Gamma":
        return v["concentration"] / v["rate"]
    if fam == "Exponential":
        return math.log(2) / v["rate"]
    if fam == "TruncatedNormal":
        return min(max(v["loc"], v["low"]), v["high"]) if v["low"] < v["high"] else v["loc"]
    if fam == "Beta":
        return v["concentration1"] / (v["concentration1"] + v["concentration0"])
    raise OptionError(f"no typical value for prior family {fam!r}")  # pragma: no cover


def _inside(prior: Prior, value: np.ndarray) -> np.ndarray:
    """``value`` moved just inside the support of ``prior`` (for warm starts)."""
    v = dict(prior.params)
    value = np.asarray(value, np.float64)
    if prior.family in ("Uniform", "LogUniform", "TruncatedNormal"):
        lo, hi = v["low"], v["high"]
        pad = 1e-3 * (hi - lo)
        return np.clip(value, lo + pad, hi - pad)
    if prior.family == "Beta":
        return np.clip(value, 1e-3, 1 - 1e-3)
    if prior.family in ("Normal", "StudentT"):
        return value
    return np.maximum(value, 1e-12)


def start_from_prior(
    law: Law, priors: Priors, num_chains: int, misfit: Misfit | None = None
) -> dict[str, np.ndarray]:
    """Sample-site values at each prior's typical value, one row per chain.

    With ``misfit``, its scales start at their priors' medians and its walks at zero.
    """
    return {**_start(law, priors, {}, None, num_chains), **misfit_start(law, misfit, num_chains)}


def misfit_start(law: Law, misfit: Misfit | None, num_chains: int) -> dict[str, np.ndarray]:
    """Starting values of the misfit's sites (empty without misfit): median scales, flat walks."""
    if misfit is None:
        return {}
    names = walk_names({"n_params", "n_tokens"} <= set(law.variables))
    scales = [0.6745 * getattr(misfit, name) for name in names]
    return {
        SCALES: np.tile(np.asarray(scales, np.float32), (num_chains, 1)),
        COEFS: np.zeros((num_chains, len(names), misfit.knots - 2), np.float32),
    }


def start_from_params(
    law: Law,
    priors: Priors,
    centre: Mapping[str, float],
    params: Mapping[str, np.ndarray],
    num_chains: int,
) -> dict[str, np.ndarray]:
    """Sample-site values from reported parameters (papers' units), one row per chain.

    ``params`` holds ``num_chains`` values per parameter; amplitudes and scales are re-centred
    at ``centre``, break locations become the Dirichlet weights of their positions in the
    prior's log range, and every value is moved just inside its prior's support.
    """
    return _start(law, priors, centre, params, num_chains)


def _start(
    law: Law,
    priors: Priors,
    centre: Mapping[str, float],
    params: Mapping[str, np.ndarray] | None,
    num_chains: int,
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}

    def value(name: str) -> np.ndarray:
        if params is None:
            return np.full(num_chains, _typical(priors[name]))
        return np.asarray(params[name], np.float64)

    locations = [p for p in law.params if p.role == "location"]
    for p in law.params:
        if p.role == "location":
            continue
        if p.role in ("amplitude", "scale") and params is not None:
            coef = value(p.exponent) if p.role == "amplitude" else 1.0
            raw = value(p.name) * np.exp(-coef * float(centre[p.variable]))
            out[f"{p.name}_c"] = _inside(priors[p.name], raw)
        elif p.role in ("amplitude", "scale"):
            out[f"{p.name}_c"] = value(p.name)
        else:
            out[p.name] = _inside(priors[p.name], value(p.name))
    if locations:
        k = len(locations)
        if params is None:
            weights = np.full((num_chains, k + 1), 1.0 / (k + 1))
        else:
            low, high = (math.log(x) for x in priors[locations[0].name].values)
            pos = np.stack([np.log(value(p.name)) for p in locations], axis=-1)
            pos = np.sort(np.clip((pos - low) / (high - low), 0.02, 0.98), axis=-1)
            edges = np.concatenate(
                [np.zeros((num_chains, 1)), pos, np.ones((num_chains, 1))], axis=-1
            )
            weights = np.maximum(np.diff(edges, axis=-1), 1e-3)
            weights = weights / weights.sum(axis=-1, keepdims=True)
        out["_breaks"] = weights
    out["sigma"] = _inside(priors["sigma"], value("sigma"))
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


# ------------------------------------------------------------------------------ results


def _flat_for_scoring(samples: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Draws flattened to ``(n, ...)``; with the misfit mixture, its ``loss`` site switched on."""
    flat = {k: np.reshape(v, (n, *np.shape(v)[2:])) for k, v in samples.items()}
    if "misfit_on" in flat:  # see bayescale.model.build._mixture
        flat["_pointwise"] = np.ones(n, np.asarray(flat["misfit_on"]).dtype)
    return flat


@functools.lru_cache(maxsize=8)
def _pointwise_fn(model: Any) -> Any:
    """One compiled pass over the draws: each run's log density, location and scale."""
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    def one(params: Any, args: tuple[Any, ...]) -> tuple[Any, Any, Any]:
        trace = handlers.trace(handlers.substitute(model, data=params)).get_trace(*args)
        fn, value = trace[OBS]["fn"], trace[OBS]["value"]
        base = getattr(fn, "base_dist", fn)  # the observation mask wraps the distribution
        loc = jnp.broadcast_to(base.loc, value.shape)
        return fn.log_prob(value), loc, jnp.broadcast_to(base.scale, value.shape)

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def pointwise_draws(
    model: Any,
    inputs: ModelInputs,
    samples: Mapping[str, np.ndarray],
    likelihood: Any,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Log density of every real run at every draw, and one replicated loss per draw and run.

    Returns ``(log_likelihood, replicated)``, both ``(chain, draw, run)``: the log density of each
    run's log loss, and a loss (on the loss scale) drawn at that draw from the model's own location
    (law plus misfit) and scale, with ``likelihood.sample`` (the registry's standardised noise) from
    the stream ``pointwise_noise`` of ``seed`` (`bayescale.streams`). Every real run is scored,
    whatever ``inputs.mask`` says (held-out runs included). One compiled program per model serves
    both; the likelihood's numpyro distribution must expose ``loc`` and ``scale`` (as the
    location-scale families do).
    """
    shape, (ll, loc, scale) = _pointwise(model, inputs, samples)
    noise = likelihood.sample(streams.rng(seed, "pointwise_noise"), loc.shape)
    # computed in float64, kept in float32 (the draws' precision; half the memory); a replicate
    # beyond float32's range (a draw of a huge noise scale, as prior draws can give) is inf
    with np.errstate(over="ignore"):
        rep = np.exp(loc.astype(np.float64) + scale.astype(np.float64) * noise).astype(np.float32)
    return ll.reshape(*shape, -1), rep.reshape(*shape, -1)


def pointwise_log_likelihood(
    model: Any, inputs: ModelInputs, samples: Mapping[str, np.ndarray]
) -> np.ndarray:
    """Log density of every real run's log loss at every draw: ``(chain, draw, run)``.

    Every real run is scored, whatever ``inputs.mask`` says (held-out runs included); the
    same compiled program as `pointwise_draws`.
    """
    shape, (ll, _, _) = _pointwise(model, inputs, samples)
    return ll.reshape(*shape, -1)


def _pointwise(
    model: Any, inputs: ModelInputs, samples: Mapping[str, np.ndarray]
) -> tuple[tuple[int, int], tuple[np.ndarray, ...]]:
    """``(chain, draw)`` and each real run's log density, location and scale per flat draw."""
    n_chain, n_draw = next(iter(samples.values())).shape[:2]
    flat = _flat_for_scoring(samples, n_chain * n_draw)
    mask = np.zeros_like(inputs.mask)
    mask[: inputs.n_runs] = True
    out = _pointwise_fn(model)(flat, inputs.args(mask))
    return (n_chain, n_draw), tuple(np.asarray(a)[:, : inputs.n_runs] for a in out)


def build_tree(
    samples: Mapping[str, np.ndarray],
    stats: Mapping[str, np.ndarray] | None,
    log_likelihood: np.ndarray | None,
    data: ScalingData,
    law: Law,
    attrs: Mapping[str, Any],
    posterior_predictive: np.ndarray | None = None,
    groups: Any = None,
) -> Any:
    """Assemble the DataTree of a fit from draws shaped ``(chain, draw)``.

    Groups: ``posterior`` (reported parameters), ``sample_stats`` (the sampler's
    `bayescale.inference.driver.STATS`, when given),
    ``log_likelihood`` (``loss`` over ``run``), ``posterior_predictive`` (replicated ``loss``
    over ``run``, when given), ``observed_data`` and ``constant_data``; ``attrs`` (the fit's
    settings, `bayescale.inference.settings.FitSettings.to_attrs`) plus
    ``bayescale_version`` become the tree's attributes, with ``law_declaration``
    and ``law_fingerprint`` (JSON: `bayescale.model.laws.declaration` and
    `bayescale.model.laws.fingerprint_record`) for `bayescale.load_fit` to check.
    With ``groups`` (the labels of a grouped fit), posterior variables with one more axis of
    that length are laid over a ``group`` dimension with those labels as coordinates.
    """
    import arviz_base as azb
    import pandas as pd

    hidden = set(internal_sites(law))
    posterior = {k: np.asarray(v) for k, v in samples.items() if k not in hidden}
    groups_: dict[str, dict[str, Any]] = {"posterior": posterior}
    dims: dict[str, list[str]] = {OBS: ["run"]}
    dims.update({k: ["knot"] for k in posterior if k.endswith("_knots")})
    coords: dict[str, Any] = {"run": np.arange(data.n_runs)}
    if "misfit_shift" in posterior:  # the law's share of the walks (`misfit.orthogonal`)
        dims["misfit_shift"] = ["law_parameter"]
        coords["law_parameter"] = np.asarray(law.param_names, dtype=str)
    if groups is not None:
        coords["group"] = np.asarray(list(groups), dtype=str)
        dims.update({k: ["group"] for k, v in posterior.items() if v.ndim == 3})
        for k, v in posterior.items():
            if k.endswith("_knots") and v.ndim == 4:  # each group's misfit walk (scales shared)
                dims[k] = ["group", "knot"]
        if "misfit_shift" in posterior and posterior["misfit_shift"].ndim == 4:
            dims["misfit_shift"] = ["group", "law_parameter"]
    if stats is not None:
        groups_["sample_stats"] = {k: np.asarray(stats[k]) for k in STATS}
    if log_likelihood is not None:
        groups_["log_likelihood"] = {OBS: log_likelihood}
    if posterior_predictive is not None:
        groups_["posterior_predictive"] = {OBS: posterior_predictive}
    groups_["observed_data"] = {OBS: data.loss}
    const = {c: data.table[c].to_numpy() for c in data.table.columns if c != "loss"}
    # netCDF strings cannot be missing: a missing label is stored as "" (load_fit reads None)
    groups_["constant_data"] = {
        c: (np.where(pd.isna(v), "", v.astype(str)) if v.dtype == object else v)
        for c, v in const.items()
    }
    dims.update({c: ["run"] for c in const})
    if any("/" in c for c in const):  # a DataTree forbids it in names: percent-encode them
        encode = {c: c.replace("%", "%25").replace("/", "%2F") for c in const}
        groups_["constant_data"] = {encode[c]: v for c, v in groups_["constant_data"].items()}
        dims.update({encode[c]: ["run"] for c in const})
    tree = azb.from_dict(groups_, dims=dims, coords=coords)
    if any("/" in c for c in const):  # load_fit decodes them where this says so
        tree["constant_data"].attrs["bayescale_names"] = "percent-encoded"
    tree.attrs.update(attrs)
    tree.attrs["bayescale_version"] = __version__
    # what load_fit checks the registered law against (see bayescale.model.laws.fingerprint_record)
    tree.attrs["law_declaration"] = json.dumps(declaration(law))
    tree.attrs["law_fingerprint"] = json.dumps(
        fingerprint_record(law, posterior, {v: data.column(v) for v in law.variables})
    )
    return tree

r"""The law's own misfit: a random function of scale that the data can turn on or off.

A scaling law is an approximation. Fitted on cheap runs, its errors at larger scale are not
independent run noise: they share a sign within a compute budget, grow with the distance
beyond the fitted runs, and follow tokens per parameter (as they do on Chinchilla's IsoFLOP
and Epoch rows). The observation model with misfit is

.. math::

    \log L_i = \log f(x_i; \theta) + \delta(x_i) + \sigma \epsilon_i, \qquad
    \delta(x) = a(u) + c(u)\, r

- ``u``: the scale coordinate in decades, ``log10 C`` (C = 6 N D) for laws of N and D, else
  ``log10`` of the law's one variable;
- ``r``: ``log10(D / N)`` centred over the fitted runs (laws of N and D only; else no tilt);
- ``a`` and ``c``: Brownian motions in ``u`` (random walks on ``knots`` points spanning the
  fitted range, linear between them), with the constant and the linear trend in ``u`` removed
  over the knots: the law already has a level and slopes, so the walks model only what the law
  cannot (curvature), and do not compete with its parameters. Beyond the fitted range both
  walks continue as Brownian motion, so the misfit variance grows in proportion to the
  distance: ``Var delta(u_max + d) = Var delta(u_max) + (s_a^2 + s_c^2 r^2) d``;
- the walk scales ``misfit_level`` (``s_a``, log loss per square-root decade of compute) and
  ``misfit_tilt`` (``s_c``, log loss per decade of tokens per parameter, per square-root
  decade) have half-normal priors; when the law is right the data pull them towards zero and
  the misfit shrinks away.

Each walk is ``scale * basis @ w`` with standard normal coefficients ``w`` (non-centred; the basis
spans the ``knots - 2`` directions the detrended walk can take; a curve with too few runs to tell
them from noise keeps the smoothest of them, `walk_directions`). Integrating the walks out exactly
(a low-rank Gaussian, cheap by Woodbury's identity) needs Gaussian run noise, which covers far less
than the Student-t on the real backtests and mixes badly where runs are outlying, so NUTS samples
the coefficients with the Student-t (figures in the design notes, *Measurements behind the code*).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bayescale import streams
from bayescale.errors import OptionError, OptionTypeError

__all__ = [
    "COEFS",
    "MISFIT_SITES",
    "Misfit",
    "MisfitCoords",
    "draw_indicator",
    "law_jacobian",
    "MisfitAt",
    "misfit_at",
    "misfit_coords",
    "misfit_draws_at",
    "new_walk_knots",
    "orthogonal",
    "SCALES",
    "resolve_misfit",
    "sample_delta",
    "walk_directions",
    "walk_names",
]

#: reported scales of the misfit (posterior variables)
MISFIT_SITES = ("misfit_level", "misfit_tilt")
#: the sampled sites: the walks' scales ``(walk,)`` and standard normal coefficients
#: ``(walk, knots - 2)``, or ``(walk, group, knots - 2)`` with one walk per group
SCALES, COEFS = "_misfit_scales", "_misfit_w"


@dataclass(frozen=True)
class Misfit:
    """The misfit model's settings (hashable: they shape the compiled model).

    Attributes
    ----------
    knots : int
        Points of each random walk over the fitted range of ``u`` (at least 4).
    level : float
        Scale of the half-normal prior of ``misfit_level`` (log loss per square-root decade).
    tilt : float
        Scale of the half-normal prior of ``misfit_tilt`` (log loss per decade of D/N per
        square-root decade of compute); unused for one-variable laws.
    p_exact : float
        Prior probability that the law is exact (no misfit at all), in [0, 1). Above 0 the
        likelihood is a two-component mixture, exact law or law plus misfit, with the choice
        integrated out (Bayesian model averaging): ``misfit_weight`` is each draw's
        conditional probability of the misfit, and ``misfit_on`` a 0/1 draw from it that
        forecasts and pointwise densities use.
    """

    knots: int = 8
    level: float = 0.03
    tilt: float = 0.03
    p_exact: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.knots, bool) or not isinstance(self.knots, (int, np.integer)):
            raise OptionError(f"Misfit knots must be an integer >= 4; received {self.knots!r}.")
        if self.knots < 4:
            raise OptionError(f"Misfit knots must be at least 4; received {self.knots!r}.")
        for name in ("level", "tilt"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < np.inf:
                raise OptionError(
                    f"Misfit {name} must be a positive prior scale (log loss); received {v!r}."
                )
            object.__setattr__(self, name, float(v))
        object.__setattr__(self, "knots", int(self.knots))
        p = self.p_exact
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise OptionError(
                f"Misfit p_exact must be a probability in [0, 1); received {p!r}. 0 (the "
                "default) always models the misfit; 0.5 gives the exact law even odds."
            )
        object.__setattr__(self, "p_exact", float(p))

    def to_json(self) -> str:
        """The settings as JSON (for file attributes)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Misfit:
        """Inverse of `to_json`."""
        return cls(**json.loads(text))


def resolve_misfit(misfit: Misfit | bool | None) -> Misfit | None:
    """The settings of a verb's ``misfit=`` argument; None means the exact law.

    ``None`` (every verb's default) and ``True`` give the default `Misfit`, a `Misfit` itself,
    ``False`` the exact law.

    Raises
    ------
    OptionTypeError
        For anything else.
    """
    if misfit is False:
        return None
    if misfit is None or misfit is True:
        return Misfit()
    if isinstance(misfit, Misfit):
        return misfit
    raise OptionTypeError(
        f"misfit must be a bayescale.Misfit, True or False; received {misfit!r}. For "
        "example misfit=bs.Misfit(level=0.03), or misfit=False for the exact law."
    )


@dataclass(frozen=True)
class MisfitCoords:
    """Where the fitted runs lie in the misfit's coordinates (from the fitted runs only).

    Attributes
    ----------
    u_mid, half : float
        Middle and half-width (decades, at least 0.05) of the fitted range of ``u``.
    r_mid : float
        Mean of ``log10(D / N)`` over the fitted runs (0 without tilt).
    tilt : bool
        Whether the law has both ``n_params`` and ``n_tokens`` (a tilt term).
    anchor : dict or None
        The law's parameters where the misfit is made orthogonal to the law (`orthogonal`):
        the exact law's mode on the fitted runs. None: not orthogonalised (files of earlier
        versions).
    """

    u_mid: float
    half: float
    r_mid: float
    tilt: bool
    anchor: dict[str, float] | None = None

    def to_json(self) -> str:
        """The coordinates as JSON (for file attributes)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> MisfitCoords:
        """Inverse of `to_json`."""
        return cls(**json.loads(text))

    def scaled(self, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(t, r)`` of runs: ``t = (u - u_mid) / half`` (-1..1 in the fitted range), r centred."""
        u, r = _raw(self.tilt, columns)
        t = (u - self.u_mid) / self.half
        r = np.zeros_like(u) if r is None else r - self.r_mid
        return t, r


def _raw(tilt: bool, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    if tilt:
        n = np.asarray(columns["n_params"], np.float64)
        d = np.asarray(columns["n_tokens"], np.float64)
        return np.log10(6.0 * n * d), np.log10(d / n)
    x = next(iter(columns.values()))  # the law's one variable comes first
    return np.log10(np.asarray(x, np.float64)), None


def misfit_coords(
    variables: tuple[str, ...],
    columns: Mapping[str, np.ndarray],
    anchor: Mapping[str, float] | None = None,
) -> MisfitCoords:
    """The coordinates of a law's fitted runs (``columns``: variable -> values)."""
    tilt = "n_params" in variables and "n_tokens" in variables
    if tilt:
        cols = {"n_params": columns["n_params"], "n_tokens": columns["n_tokens"]}
    else:
        cols = {variables[0]: columns[variables[0]]}
    u, r = _raw(tilt, cols)
    lo, hi = float(np.min(u)), float(np.max(u))
    return MisfitCoords(
        0.5 * (lo + hi),
        max(0.5 * (hi - lo), 0.05),
        float(np.mean(r)) if tilt else 0.0,
        tilt,
        None if anchor is None else {k: float(v) for k, v in anchor.items()},
    )


def coordinate_columns(coords: MisfitCoords, variables: tuple[str, ...]) -> tuple[str, ...]:
    """The input columns the misfit is computed from (with an anchor, every input of the law).

    Its coordinates' columns come first; a misfit orthogonal to the law (`orthogonal`) needs
    the law's Jacobian at the points, so every other input of the law follows.
    """
    own = ("n_params", "n_tokens") if coords.tilt else (variables[0],)
    extra = tuple(v for v in variables if v not in own) if coords.anchor is not None else ()
    return own + extra


def knots(spec: Misfit) -> np.ndarray:
    """Knot positions on the scaled coordinate ``t`` (-1 to 1)."""
    return np.linspace(-1.0, 1.0, spec.knots)


def detrend_matrix(spec: Misfit) -> np.ndarray:
    """``(knots, knots)`` projection that removes the constant and the linear trend."""
    x = np.stack([np.ones(spec.knots), knots(spec)], axis=1)
    return np.eye(spec.knots) - x @ np.linalg.solve(x.T @ x, x.T)


def interp_weights(t: Any, spec: Misfit) -> Any:
    """``(n, knots)`` linear-interpolation weights (JAX), clamped to the end knots outside."""
    import jax
    import jax.numpy as jnp

    grid = jnp.asarray(knots(spec), dtype=jnp.result_type(t))
    k = spec.knots
    tc = jnp.clip(t, -1.0, 1.0)
    j = jnp.clip(jnp.floor((tc + 1.0) / 2.0 * (k - 1)).astype(jnp.int32), 0, k - 2)
    w = (tc - grid[j]) / (grid[j + 1] - grid[j])
    return (
        jax.nn.one_hot(j, k, dtype=t.dtype) * (1 - w)[:, None]
        + jax.nn.one_hot(j + 1, k, dtype=t.dtype) * w[:, None]
    )


def _interp_weights_np(t: np.ndarray, spec: Misfit) -> np.ndarray:
    """`interp_weights` in NumPy float64 (for forecasts on the host)."""
    k = spec.knots
    grid = knots(spec)
    tc = np.clip(t, -1.0, 1.0)
    j = np.clip(np.floor((tc + 1.0) / 2.0 * (k - 1)).astype(int), 0, k - 2)
    w = (tc - grid[j]) / (grid[j + 1] - grid[j])
    out = np.zeros((len(t), k))
    rows = np.arange(len(t))
    out[rows, j] += 1 - w
    out[rows, j + 1] += w
    return out


def basis(spec: Misfit) -> np.ndarray:
    """``(knots, knots - 2)`` basis of the detrended walk at unit step (float64).

    The knot values of a walk with standard normal steps, constant and linear trend removed,
    have covariance ``P L L^T P^T`` (``L``: cumulative sums, ``P``: `detrend_matrix`), of rank
    ``knots - 2``; the walk is ``basis @ w`` with ``w`` standard normal, without the two null
    directions that non-centred steps carry.
    """
    k = spec.knots
    lower = np.tril(np.ones((k, k - 1)), -1)  # path[j] = sum of the steps before knot j
    proj = detrend_matrix(spec)
    vals, vecs = np.linalg.eigh(proj @ lower @ lower.T @ proj.T)
    return vecs[:, 2:] * np.sqrt(np.maximum(vals[2:], 0.0))


def law_jacobian(law: Any, anchor: Mapping[str, Any], logx: Mapping[str, Any]) -> np.ndarray:
    """``(..., n, p)``: d log f / d theta of ``law`` at ``anchor`` at points ``logx`` (float64).

    Parameters in ``law.param_names`` order; ``logx`` maps each variable to natural logs
    ``(n,)``. With a leading curve axis (``anchor`` values ``(c,)``, ``logx`` ``(c, n)``), one
    Jacobian per curve.
    """
    import jax

    one, many = _jacobian_fns(law)
    theta = np.stack([np.asarray(anchor[k], np.float64) for k in law.param_names], axis=-1)
    lx = {v: np.asarray(x, np.float64) for v, x in logx.items()}
    with jax.enable_x64(True):
        return np.asarray((one if theta.ndim == 1 else many)(theta, lx), np.float64)


@functools.lru_cache(maxsize=16)
def _jacobian_fns(law: Any) -> tuple[Any, Any]:
    """`law_jacobian` compiled, for one curve and vmapped over curves.

    Compiled rather than run op by op: eagerly, each of the law's operations and their
    derivatives is compiled on its own, which costs a first fit far more than one program.
    """
    import jax
    import jax.numpy as jnp

    names = law.param_names

    def one(th: Any, x: Mapping[str, Any]) -> Any:
        n = next(iter(x.values())).shape[-1]

        def curve(t: Any) -> Any:
            return jnp.broadcast_to(law.fn(dict(zip(names, t, strict=True)), x), (n,))

        return jax.jacfwd(curve)(th)

    return jax.jit(one), jax.jit(jax.vmap(one))


def orthogonal(jac: np.ndarray, scored: np.ndarray) -> dict[str, np.ndarray]:
    """The misfit's inputs that make its values at the scored runs orthogonal to the law.

    A misfit free to take any shape competes with the law's parameters: a walk can mimic a
    change of exponent, and the law's parameters then move to make room for it (as in the
    calibration of computer models with a discrepancy term, Kennedy and O'Hagan 2001, where
    Plumlee 2017 makes the discrepancy orthogonal to the model's gradient). So the model
    removes from each draw's delta its least-squares projection on the columns of ``jac``
    (the law's Jacobian at the runs, `law_jacobian` at the exact law's mode): what the law can
    express belongs to the law. The removed part is the shift ``b`` of the law's parameters
    with ``J b`` equal to the projection; at any other point the misfit is ``delta - J b``.

    Returns ``q`` ``(n, p)`` (an orthonormal basis of the scored rows' Jacobian, zero rows
    elsewhere, padded with zero columns to ``p``), ``m`` ``(p, p)`` (``b = m @ q.T @ delta``)
    and ``jac`` ``(n, p)`` itself.
    """
    n, p = jac.shape
    j = np.where(np.asarray(scored, bool)[:, None], jac, 0.0)
    scale = np.linalg.norm(j, axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    u, s, vt = np.linalg.svd(j / scale, full_matrices=False)
    keep = s > 1e-6 * max(float(s[0]), 1e-300)
    q = np.zeros((n, p))
    m = np.zeros((p, p))
    q[:, : keep.sum()] = u[:, keep]
    m[:, : keep.sum()] = (vt[keep].T / s[keep]) / scale[:, None]
    return {"q": q, "m": m, "jac": np.asarray(jac, np.float64)}


def _orthogonalise(delta: Any, inputs: Mapping[str, Any], group: Any, n_groups: int) -> Any:
    """``delta`` less its projection on the law (`orthogonal`); records ``misfit_shift``."""
    import jax
    import jax.numpy as jnp
    import numpyro

    q = inputs["q"]
    if group is None:
        c = q.T @ delta
        shift = inputs["m"] @ c
        out = delta - inputs["jac"] @ shift
    else:  # each group's walk against its own law
        c = jax.ops.segment_sum(q * delta[:, None], group, num_segments=n_groups)
        shift = jnp.einsum("gpk,gk->gp", inputs["m"], c)
        out = delta - jnp.sum(inputs["jac"] * shift[group], axis=-1)
    numpyro.deterministic("misfit_shift", shift)
    return out


def sample_delta(
    spec: Misfit, tilt: bool, inputs: Mapping[str, Any], group: Any = None, n_groups: int = 0
) -> Any:
    """Sample the misfit's scales and walks (inside a numpyro model); return delta per run.

    ``inputs``: ``t`` and ``r`` per run (scaled coordinates), ``half`` (decades) and, for a
    curve too short for whole walks, ``keep`` (the directions each walk keeps,
    `walk_directions`; per group in a grouped model). With
    ``group`` (each run's group index, integers) there is one walk per group, ``half`` holds
    each group's half-width ``(n_groups,)``, and the scales are shared by every group: the
    misfit of each group is its own function, drawn from one population of functions.
    """
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    t = inputs["t"]
    weights = interp_weights(t, spec)
    step = jnp.sqrt(2.0 * inputs["half"] / (spec.knots - 1))  # sqrt(decades between knots)
    unit = jnp.asarray(basis(spec), dtype=t.dtype)
    names = walk_names(tilt)
    # one site for the scales and one for the coefficients of every walk: each sample site
    # adds its own small kernels to the compiled gradient, which on the CPU cost more than
    # the arithmetic (figures in the design notes)
    prior = jnp.asarray([getattr(spec, name) for name in names], dtype=t.dtype)
    scales = numpyro.sample(SCALES, dist.HalfNormal(prior).to_event(1))
    shape = [len(names), *([] if group is None else [n_groups]), spec.knots - 2]
    coefs = numpyro.sample(COEFS, dist.Normal(0.0, 1.0).expand(shape).to_event(len(shape)))
    if "keep" in inputs:  # a short curve's walk keeps its smoothest directions (`walk_directions`)
        coefs = coefs * inputs["keep"]

    def knots_of(i: int, name: str) -> Any:
        s = numpyro.deterministic(f"misfit_{name}", scales[i])
        if group is None:
            value = s * ((step * unit) @ coefs[i])
        else:  # (groups, knots): each group's walk at its own knot spacing
            value = s * step[:, None] * (coefs[i] @ unit.T)
        return numpyro.deterministic(f"misfit_{name}_knots", value)

    def at_runs(values: Any) -> Any:
        if group is None:
            return weights @ values
        return jnp.sum(weights * values[group], axis=-1)

    delta = at_runs(knots_of(0, "level"))
    if tilt:
        delta = delta + at_runs(knots_of(1, "tilt")) * inputs["r"]
    if "q" in inputs:
        delta = _orthogonalise(delta, inputs, group, n_groups)
    return delta


def walk_directions(
    spec: Misfit, coords: MisfitCoords, columns: Mapping[str, np.ndarray], n_law: int
) -> np.ndarray | None:
    """The walk directions a curve's runs leave room for: a 0/1 mask ``(knots - 2,)``, or None.

    Once the law's ``n_law`` parameters and the walks span as many directions as there are
    runs, law plus misfit can pass through every run: the noise is then not identified, and the
    likelihood grows as ``sigma`` goes to 0 with the walk interpolating the runs (on a short
    curve alone, and on each short curve of a grouped fit, whose pooled ``sigma`` then runs
    away and whose chains stick). So each walk keeps only its smoothest directions (the
    basis's largest-variance ones: a truncated Karhunen-Loeve expansion) such that law and
    walks span at most all but `SPARE` of the runs' directions, which stay to the noise alone.
    None where every direction fits (the walk as it is): any ladder with a few more distinct
    scales than the law has parameters plus ``knots``. ``columns``: the scored runs' inputs
    (`coordinate_columns`).
    """
    t, r = coords.scaled(columns)
    weights = _interp_weights_np(t, spec)
    unit = basis(spec)  # columns by increasing variance: the smoothest last

    def spanned(m: int) -> int:
        walk = weights @ unit[:, unit.shape[1] - m :]
        design = np.concatenate([walk, walk * r[:, None]], axis=1) if coords.tilt else walk
        if m == 0:
            return n_law
        return n_law + int(np.linalg.matrix_rank(design, tol=1e-6 * np.abs(design).max()))

    full = spec.knots - 2
    m = full
    while m > 0 and spanned(m) > len(t) - SPARE:
        m -= 1
    if m == full:
        return None
    keep = np.zeros(full)
    keep[full - m :] = 1.0
    return keep


#: runs' directions left to the noise alone where the walks would span them all
#: (`walk_directions`): one identifies ``sigma``
SPARE = 1


def walk_names(tilt: bool) -> tuple[str, ...]:
    """The walks of a law: ``level``, and ``tilt`` for laws of N and D."""
    return ("level", "tilt") if tilt else ("level",)


def new_walk_knots(
    spec: Misfit, half: float, scale: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Knots ``(draw, knots)`` of a fresh walk per draw of its ``scale``: a new group's misfit.

    The walk of `sample_delta` with new standard normal coefficients, over a fitted range of
    half-width ``half`` decades (float64).
    """
    scale = np.asarray(scale, np.float64).reshape(-1)
    w = rng.standard_normal((len(scale), spec.knots - 2))
    step = np.sqrt(2.0 * half / (spec.knots - 1))
    return scale[:, None] * step * (w @ basis(spec).T)


@dataclass(frozen=True)
class MisfitAt:
    """The misfit of posterior draws at fixed points, for any block of draws: `misfit_at`.

    ``delta = (coef @ design.T + beyond) * on`` per draw, where ``coef`` holds each draw's
    knots (level, tilt) and ``misfit_shift``, ``design`` the interpolation weights (times
    ``r`` for the tilt) and minus the law's Jacobian, and ``beyond`` the walks' Brownian
    continuations. The continuations' normals come from fixed positions of one PCG64 stream
    (``normals`` per draw), so any block of draws, computed in any order on any thread, gives
    the rows of the whole.
    """

    coef: np.ndarray  # (draw, terms) float64, zero rows where the draw is the exact law
    design: np.ndarray  # (point, terms)
    scale: np.ndarray  # (draw, walks): the walks' scales, zero where the draw is exact
    tilt: np.ndarray | None  # (point,) r, multiplying the tilt walk; None without tilt
    sides: tuple[tuple[np.ndarray, np.ndarray], ...]  # per end: points beyond, sqrt of steps
    state: Mapping[str, Any]  # the PCG64 state where the draws' normals begin
    normals: int  # normals per draw (even)

    def whole(self) -> np.ndarray:
        """Delta of every draw ``(draw, point)``, float64: one product for all the draws.

        One call: few points cost little beyond NumPy's per-call overhead (blocks of groups
        of draws are for the forecast's threads).
        """
        return self.block(0, len(self.coef), group=max(len(self.coef), 1))

    def block(
        self,
        start: int,
        stop: int,
        out: np.ndarray | None = None,
        group: int = 8,
        work: dict[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Delta ``(stop - start, point)`` of draws ``start`` to ``stop`` (float64 or ``out``).

        Computed in ``out``'s dtype. BLAS's result for a row depends on the shape of the
        product it is in, so the products run on fixed groups of ``group`` draws and a block
        computes every group it touches whole: blocks of any size give the same rows for the
        same ``group``. Blocks on several threads call it with BLAS on one thread
        (`threadpoolctl`): its result may depend on its threads. The continuations are per
        draw, so they are computed for the whole block at once, in the arrays of ``work`` (a
        dict the caller keeps per thread and passes to every block) where one is given.
        """
        n_point = len(self.design)
        out = np.empty((stop - start, n_point)) if out is None else out
        dtype = out.dtype
        design = self.design.T.astype(dtype)
        for lo in range(start - start % group, stop, group):
            hi = min(lo + group, len(self.coef))
            coef = self.coef[lo:hi].astype(dtype)
            a, b = max(lo, start), min(hi, stop)
            if (a, b) == (lo, hi):
                np.matmul(coef, design, out=out[lo - start : hi - start])
            else:
                out[a - start : b - start] = (coef @ design)[a - lo : b - lo]
        if self.normals and stop > start:
            self._continue(start, stop, out, {} if work is None else work)
        return out

    def _continue(
        self, start: int, stop: int, out: np.ndarray, work: dict[str, np.ndarray]
    ) -> None:
        """Add the walks' continuations beyond the fitted range to ``out`` (draws by point).

        Each side's points are in order of distance, so a walk's path there is the prefix sum
        of its scaled normals; it is computed with the points along the first axis, where
        NumPy adds whole rows of draws at a time.
        """
        dtype = out.dtype
        rows = stop - start
        scale = self.scale[start:stop].astype(dtype)
        z = _normals(
            self.state,
            start * self.normals,
            (rows, self.normals),
            dtype,
            _buffer(work, "normals", (rows, 2, self.normals // 2), np.float32),
        )
        beyond = sum(points.size for points, _ in self.sides)
        first = 0
        for points, steps in self.sides:
            if not points.size:
                continue
            path = _buffer(work, "path", (points.size, rows), dtype)
            for walk in range(scale.shape[1]):  # the level walk's normals first
                cols = slice(first + walk * beyond, first + walk * beyond + points.size)
                part = _prefix_sum(z[:, cols].T, steps.astype(dtype), work)
                part *= scale[:, walk]
                if walk:  # the tilt walk's delta is per unit of r
                    part *= self.tilt[points].astype(dtype)[:, None]
                    path += part
                else:
                    path[...] = part
            first += points.size
            here = np.take(
                out, points, axis=1, out=_buffer(work, "here", (rows, points.size), dtype)
            )
            here += path.T
            out[:, points] = here


def _buffer(
    work: dict[str, np.ndarray], name: str, shape: tuple[int, ...], dtype: Any
) -> np.ndarray:
    """An array of ``shape`` over ``work[name]``, which grows as needed and is kept there.

    Fresh temporaries of a block's size cost a page fault every 4 KiB on each call.
    """
    size = int(np.prod(shape))
    held = work.get(name)
    if held is None or held.dtype != dtype or held.size < size:
        held = work[name] = np.empty(size, dtype)
    return held[:size].reshape(shape)


def _prefix_sum(x: np.ndarray, weights: np.ndarray, work: dict[str, np.ndarray]) -> np.ndarray:
    """Cumulative sums along the first axis of ``x * weights[:, None]``, in ``work``.

    NumPy's ``cumsum`` adds one element at a time; here rows of ``x`` are added whole, within
    chunks of ``_SCAN`` rows and then across the chunks' totals.
    """
    n = len(x)
    chunks = -(-n // _SCAN)
    sums = _buffer(work, "sums", (chunks * _SCAN, *x.shape[1:]), x.dtype)
    np.multiply(x, weights[:, None], out=sums[:n])
    sums[n:] = 0
    view = sums.reshape(chunks, _SCAN, *x.shape[1:])
    for row in range(1, _SCAN):
        view[:, row] += view[:, row - 1]
    totals = view[:, -1].copy()
    for chunk in range(1, chunks):
        totals[chunk] += totals[chunk - 1]
    view[1:] += totals[:-1, None]
    return sums[:n]


#: rows per chunk of `_prefix_sum`
_SCAN = 32


def _normals(
    state: Mapping[str, Any],
    start: int,
    shape: tuple[int, int],
    dtype: Any,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Standard normals at flat positions ``start`` onwards of the stream of ``state``.

    Box-Muller on float32 uniforms (two per 64-bit output of PCG64, whose ``advance`` jumps to
    the block's first): each row's first half of uniforms gives the radii, its second half the
    angles, and the normals are the cosines then the sines. Cheap, vectorised and drawn from
    any position; float32 uniforms bound |z| by 5.8. ``out``: a float32 array of shape
    ``(rows, 2, normals // 2)`` to draw into.
    """
    bits = np.random.PCG64()
    bits.state = dict(state)
    bits.advance(start // 2)  # start is even: a row holds an even number of normals
    gen = np.random.Generator(bits)
    rows, half = shape[0], shape[1] // 2
    out = np.empty((rows, 2, half), np.float32) if out is None else out
    # a few rows at a time, in place: the temporaries stay small and in the CPU's cache
    step = max(1, _NORMALS_CHUNK // half)
    for first in range(0, rows, step):
        u = out[first : first + step]
        gen.random(dtype=np.float32, out=u)
        radius = np.log1p(-u[:, 0])
        radius *= np.float32(-2.0)
        np.sqrt(radius, out=radius)
        angle = u[:, 1]
        angle *= np.float32(2.0 * np.pi)
        np.multiply(radius, np.cos(angle), out=u[:, 0])
        np.sin(angle, out=angle)
        angle *= radius
    return out.reshape(shape).astype(dtype, copy=False)


#: uniform pairs per step of `_normals`
_NORMALS_CHUNK = 1 << 15


def misfit_at(
    spec: Misfit,
    coords: MisfitCoords,
    posterior: Mapping[str, np.ndarray],
    columns: Mapping[str, np.ndarray],
    rng: np.random.Generator,
    jac: np.ndarray | None = None,
) -> MisfitAt:
    """The misfit of the draws at new points, to compute by blocks of draws (`MisfitAt`).

    As `misfit_draws_at`. ``rng`` (PCG64) moves past the normals that the continuations use.
    """
    if not isinstance(rng.bit_generator, np.random.PCG64):
        raise TypeError(f"the misfit's stream must be a PCG64 generator; received {rng!r}.")
    t, r = coords.scaled(columns)
    weights = _interp_weights_np(t, spec)
    n_draw = len(posterior["misfit_level"])
    on = np.asarray(posterior.get("misfit_on", np.ones(n_draw)), np.float64).reshape(n_draw, 1)
    names = ("level", "tilt") if coords.tilt else ("level",)
    coef = [np.asarray(posterior[f"misfit_{n}_knots"], np.float64) for n in names]
    design = [weights, weights * r[:, None]][: len(names)]
    if jac is not None and "misfit_shift" in posterior:
        coef.append(np.asarray(posterior["misfit_shift"], np.float64).reshape(n_draw, -1))
        design.append(-np.asarray(jac, np.float64))
    scale = np.stack([np.asarray(posterior[f"misfit_{n}"], np.float64) for n in names], axis=1)
    sides = []
    for side in (1.0, -1.0):
        dist = np.maximum(side * t - 1.0, 0.0) * coords.half  # decades beyond the end
        points = np.flatnonzero(dist > 0)
        points = points[np.argsort(dist[points], kind="stable")]
        sides.append((points, np.sqrt(np.diff(dist[points], prepend=0.0))))
    count = len(names) * sum(p.size for p, _ in sides)
    count += count % 2
    state = rng.bit_generator.state
    rng.bit_generator.advance(n_draw * count // 2)
    return MisfitAt(
        np.concatenate(coef, axis=1) * on,
        np.concatenate(design, axis=1),
        scale * on,
        r if coords.tilt else None,
        tuple(sides),
        state,
        count,
    )


def misfit_draws_at(
    spec: Misfit,
    coords: MisfitCoords,
    posterior: Mapping[str, np.ndarray],
    columns: Mapping[str, np.ndarray],
    rng: np.random.Generator,
    jac: np.ndarray | None = None,
) -> np.ndarray:
    """Draws of delta at new points: ``(draw, point)``, float64.

    Inside the fitted range: the walks at each posterior draw, interpolated. Beyond it: each
    walk continues as Brownian motion from its end knot along the points in order of distance
    (so points at the same ``u`` share the same delta, and further points carry the nearer
    ones' increments), with normals from ``rng`` (a PCG64 generator; `misfit_at`).
    ``posterior`` holds flattened draws of ``misfit_level``, ``misfit_level_knots``
    ``(draw, knots)`` and, with tilt, ``misfit_tilt`` and ``misfit_tilt_knots``; with
    ``p_exact > 0``, ``misfit_on`` (0 where the draw is the exact law) multiplies delta. With
    ``jac`` (the law's Jacobian at the points, at ``coords.anchor``) and ``misfit_shift`` in
    ``posterior``, the orthogonalised misfit ``delta - jac @ shift`` (`orthogonal`).
    """
    return misfit_at(spec, coords, posterior, columns, rng, jac).whole()


def draw_indicator(
    samples: Mapping[str, np.ndarray], seed: int, *index: int
) -> dict[str, np.ndarray]:
    """``misfit_on`` for draws that carry ``misfit_weight``: 1 with that probability, else 0.

    Drawn on the host from ``seed`` (the same seed, the same indicators; ``index`` selects an
    independent copy of the stream, one per curve of ``fit_many``); other draws are returned
    unchanged.
    """
    if "misfit_weight" not in samples:
        return dict(samples)
    weight = np.asarray(samples["misfit_weight"])
    u = streams.rng(seed, "misfit_indicator", *index).uniform(size=weight.shape)
    return {**samples, "misfit_on": (u < weight).astype(weight.dtype)}

"""Compute-optimal allocation: ``compute_optimal(fit, compute) -> Allocation``.

For each posterior draw and each compute budget C the allocation splits C = k N D (k FLOP per
parameter per token, 6 by default) into the model size N and the number of tokens D that
minimise the law's loss. The Chinchilla law has a closed form; every other law of N and D
(Kaplan's, the data-constrained law at a given budget of unique tokens, a registered law) is
minimised numerically, vectorised over draws and budgets in JAX. `compute_for_loss` inverts the
compute-optimal frontier: the posterior of the compute needed to reach a target loss.
"""

from __future__ import annotations

import functools
import html
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bayescale import options as opt
from bayescale.analysis.common import (
    group_of,
    interval_probs,
    posterior_params,
    quantile_name,
    split_over_devices,
    warn_extrapolation,
)
from bayescale.errors import ConvergenceWarning, OptionError, find_stack_level

if TYPE_CHECKING:
    from bayescale.inference.fit import Fit
    from bayescale.model.laws import Law

__all__ = [
    "Allocation",
    "ComputeForLoss",
    "compute_for_loss",
    "compute_optimal",
    "ALLOCATION_METHODS",
]

ALLOCATION_METHODS = ("auto", "closed_form", "numerical")
_CHINCHILLA_PARAMS = frozenset({"E", "A", "B", "alpha", "beta"})
_ND = ("n_params", "n_tokens")
_GRID_POINTS = 32  # coarse grid over log N before the bisection (spacing 0.45 in log N)
_BISECTIONS = 36  # halvings of the bracketing grid interval: 0.9 * 2^-36 = 1.3e-11 in log N
_OUTER_BISECTIONS = 48  # halvings of log C in compute_for_loss: 69 * 2^-48 = 2.5e-13
_HALF_DECADE = 0.5 * float(np.log(10.0))
_FLAT = 1e-6  # rise of log loss below which N_opt is not identified (one part per million)


# ------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Allocation:
    """Posterior of the compute-optimal allocation at each budget.

    Attributes
    ----------
    draws : xarray.Dataset
        Variables ``n_params`` (N_opt), ``n_tokens`` (D_opt), ``tokens_per_param`` (D_opt /
        N_opt) and ``loss`` (the law's loss at the optimum, without noise) over dims ``chain,
        draw, budget``; coordinate ``compute`` (FLOP) on ``budget``. NaN where the numerical
        optimum left its search bracket or is not identified (a `ConvergenceWarning` says so).
    exponents : xarray.Dataset
        Variables ``a`` and ``b`` over ``chain, draw``: N_opt ∝ C^a, D_opt ∝ C^b.
    method : str
        ``"closed_form"`` or ``"numerical"``.
    flops_per_param_token : float
        k in C = k N D.
    """

    draws: Any
    exponents: Any
    method: str
    flops_per_param_token: float

    @property
    def compute(self) -> np.ndarray:
        """The budgets C in FLOP."""
        return np.asarray(self.draws["compute"].values, dtype=np.float64)

    def summary(self, ci_prob: float = 0.9) -> pd.DataFrame:
        """One row per budget: median and equal-tailed interval of each quantity.

        Parameters
        ----------
        ci_prob : float, default 0.9
            Probability mass of the interval.

        Returns
        -------
        DataFrame
            Index ``budget``; columns ``compute`` and, for each of ``n_params``, ``n_tokens``,
            ``tokens_per_param`` and ``loss``: ``<name>_median``, ``<name>_q<lo>``,
            ``<name>_q<hi>`` (for example ``n_params_q5`` and ``n_params_q95``).
        """
        lo, hi = interval_probs(ci_prob)
        table = pd.DataFrame({"compute": self.compute})
        for name in ("n_params", "n_tokens", "tokens_per_param", "loss"):
            flat = _flat(self.draws[name].values)
            with warnings.catch_warnings():  # budgets without an identified optimum: all NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                q = np.nanquantile(flat, [0.5, lo, hi], axis=0)
            table[f"{name}_median"] = q[0]
            table[f"{name}_{quantile_name(lo)}"] = q[1]
            table[f"{name}_{quantile_name(hi)}"] = q[2]
        table.index.name = "budget"
        return table

    def exponents_summary(self, ci_prob: float = 0.9) -> pd.DataFrame:
        """Rows ``a`` and ``b``: mean, sd, median and equal-tailed interval."""
        lo, hi = interval_probs(ci_prob)
        rows = {}
        for name in ("a", "b"):
            v = self.exponents[name].values.reshape(-1)
            v = v[np.isfinite(v)]  # NaN where fewer than two budgets have an optimum
            if v.size == 0:
                rows[name] = dict.fromkeys(
                    ("mean", "sd", "median", quantile_name(lo), quantile_name(hi))
                )
                continue
            rows[name] = {
                "mean": v.mean(),
                "sd": v.std(ddof=1) if v.size > 1 else np.nan,
                "median": np.median(v),
                quantile_name(lo): np.quantile(v, lo),
                quantile_name(hi): np.quantile(v, hi),
            }
        table = pd.DataFrame.from_dict(rows, orient="index").astype(np.float64)
        table.index.name = "exponent"
        return table

    def __repr__(self) -> str:
        sizes = self.draws.sizes
        n_draws = sizes["chain"] * sizes["draw"]
        ex = self.exponents_summary()
        a, b = ex.loc["a", "median"], ex.loc["b", "median"]
        n_nan = int(np.isnan(self.draws["n_params"].values).sum())
        tail = f"\n  WARNING: {n_nan} optima not found or not identified (NaN)" if n_nan else ""
        return (
            f"Allocation(law={self.draws.attrs.get('law')!r}, method={self.method!r}, "
            f"budgets={sizes['budget']}, draws={n_draws}, k={self.flops_per_param_token:g})\n"
            f"  exponents (median): a={a:.4g}, b={b:.4g}{tail}"
        )

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(repr(self))}</pre>" + self.summary().to_html(
            float_format=lambda x: f"{x:.4g}"
        )


@dataclass(frozen=True)
class ComputeForLoss:
    r"""Posterior of the compute needed to reach a target loss on the compute-optimal frontier.

    Attributes
    ----------
    draws : xarray.Dataset
        Variables ``compute`` (FLOP), ``n_params`` and ``n_tokens`` (the allocation at that
        compute) over ``chain, draw``; ``inf`` where the target is unreachable.
    target : float
        The target loss.
    """

    draws: Any
    target: float

    @property
    def prob_unreachable(self) -> float:
        """Posterior probability that no compute reaches the target (for example target <= E)."""
        return float(np.mean(~np.isfinite(self.draws["compute"].values)))

    def summary(self, ci_prob: float = 0.9) -> pd.DataFrame:
        """Rows ``compute``, ``n_params``, ``n_tokens``: median and equal-tailed interval.

        Unreachable draws count as ``inf``, so an upper quantile is ``inf`` when more than its
        tail probability is unreachable. The column ``prob_unreachable`` repeats the
        probability on each row.
        """
        lo, hi = interval_probs(ci_prob)
        rows = {}
        for name in ("compute", "n_params", "n_tokens"):
            v = self.draws[name].values.reshape(-1)
            q = np.quantile(v, [0.5, lo, hi], method="inverted_cdf")
            rows[name] = {"median": q[0], quantile_name(lo): q[1], quantile_name(hi): q[2]}
        table = pd.DataFrame.from_dict(rows, orient="index")
        table["prob_unreachable"] = self.prob_unreachable
        table.index.name = "quantity"
        return table

    def __repr__(self) -> str:
        med = float(np.quantile(self.draws["compute"].values, 0.5, method="inverted_cdf"))
        return (
            f"ComputeForLoss(target={self.target:g}, median compute={med:.3g} FLOP, "
            f"prob_unreachable={self.prob_unreachable:.3g})"
        )

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(repr(self))}</pre>" + self.summary().to_html(
            float_format=lambda x: f"{x:.4g}"
        )


# ------------------------------------------------------------------------------ the verbs


def compute_optimal(
    fit: Fit,
    compute: float | np.ndarray | list[float],
    *,
    flops_per_param_token: float = 6.0,
    unique_tokens: float | np.ndarray | None = None,
    method: str = "auto",
    tokens_per_param_range: tuple[float, float] = (1e-4, 1e8),
    warn: bool = True,
    group_label: str | None = None,
    group: str | None = None,
) -> Allocation:
    r"""Posterior of the compute-optimal model size and token count at each compute budget.

    Parameters
    ----------
    fit : Fit
        A fit of a law of ``n_params`` and ``n_tokens`` (and ``unique_tokens`` for the
        data-constrained law), by any method.
    compute : float or array of float
        Compute budgets C in FLOP (positive, finite).
    flops_per_param_token : float, default 6
        k in C = k N D (6: forward and backward pass of a dense transformer).
    unique_tokens : float or array, optional
        Budget of unique tokens U (one value, or one per budget). Required by laws with an
        ``unique_tokens`` input (``data_constrained``); rejected by the others.
    method : {"auto", "closed_form", "numerical"}, default "auto"
        ``"closed_form"`` is available for the Chinchilla law only; ``"auto"`` uses it there
        and the numerical optimiser elsewhere.
    tokens_per_param_range : (float, float), default (1e-4, 1e8)
        Search bracket of the numerical optimiser, in tokens per parameter D/N.
    warn : bool, default True
        Emit an `ExtrapolationWarning` for budgets outside the compute range of the fitted
        runs (the rule of `bayescale.analysis.forecast.forecast`).
    group_label : str, optional
        For a grouped fit (``fit(..., group=<column>)``): the curve, by its label; None (the
        default) is a **new group** drawn from the population (`bayescale.inference.fit.group_fit`).
        Must be None for a fit without groups.
    group : str, optional
        Deprecated name of ``group_label`` (``group`` names a column in every verb).

    Returns
    -------
    Allocation
        Draws over ``chain, draw, budget`` and exponents a, b over ``chain, draw``.

    Raises
    ------
    ValueError
        If the law has no ``n_params`` and ``n_tokens``, the budgets are not positive and
        finite, ``method`` is unknown or not available for the law, or ``unique_tokens`` is
        missing or superfluous.

    Warns
    -----
    ExtrapolationWarning
        For budgets outside the compute range of the fitted runs: how many, and by how many
        decades.
    ConvergenceWarning
        If a numerical optimum lies at the edge of ``tokens_per_param_range`` (those entries
        are NaN), or the loss is flat in N there so that N_opt is not identified (N, D NaN;
        the loss kept): the data-constrained law at budgets far beyond its unique data.

    Notes
    -----
    With D = C / (k N), the Chinchilla law L = E + A N^-alpha + B D^-beta is minimised at

    .. math::

        N_{opt} = G (C/k)^a, \quad D_{opt} = G^{-1} (C/k)^b, \quad
        G = \left(\frac{\alpha A}{\beta B}\right)^{1/(\alpha+\beta)}, \quad
        a = \frac{\beta}{\alpha+\beta}, \quad b = \frac{\alpha}{\alpha+\beta}.

    For other laws the loss is minimised over x = log N at fixed C per draw and budget: a grid
    of 32 points over the bracket, then 36 bisections of the sign of dL/dx in the grid
    interval around the best point (exact for the unimodal profiles of these laws; float64).
    Where the loss rises by less than 1e-6 (relative) half a decade of N to either side, the
    optimum is a plateau and N_opt is reported as NaN.
    The exponents are the least-squares slopes of log N_opt and log D_opt on log C over the
    budgets (over C / sqrt(10), C, C sqrt(10) when a single budget is given); b = 1 - a.

    References
    ----------
    Hoffmann et al. (2022), Training Compute-Optimal Large Language Models,
    doi:10.48550/arXiv.2203.15556, eq. (4).
    Besiroglu et al. (2024), Chinchilla Scaling: A replication attempt,
    doi:10.48550/arXiv.2404.10102.

    Examples
    --------
    >>> import bayescale
    >>> from bayescale.analysis.allocate import compute_optimal
    >>> fit = bayescale.fit(bayescale.simulate("chinchilla", seed=1), method="huber")
    >>> alloc = compute_optimal(fit, [1e22, 1e23], warn=False)  # the runs reach 3e21 FLOP
    >>> round(float(alloc.exponents["a"].median()), 1)
    0.5
    """
    fit = group_of(fit, group_label, group, "compute_optimal")
    law = fit.law
    k = opt.positive(flops_per_param_token, "flops_per_param_token", example=6)
    warn = opt.flag(warn, "warn")
    budgets = _budgets(compute)
    t_range = _t_range(tokens_per_param_range)
    method = _resolve_method(law, method)
    log_u = _unique_tokens(law, unique_tokens, budgets.size)
    table = fit.data.table
    if warn and "compute" in table:
        observed = {"compute": (float(table["compute"].min()), float(table["compute"].max()))}
        warn_extrapolation(
            pd.DataFrame({"compute": budgets}),
            observed,
            "compute_optimal",
            "pass warn=False where that is intended.",
            unit="budget",
        )
    params = posterior_params(fit)
    shape = next(iter(params.values())).shape  # (chain, draw)
    flat = {name: v.reshape(-1, 1) for name, v in params.items()}
    log_ck = np.log(budgets / k)
    if method == "closed_form":
        log_n, log_loss = _chinchilla_optimum(flat, log_ck)
        a = flat["beta"][:, 0] / (flat["alpha"][:, 0] + flat["beta"][:, 0])
    else:
        log_n, log_loss, edge, plateau = _numerical_optimum(law, flat, log_ck, log_u, t_range)
        _warn_optimum(edge, plateau, tokens_per_param_range)
        if budgets.size >= 2 and np.ptp(log_ck) > 0:
            a = _slopes(log_ck, log_n)
        else:
            side = log_ck[0] + np.array([-0.5, 0.0, 0.5]) * np.log(10.0)
            side_u = None if log_u is None else np.repeat(log_u[:1], 3)
            a = _slopes(side, _numerical_optimum(law, flat, side, side_u, t_range)[0])
    log_d = log_ck - log_n
    return _allocation(
        shape, budgets, log_n, log_d, log_loss, a, method, k, law.name, unique_tokens
    )


def compute_for_loss(
    fit: Fit,
    target: float,
    *,
    flops_per_param_token: float = 6.0,
    unique_tokens: float | None = None,
    method: str = "auto",
    compute_range: tuple[float, float] = (1e10, 1e40),
    tokens_per_param_range: tuple[float, float] = (1e-4, 1e8),
) -> ComputeForLoss:
    r"""Posterior of the compute needed to reach a target loss, training compute-optimally.

    Parameters
    ----------
    fit : Fit
        A fit of a law of ``n_params`` and ``n_tokens``.
    target : float
        Target loss (positive, finite).
    flops_per_param_token : float, default 6
        k in C = k N D.
    unique_tokens : float, optional
        Budget of unique tokens (data-constrained law only).
    method : {"auto", "closed_form", "numerical"}, default "auto"
        As in `compute_optimal`.
    compute_range : (float, float), default (1e10, 1e40)
        Search range of the numerical root (FLOP). A target not reached by
        ``compute_range[1]`` counts as unreachable; one reached below ``compute_range[0]`` gives
        NaN with a `ConvergenceWarning`.
    tokens_per_param_range : (float, float), default (1e-4, 1e8)
        Search bracket of the inner allocation.

    Returns
    -------
    ComputeForLoss
        Draws of the compute (``inf`` when unreachable) with the allocation there, and
        ``prob_unreachable``.

    Raises
    ------
    ValueError
        If the target is not positive and finite, or as in `compute_optimal`.

    Notes
    -----
    On the compute-optimal frontier the Chinchilla loss is

    .. math::

        L^*(C) = E + K (C/k)^{-\gamma}, \quad \gamma = \frac{\alpha\beta}{\alpha+\beta},
        \quad K = A G^{-\alpha} \frac{\alpha+\beta}{\beta},

    (at the optimum alpha A N^-alpha = beta B D^-beta), so C = k ((L - E)/K)^(-1/gamma),
    unreachable when L <= E. Other laws: L*(C) decreases in C; its root is found by bisection
    of log C (48 halvings) around the numerical optimiser of `compute_optimal`.

    Examples
    --------
    >>> import bayescale
    >>> from bayescale.analysis.allocate import compute_for_loss
    >>> fit = bayescale.fit(bayescale.simulate("chinchilla", seed=1), method="huber")
    >>> compute_for_loss(fit, 1.5).prob_unreachable  # below E = 1.8
    1.0
    """
    law = fit.law
    k = opt.positive(flops_per_param_token, "flops_per_param_token", example=6)
    target = opt.positive(target, "target", example=2.0)
    c_lo, c_hi = _ordered_pair(compute_range, "compute_range")
    t_range = _t_range(tokens_per_param_range)
    method = _resolve_method(law, method)
    log_u = _unique_tokens(law, unique_tokens, 1)
    params = posterior_params(fit)
    shape = next(iter(params.values())).shape
    flat = {name: v.reshape(-1) for name, v in params.items()}
    if method == "closed_form":
        alpha, beta = flat["alpha"], flat["beta"]
        log_g = (np.log(alpha * flat["A"]) - np.log(beta * flat["B"])) / (alpha + beta)
        gamma = alpha * beta / (alpha + beta)
        log_k = np.log(flat["A"]) - alpha * log_g + np.log((alpha + beta) / beta)
        excess = target - flat["E"]
        with np.errstate(divide="ignore", invalid="ignore"):
            log_ck = np.where(excess > 0, -(np.log(excess) - log_k) / gamma, np.inf)
            log_n = np.where(np.isfinite(log_ck), log_g + beta / (alpha + beta) * log_ck, np.inf)
    else:
        log_ck, log_n, low = _numerical_target(
            law, flat, np.log(target), log_u, np.log(c_lo / k), np.log(c_hi / k), t_range
        )
        if low.any():
            warnings.warn(
                f"the target loss {target:g} is reached below compute_range[0] = {c_lo:g} FLOP "
                f"for {int(low.sum())} of {low.size} draws (set to NaN). Pass a smaller "
                "compute_range=(low, high).",
                ConvergenceWarning,
                stacklevel=find_stack_level(),
            )
    with np.errstate(invalid="ignore", over="ignore"):
        compute = np.exp(log_ck) * k
        n_params = np.exp(log_n)
        n_tokens = np.where(np.isposinf(log_ck), np.inf, np.exp(log_ck - log_n))
    import xarray as xr

    dims = ("chain", "draw")
    draws = xr.Dataset(
        {
            "compute": (dims, compute.reshape(shape)),
            "n_params": (dims, n_params.reshape(shape)),
            "n_tokens": (dims, np.asarray(n_tokens).reshape(shape)),
        },
        coords={"chain": np.arange(shape[0]), "draw": np.arange(shape[1])},
        attrs={"law": law.name, "method": method, "flops_per_param_token": k},
    )
    return ComputeForLoss(draws, target)


# ------------------------------------------------------------------------------ validation


def _ordered_pair(value: Any, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise OptionError(f"{name} must be a pair (low, high); received {value!r}.") from None
    if not (0 < lo < hi < np.inf):
        raise OptionError(
            f"{name} must satisfy 0 < low < high < inf; received {value!r}. "
            f"Pass {name}=(low, high)."
        )
    return lo, hi


def _t_range(value: Any) -> tuple[float, float]:
    return _ordered_pair(value, "tokens_per_param_range")


def _budgets(compute: Any) -> np.ndarray:
    try:
        budgets = np.atleast_1d(np.asarray(compute, dtype=np.float64))
    except (TypeError, ValueError):
        raise OptionError(
            f"compute must be a number or a 1-D array of numbers (FLOP); received {compute!r}."
        ) from None
    if budgets.ndim != 1 or budgets.size == 0:
        raise OptionError(
            f"compute must be a number or a non-empty 1-D array; received shape {budgets.shape}."
        )
    bad = np.flatnonzero(~(np.isfinite(budgets) & (budgets > 0)))
    if bad.size:
        raise OptionError(
            f"compute must be positive and finite (FLOP); {bad.size} budgets are not "
            f"(positions {bad[:8].tolist()}, for example {budgets[bad[0]]!r})."
        )
    return budgets


def _is_chinchilla(law: Law) -> bool:
    return (
        law.name == "chinchilla"
        and set(law.param_names) == _CHINCHILLA_PARAMS
        and set(law.variables) == set(_ND)
    )


def _resolve_method(law: Law, method: str) -> str:
    if method not in ALLOCATION_METHODS:
        raise OptionError(f"unknown method {method!r}. Available: {', '.join(ALLOCATION_METHODS)}.")
    extra = set(law.variables) - {*_ND, "unique_tokens"}
    if not set(_ND) <= set(law.variables) or extra:
        raise OptionError(
            f"law {law.name!r} has inputs {list(law.variables)}; a compute-optimal allocation "
            "needs a law of n_params and n_tokens (and optionally unique_tokens), for example "
            "'chinchilla', 'kaplan' or 'data_constrained'."
        )
    if method == "closed_form" and not _is_chinchilla(law):
        raise OptionError(
            f"method='closed_form' is available for the Chinchilla law only; the law is "
            f"{law.name!r}. Use method='auto' or 'numerical'."
        )
    if method == "auto":
        return "closed_form" if _is_chinchilla(law) else "numerical"
    return method


def _unique_tokens(law: Law, unique_tokens: Any, n_budgets: int) -> np.ndarray | None:
    needs = "unique_tokens" in law.variables
    if needs and unique_tokens is None:
        raise OptionError(
            f"law {law.name!r} needs a budget of unique tokens; pass unique_tokens=<U> (one "
            "value, or one per budget). unique_tokens=<the tokens> means no repetition."
        )
    if not needs:
        if unique_tokens is not None:
            raise OptionError(
                f"law {law.name!r} does not use unique_tokens; received {unique_tokens!r}. "
                "Drop the argument."
            )
        return None
    values = np.atleast_1d(np.asarray(unique_tokens, dtype=np.float64))
    if values.ndim != 1 or values.size not in (1, n_budgets):
        raise OptionError(
            f"unique_tokens must be one value or one per budget ({n_budgets}); received "
            f"shape {values.shape}."
        )
    if not np.all(np.isfinite(values) & (values > 0)):
        raise OptionError(f"unique_tokens must be positive and finite; received {values!r}.")
    return np.log(np.broadcast_to(values, (n_budgets,)).copy())


def _flat(values: np.ndarray) -> np.ndarray:
    """``(chain, draw, ...)`` -> ``(chain * draw, ...)``."""
    return values.reshape(-1, *values.shape[2:])


# ------------------------------------------------------------------------------ the maths


def _chinchilla_optimum(p: Mapping[str, np.ndarray], log_ck: np.ndarray) -> tuple[Any, Any]:
    """Closed form in float64: log N_opt and log loss, shape ``(sample, budget)``."""
    alpha, beta = p["alpha"], p["beta"]
    log_g = (np.log(alpha * p["A"]) - np.log(beta * p["B"])) / (alpha + beta)
    log_n = log_g + beta / (alpha + beta) * log_ck
    log_d = log_ck - log_n
    terms = np.stack(
        np.broadcast_arrays(
            np.log(p["E"]), np.log(p["A"]) - alpha * log_n, np.log(p["B"]) - beta * log_d
        )
    )
    peak = terms.max(axis=0)
    log_loss = peak + np.log(np.exp(terms - peak).sum(axis=0))
    return log_n, log_loss


def _optimise(
    law: Law, params: Mapping[str, Any], log_ck: Any, log_u: Any, log_t_lo: Any, log_t_hi: Any
) -> tuple[Any, Any, Any]:
    """Minimise the law over x = log N at fixed log(C/k): one draw, one budget (pure JAX).

    Returns x*, the log loss there, whether the grid minimum sat on the bracket's edge, and
    whether the loss is flat (the optimum is not identified).
    Written for scalars and vmapped over draws and budgets, so that the law is evaluated
    elementwise (faster on CPU than broadcasting it over 2-D arrays).
    """
    import jax
    import jax.numpy as jnp

    def f(x: Any) -> Any:
        logx = {"n_params": x, "n_tokens": log_ck - x}
        if log_u is not None:
            logx["unique_tokens"] = log_u
        return law.fn(params, logx)

    # N = sqrt(C / (k T)) for tokens per parameter T
    x_lo = 0.5 * (log_ck - log_t_hi)
    step = 0.5 * (log_t_hi - log_t_lo) / (_GRID_POINTS - 1)

    def scan(i: Any, carry: tuple[Any, Any]) -> tuple[Any, Any]:
        best, arg = carry
        value = f(x_lo + i * step)
        value = jnp.where(jnp.isfinite(value), value, jnp.inf)
        better = value < best
        return jnp.where(better, value, best), jnp.where(better, i, arg)

    _, arg = jax.lax.fori_loop(0, _GRID_POINTS, scan, (jnp.inf, 0))
    lo = x_lo + jnp.maximum(arg - 1, 0) * step
    hi = x_lo + jnp.minimum(arg + 1, _GRID_POINTS - 1) * step
    slope = jax.grad(f)

    def halve(_: int, bounds: tuple[Any, Any]) -> tuple[Any, Any]:
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        up = slope(mid) > 0
        return jnp.where(up, lo, mid), jnp.where(up, mid, hi)

    lo, hi = jax.lax.fori_loop(0, _BISECTIONS, halve, (lo, hi))
    x = 0.5 * (lo + hi)
    best = f(x)
    edge = (arg == 0) | (arg == _GRID_POINTS - 1)
    # a plateau: the loss barely rises half a decade of N to one side (saturated data)
    rise = jnp.minimum(f(x - _HALF_DECADE), f(x + _HALF_DECADE)) - best
    return x, best, edge, rise < _FLAT


@functools.lru_cache(maxsize=32)
def _optimum_fn(law: Law) -> Any:
    """Jitted `_optimise` over ``(draw, budget)``: params ``(S,)``, log(C/k) and log U ``(B,)``."""
    import jax

    per_budget = jax.vmap(functools.partial(_optimise, law), in_axes=(None, 0, 0, None, None))
    return jax.jit(jax.vmap(per_budget, in_axes=(0, None, None, None, None)))


def _numerical_optimum(
    law: Law,
    params: Mapping[str, np.ndarray],
    log_ck: np.ndarray,
    log_u: np.ndarray | None,
    t_range: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return log N_opt, log loss and edge and plateau flags, shape ``(sample, budget)``."""
    import jax

    with jax.enable_x64(True):
        draws = {k: np.asarray(v, np.float64).reshape(-1) for k, v in params.items()}
        shared = (
            np.asarray(log_ck, np.float64),
            None if log_u is None else np.asarray(log_u, np.float64),
            np.log(t_range[0]),
            np.log(t_range[1]),
        )
        n = next(iter(draws.values())).size
        work = max(1, 20_000 // max(np.size(log_ck), 1))  # draws per chunk worth a device
        x, loss, edge, flat = split_over_devices(_optimum_fn(law), (draws,), shared, n, work)
    x = np.where(edge | flat, np.nan, x)
    loss = np.where(edge, np.nan, loss)
    return x, loss, edge, flat & ~edge


def _target_search(
    law: Law,
    params: Mapping[str, Any],
    log_target: Any,
    log_u: Any,
    lo: Any,
    hi: Any,
    log_t_lo: Any,
    log_t_hi: Any,
) -> tuple[Any, Any, Any, Any]:
    """Bisection of log(C/k) for L*(C) = target, for one draw (pure JAX)."""
    import jax
    import jax.numpy as jnp

    def loss_at(log_ck: Any) -> tuple[Any, Any]:
        x, loss, _, _ = _optimise(law, params, log_ck, log_u, log_t_lo, log_t_hi)
        return x, loss

    reachable = loss_at(hi)[1] <= log_target
    too_low = loss_at(lo)[1] <= log_target

    def halve(_: int, bounds: tuple[Any, Any]) -> tuple[Any, Any]:
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        reached = loss_at(mid)[1] <= log_target
        return jnp.where(reached, lo, mid), jnp.where(reached, mid, hi)

    lo, hi = jax.lax.fori_loop(0, _OUTER_BISECTIONS, halve, (lo, hi))
    log_ck = hi  # the smallest compute known to reach the target
    x, _ = loss_at(log_ck)
    return log_ck, x, reachable, too_low


@functools.lru_cache(maxsize=32)
def _target_fn(law: Law) -> Any:
    import jax

    search = functools.partial(_target_search, law)
    return jax.jit(jax.vmap(search, in_axes=(0, None, None, None, None, None, None)))


def _numerical_target(
    law: Law,
    params: Mapping[str, np.ndarray],
    log_target: float,
    log_u: np.ndarray | None,
    lo: float,
    hi: float,
    t_range: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return log(C/k) and log N at the target (inf when unreachable, NaN below the range)."""
    import jax

    with jax.enable_x64(True):
        draws = {k: np.asarray(v, np.float64).reshape(-1) for k, v in params.items()}
        shared = (
            np.float64(log_target),
            None if log_u is None else np.float64(log_u[0]),
            np.float64(lo),
            np.float64(hi),
            np.log(t_range[0]),
            np.log(t_range[1]),
        )
        n = next(iter(draws.values())).size
        out = split_over_devices(_target_fn(law), (draws,), shared, n, 500)
        log_ck, x, reachable, too_low = out
    log_ck = np.where(reachable, log_ck, np.inf)
    x = np.where(reachable, x, np.inf)
    log_ck = np.where(too_low, np.nan, log_ck)
    x = np.where(too_low, np.nan, x)
    return log_ck, x, too_low


def _slopes(log_c: np.ndarray, log_n: np.ndarray) -> np.ndarray:
    """Least-squares slope of each row of ``log_n`` on ``log_c``, over its finite entries.

    NaN for rows with fewer than two finite entries.
    """
    ok = np.isfinite(log_n)
    count = ok.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_c = np.where(ok, log_c, 0.0).sum(axis=-1, keepdims=True) / count[..., None]
        mean_n = np.where(ok, log_n, 0.0).sum(axis=-1, keepdims=True) / count[..., None]
        dc = np.where(ok, log_c - mean_c, 0.0)
        dn = np.where(ok, log_n - mean_n, 0.0)
        slope = (dc * dn).sum(axis=-1) / (dc * dc).sum(axis=-1)
    return np.where(count >= 2, slope, np.nan)


def _warn_optimum(edge: np.ndarray, plateau: np.ndarray, t_range: Any) -> None:
    if edge.any():
        warnings.warn(
            f"the numerical optimum lies at the edge of tokens_per_param_range={t_range!r} for "
            f"{int(edge.sum())} of {edge.size} draw-budget pairs (set to NaN); the law may have "
            "no finite optimum there. Widen tokens_per_param_range.",
            ConvergenceWarning,
            stacklevel=find_stack_level(),
        )
    if plateau.any():
        warnings.warn(
            f"the loss is flat in N (within {_FLAT:g} relative over half a decade) for "
            f"{int(plateau.sum())} of {plateau.size} draw-budget pairs: N_opt is not identified "
            "there (set to NaN; the loss is kept). With a small unique_tokens, extra compute "
            "buys nothing: choose smaller budgets or more unique data.",
            ConvergenceWarning,
            stacklevel=find_stack_level(),
        )


def _allocation(
    shape: tuple[int, ...],
    budgets: np.ndarray,
    log_n: np.ndarray,
    log_d: np.ndarray,
    log_loss: np.ndarray,
    a: np.ndarray,
    method: str,
    k: float,
    law: str,
    unique_tokens: Any,
) -> Allocation:
    import xarray as xr

    n_budgets = budgets.size
    full = (*shape, n_budgets)
    dims = ("chain", "draw", "budget")
    coords = {
        "chain": np.arange(shape[0]),
        "draw": np.arange(shape[1]),
        "budget": np.arange(n_budgets),
        "compute": ("budget", budgets),
    }
    attrs: dict[str, Any] = {"law": law, "method": method, "flops_per_param_token": k}
    if unique_tokens is not None:
        attrs["unique_tokens"] = np.broadcast_to(
            np.asarray(unique_tokens, np.float64), (n_budgets,)
        ).tolist()
    draws = xr.Dataset(
        {
            "n_params": (dims, np.exp(log_n).reshape(full)),
            "n_tokens": (dims, np.exp(log_d).reshape(full)),
            "tokens_per_param": (dims, np.exp(log_d - log_n).reshape(full)),
            "loss": (dims, np.exp(log_loss).reshape(full)),
        },
        coords=coords,
        attrs=attrs,
    )
    exponents = xr.Dataset(
        {
            "a": (("chain", "draw"), a.reshape(shape)),
            "b": (("chain", "draw"), 1 - a.reshape(shape)),
        },
        coords={"chain": coords["chain"], "draw": coords["draw"]},
        attrs=attrs,
    )
    return Allocation(draws, exponents, method, k)

r"""Bayesian experiment design: which training run to add next, ``design(fit, candidates, target)``.

A candidate run (N, D) is scored by how much it is expected to narrow the posterior of a
target quantity (the loss at a given N and D, the compute-optimal loss at a budget, or the
compute-optimal model size N_opt at a budget), per FLOP it costs. The expectation is over the
run's posterior predictive, computed by importance re-weighting of the fit's own draws:

1. pick M posterior draws ``j_m`` (stratified over the target's posterior) and simulate the
   candidate's log loss from each: ``y_m = log f(x_c; theta_j) + delta_j(x_c) + sigma_j eps_m``
   (law, the misfit's predictive where the fit has one, and the likelihood's noise);
2. re-weight every other draw s by the likelihood of that outcome,
   ``w_s ∝ p(y_m | theta_s, delta_s(x_c), sigma_s)`` (draw ``j_m`` itself is left out, so that
   the simulated truth is not in the sample that measures it);
3. measure the target's 90% interval under the weights and average over the M outcomes.

With a misfit model, each draw carries one joint realisation of the misfit at every candidate
and at the target (`bayescale.model.misfit.misfit_draws_at`), so a run near the target in scale
informs the target's misfit too, and a run far from it does not.

Re-weighting is exact as the number of draws grows, but a very informative run collapses the
weights onto a few draws: each candidate's effective sample size (Kish, ``1 / sum w^2``) is
reported, and a `ConvergenceWarning` names the chosen runs whose ESS is below ``min_ess``.
Everything is vectorised in JAX over (candidate, outcome, draw).
"""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bayescale import options as opt
from bayescale import streams
from bayescale.analysis.allocate import compute_optimal
from bayescale.analysis.common import interval_probs, require_draws
from bayescale.analysis.predict import predictive
from bayescale.errors import ConvergenceWarning, OptionError, OptionTypeError, warn
from bayescale.inference.driver import progress_bar as new_bar
from bayescale.inference.driver import progress_default
from bayescale.io.data import FLOPS_PER_PARAM_TOKEN, ScalingData, read_points

if TYPE_CHECKING:
    from bayescale.inference.fit import Fit

__all__ = ["Design", "Target", "RANKS", "TARGET_KINDS", "design", "design_grid", "target_draws"]

#: what `design` ranks candidates by
RANKS = ("gain_per_flop", "width")
#: the kinds of target `design` can aim at
TARGET_KINDS = ("loss_at", "optimal_loss", "n_opt")
_ND = ("n_params", "n_tokens")
#: the band of tokens per parameter (D / N) of `design_grid`'s candidates: runs a lab trains,
#: a factor of four below and ten above Chinchilla's 20 tokens per parameter
TOKENS_PER_PARAM = (5.0, 200.0)
#: candidates scored per compiled call (pads the last chunk; memory ~ CHUNK * M * S floats)
CHUNK = 64


# ------------------------------------------------------------------------------ the target


@dataclass(frozen=True)
class Target:
    """What a design should pin down.

    Attributes
    ----------
    kind : {"loss_at", "optimal_loss", "n_opt"}
        ``"loss_at"``: the loss of a run at ``n_params`` and ``n_tokens``; ``"optimal_loss"``:
        the law's loss at the compute-optimal allocation of ``compute`` FLOP; ``"n_opt"``: the
        compute-optimal model size N_opt at ``compute`` FLOP.
    n_params, n_tokens : float
        The run (``"loss_at"`` only; NaN otherwise).
    compute : float
        The budget in FLOP (``6 N D`` for ``"loss_at"``).
    """

    kind: str
    n_params: float = math.nan
    n_tokens: float = math.nan
    compute: float = math.nan

    @classmethod
    def parse(cls, spec: Any) -> Target:
        """A `Target` from a `Target` or a one-key mapping (see `design`)."""
        if isinstance(spec, Target):
            return spec
        example = (
            "Pass target={'loss_at': {'n_params': 7e10, 'n_tokens': 1.4e12}}, "
            "{'optimal_loss': 1e24} or {'n_opt': 1e24} (compute in FLOP)."
        )
        if not isinstance(spec, Mapping) or len(spec) != 1:
            raise OptionTypeError(f"target must be a one-key mapping; received {spec!r}. {example}")
        ((kind, value),) = spec.items()
        if kind not in TARGET_KINDS:
            raise OptionError(
                f"unknown target kind {kind!r}. Available: {', '.join(TARGET_KINDS)}. {example}"
            )
        if kind == "loss_at":
            if not isinstance(value, Mapping):
                raise OptionTypeError(
                    f"target 'loss_at' needs a mapping with n_params and n_tokens (or compute); "
                    f"received {value!r}. {example}"
                )
            v = {k: opt.positive(x, f"target loss_at {k}", example=1e10) for k, x in value.items()}
            n, d, c = v.get("n_params"), v.get("n_tokens"), v.get("compute")
            if d is None and n is not None and c is not None:
                d = c / (FLOPS_PER_PARAM_TOKEN * n)
            if n is None and d is not None and c is not None:
                n = c / (FLOPS_PER_PARAM_TOKEN * d)
            if n is None or d is None:
                raise OptionError(
                    f"target 'loss_at' needs two of n_params, n_tokens and compute; received "
                    f"{sorted(value)}. {example}"
                )
            return cls("loss_at", n, d, FLOPS_PER_PARAM_TOKEN * n * d)
        return cls(kind, compute=opt.positive(value, f"target {kind}", example=1e23))

    def describe(self) -> str:
        """One line: what the target is."""
        if self.kind == "loss_at":
            return f"loss at N={self.n_params:.3g}, D={self.n_tokens:.3g} (C={self.compute:.3g})"
        what = "compute-optimal loss" if self.kind == "optimal_loss" else "N_opt"
        return f"{what} at C={self.compute:.3g} FLOP"


# ------------------------------------------------------------------------------ the result


@dataclass(frozen=True)
class Design:
    """Candidate runs scored by the expected narrowing of a target's posterior, per FLOP.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per candidate (index ``candidate``: its row in the candidates passed), best
        first by ``rank`` (``gain_per_flop`` by default, or ``width``). Columns:
        ``n_params``, ``n_tokens``, ``compute`` (6 N D), ``cost`` (FLOP, or the user's
        unit), ``width`` (the expected width of the target's ``ci_prob`` interval after the
        run), ``width_mcse`` (its Monte Carlo standard error over the simulated outcomes),
        ``rel_width`` (width over the target's current median), ``gain`` (current width
        minus ``width``), ``gain_per_flop`` (gain / cost), ``ess`` (median over outcomes of
        the effective sample size of the weights), ``ess_min`` and ``low_ess`` (``ess <
        min_ess``: too few effective draws to trust the score).
    batch : pandas.DataFrame
        The runs chosen greedily, in order (index ``pick``): the candidate's row, its inputs
        and cost, ``width`` (expected width after this run and the ones before it, each
        conditioned on its simulated outcome), ``cum_cost`` and ``ess``.
    target : Target
        The target.
    current : pandas.Series
        The target's posterior now: ``median``, ``q<lo>``, ``q<hi>``, ``width`` and ``sd``.
    runs : pandas.DataFrame
        The fitted runs (``n_params``, ``n_tokens``, ``compute``), for plots.
    settings : tuple of (str, object)
        ``ci_prob``, ``n_outcomes``, ``n_draws``, ``min_ess``, ``kind``, ``seed``, ``budget``,
        ``rank``, ``goal``.
    """

    table: pd.DataFrame
    batch: pd.DataFrame
    target: Target
    current: pd.Series
    runs: pd.DataFrame
    settings: tuple[tuple[str, Any], ...]

    @property
    def best(self) -> pd.Series:
        """The top row of `table` (the best candidate by ``rank``)."""
        return self.table.iloc[0]

    def summary(self) -> pd.DataFrame:
        """The candidate table (a copy), best first."""
        return self.table.copy()

    def __repr__(self) -> str:
        s = dict(self.settings)
        low = int(self.table["low_ess"].sum())
        picks = ", ".join(f"N={r.n_params:.3g} D={r.n_tokens:.3g}" for r in self.batch.itertuples())
        tail = (
            f"\n  WARNING: {low} of {len(self.table)} candidates have ESS < {s['min_ess']:g}: "
            "their scores rest on few draws (see low_ess; fit more draws, or score a refit)"
            if low
            else "\n  importance weights: ok"
        )
        last = self.batch["width"].iloc[-1] if len(self.batch) else float("nan")
        return (
            f"Design(target={self.target.describe()}, candidates={len(self.table)}, "
            f"draws={s['n_draws']}, outcomes={s['n_outcomes']})\n"
            f"  {s['ci_prob']:g} interval width now {self.current['width']:.4g}, expected "
            f"{last:.4g} after {len(self.batch)} run(s): {picks}{tail}"
        )

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(repr(self))}</pre>" + self.table.head(30).to_html(
            float_format=lambda x: f"{x:.4g}"
        )


# ------------------------------------------------------------------------------ candidates


def design_grid(
    fit: Fit,
    *,
    compute: np.ndarray | list[float] | None = None,
    budgets: int = 10,
    sizes: int = 9,
    spread: float = 1.0,
    above: float = 10.0,
    tokens_per_param: tuple[float, float] | None = TOKENS_PER_PARAM,
    levels: int | None = None,
) -> pd.DataFrame:
    r"""Candidate runs around the current ladder: IsoFLOP budgets, sizes around each optimum.

    Parameters
    ----------
    fit : Fit
        A fit of a law of ``n_params`` and ``n_tokens``.
    compute : array of float, optional
        Budgets (FLOP); default ``budgets`` log-spaced from the smallest fitted run's compute
        to ``above`` times the largest.
    budgets : int, default 10
        Number of budgets when ``compute`` is not given.
    sizes : int, default 9
        Model sizes per budget.
    spread : float, default 1.0
        Half-width, in decades, of the sizes around the posterior-median N_opt of each budget.
    above : float, default 10
        The largest default budget as a multiple of the largest fitted compute.
    tokens_per_param : (float, float) or None, default (5, 200)
        The band of tokens per parameter (D / N) the candidates keep to: at each budget the
        sizes span the part of N_opt ± ``spread`` decades whose D / N lies in the band (the
        whole band where the two do not overlap). ``None`` lifts the limit.
    levels : int, optional
        Deprecated name of ``budgets`` (``levels`` elsewhere means interval probabilities).

    Returns
    -------
    DataFrame
        Columns ``n_params``, ``n_tokens``, ``compute``; ``budgets * sizes`` rows.

    Raises
    ------
    OptionError
        If the budgets, ``sizes``, ``spread`` or ``tokens_per_param`` are invalid.

    Notes
    -----
    A run of N parameters on C FLOP sees :math:`D / N = C / (6 N^2)` tokens per parameter, so
    the band :math:`[r_{lo}, r_{hi}]` bounds the sizes to
    :math:`\sqrt{C / (6 r_{hi})} \le N \le \sqrt{C / (6 r_{lo})}`. Without it, the sizes one
    decade either side of the optimum at a small budget include runs no lab trains (a 1e9
    parameter model on a quarter of a token per parameter): they look informative to the
    design, because they are far from the ladder, but only because they extrapolate the law to
    where nobody will use it. The default band keeps the candidates within a factor of four
    below and ten above Chinchilla's 20 tokens per parameter.
    """
    if levels is not None:  # budgets has a default, so the old name wins when it is given
        budgets = opt.renamed(
            None, levels, verb="design_grid", old="levels", new="budgets",
            why="the number of budgets is now budgets (levels means interval probabilities)",
        )  # fmt: skip
    _require_nd(fit)
    sizes = opt.count(sizes, "sizes")
    if compute is None:
        n_budgets = opt.count(budgets, "budgets")
        above = opt.positive(above, "above", example=10)
        c = 6.0 * fit.data.column("n_params") * fit.data.column("n_tokens")
        budgets = np.geomspace(float(c.min()), float(c.max()) * above, n_budgets)
    else:
        budgets = np.atleast_1d(np.asarray(compute, np.float64))
        if budgets.ndim != 1 or not np.all(np.isfinite(budgets) & (budgets > 0)):
            raise OptionError(f"compute must be positive budgets in FLOP; received {compute!r}.")
    if isinstance(spread, bool) or not isinstance(spread, (int, float)) or not spread >= 0:
        raise OptionError(f"spread must be a number >= 0 (decades); received {spread!r}.")
    band = _band(tokens_per_param)
    alloc = compute_optimal(fit, budgets, warn=False)
    n_opt = np.nanmedian(alloc.draws["n_params"].values.reshape(-1, budgets.size), axis=0)
    rows = []
    for cb, n0 in zip(budgets, n_opt, strict=True):
        if not np.isfinite(n0):
            n0 = math.sqrt(cb / (FLOPS_PER_PARAM_TOKEN * 20.0))  # 20 tokens per parameter
        low, high = n0 / 10**spread, n0 * 10**spread
        if band is not None:
            # N from D / N = C / (6 N^2): the most tokens per parameter is the smallest model
            n_min, n_max = (math.sqrt(cb / (FLOPS_PER_PARAM_TOKEN * r)) for r in band[::-1])
            low, high = max(low, n_min), min(high, n_max)
            if low > high:  # the optimum lies outside the band: span the band
                low, high = n_min, n_max
        for n in np.geomspace(low, high, int(sizes)):
            rows.append(
                {"n_params": n, "n_tokens": cb / (FLOPS_PER_PARAM_TOKEN * n), "compute": cb}
            )
    return pd.DataFrame(rows)


def _band(tokens_per_param: Any) -> tuple[float, float] | None:
    """Validate a ``(low, high)`` band of tokens per parameter (None: no band)."""
    if tokens_per_param is None:
        return None
    try:
        low, high = (float(x) for x in tokens_per_param)
    except (TypeError, ValueError):
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
        raise OptionError(
            "tokens_per_param must be a band (low, high) with 0 < low <= high, or None for no "
            f"band; received {tokens_per_param!r}. For example tokens_per_param=(5, 200)."
        )
    return low, high


def _require_nd(fit: Fit) -> None:
    if set(fit.law.variables) != set(_ND):
        raise OptionError(
            f"design needs a law of n_params and n_tokens; law {fit.law.name!r} has "
            f"{list(fit.law.variables)}. Fit chinchilla, kaplan or your own law of N and D."
        )


def _candidates(fit: Fit, candidates: Any) -> pd.DataFrame:
    if isinstance(candidates, str):
        if candidates != "grid":
            raise OptionError(
                f"candidates must be a DataFrame of runs or 'grid'; received {candidates!r}."
            )
        return design_grid(fit)
    if not isinstance(candidates, (pd.DataFrame, Mapping)):
        raise OptionTypeError(
            f"candidates must be a DataFrame with n_params and n_tokens (or compute), or "
            f"'grid'; received {type(candidates).__name__}. For example "
            "candidates=bs.design_grid(fit)."
        )
    frame = read_points(candidates, _ND, where="candidates")
    frame["compute"] = FLOPS_PER_PARAM_TOKEN * frame["n_params"] * frame["n_tokens"]
    frame.index.name = None
    return frame


def _costs(frame: pd.DataFrame, cost: Any) -> np.ndarray:
    if isinstance(cost, str):
        if cost == "compute":
            return frame["compute"].to_numpy(np.float64)
        if cost not in frame:
            raise OptionError(
                f"cost {cost!r} is neither 'compute' nor a column of the candidates "
                f"{list(frame.columns)}. Pass cost='compute' (6 N D FLOP), a column name, or a "
                "function of the candidates' DataFrame."
            )
        out = pd.to_numeric(frame[cost], errors="coerce").to_numpy(np.float64)
    elif callable(cost):
        out = np.asarray(cost(frame.copy()), np.float64).reshape(-1)
    else:
        raise OptionTypeError(
            f"cost must be 'compute', a column name or a function; received {cost!r}."
        )
    if out.shape != (len(frame),) or not np.all(np.isfinite(out) & (out > 0)):
        raise OptionError(
            f"cost must give one positive, finite cost per candidate ({len(frame)}); received "
            f"{out[:5]!r}..."
        )
    return out


# ------------------------------------------------------------------------------ draws


def target_draws(
    fit: Fit,
    target: Target | Mapping[str, Any],
    *,
    kind: str = "mean",
    seed: int = 0,
    at: pd.DataFrame | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Posterior draws of the target ``(draw,)`` and, with ``at``, of log loss at those runs.

    Both come from the same draws, with one joint realisation of the misfit (where the fit has
    one) at the target and at every run of ``at``, so that their dependence is kept. The log
    loss at ``at`` (``(draw, run)``) is the law's plus the misfit, without noise. ``kind``:
    ``"mean"`` (the law and misfit) or ``"predictive"`` (plus a run's noise; loss targets).
    """
    _require_nd(fit)
    tgt = Target.parse(target)
    draws = require_draws(fit, "design")
    s = len(draws["sigma"])
    rng = streams.rng(seed, "design_target")
    if tgt.kind == "loss_at":
        t_point = (tgt.n_params, tgt.n_tokens)
        value = None
    else:
        alloc = compute_optimal(fit, [tgt.compute], warn=False)
        name = "n_params" if tgt.kind == "n_opt" else "loss"
        value = np.asarray(alloc.draws[name].values, np.float64).reshape(-1)
        n_star = float(np.nanmedian(alloc.draws["n_params"].values))
        t_point = (n_star, tgt.compute / (FLOPS_PER_PARAM_TOKEN * n_star))
    n_all = np.array([t_point[0], *([] if at is None else at["n_params"].to_numpy(np.float64))])
    d_all = np.array([t_point[1], *([] if at is None else at["n_tokens"].to_numpy(np.float64))])
    points = ScalingData(pd.DataFrame({"n_params": n_all, "n_tokens": d_all, "loss": 1.0}))
    pred = predictive(fit, points, rng=rng)
    mu, delta = pred.law, pred.misfit
    if tgt.kind == "loss_at":
        value = np.exp(mu[:, 0] + delta[:, 0])
    elif tgt.kind == "optimal_loss":
        value = value * np.exp(delta[:, 0])  # the misfit at the posterior-median optimum
    if kind == "predictive" and tgt.kind != "n_opt":
        value = value * np.exp(draws["sigma"] * fit.noise.sample(rng, (s,)))
    mu = mu + delta
    return value, (mu[:, 1:] if at is not None else None)


# ------------------------------------------------------------------------------ the verb


def design(
    fit: Fit,
    candidates: pd.DataFrame | Mapping[str, Any] | str,
    target: Target | Mapping[str, Any],
    *,
    cost: str | Callable[[pd.DataFrame], Any] = "compute",
    batch: int = 1,
    budget: float | None = None,
    ci_prob: float = 0.9,
    n_outcomes: int = 32,
    kind: str = "mean",
    min_ess: float = 50.0,
    rank: str = "gain_per_flop",
    goal: float | None = None,
    seed: int = 0,
    progress_bar: bool | None = None,
) -> Design:
    r"""Score candidate runs by the expected narrowing of a target's posterior per FLOP.

    Parameters
    ----------
    fit : Fit
        A NUTS (or MAP) fit of a law of ``n_params`` and ``n_tokens``, with or without misfit.
    candidates : DataFrame, mapping or "grid"
        Candidate runs with ``n_params`` and ``n_tokens`` (or ``compute``); ``"grid"`` for
        `design_grid` ``(fit)``. Never modified.
    target : Target or mapping
        ``{"loss_at": {"n_params": N, "n_tokens": D}}`` (or N and ``compute``),
        ``{"optimal_loss": C}`` or ``{"n_opt": C}`` (C in FLOP).
    cost : "compute", column name or callable, default "compute"
        Cost of each candidate: 6 N D FLOP, a column of the candidates, or a function of the
        candidates' DataFrame returning one positive cost per row.
    batch : int, default 1
        Runs to choose, greedily: each next run is scored conditionally on the simulated
        outcomes of the runs chosen before it (runs trained in parallel).
    budget : float, optional
        Total cost the batch may spend; candidates that no longer fit are skipped.
    ci_prob : float, default 0.9
        Mass of the equal-tailed interval whose width is the criterion.
    n_outcomes : int, default 32
        Simulated outcomes per candidate (the Monte Carlo size of the expectation).
    kind : {"mean", "predictive"}, default "mean"
        For loss targets: the expected loss (law and misfit), or a run's loss with its noise
        (the noise's width cannot shrink, so gains look smaller).
    min_ess : float, default 50
        Effective sample size of the weights below which a score is flagged ``low_ess``.
    rank : {"gain_per_flop", "width"}, default "gain_per_flop"
        What the table is sorted by and the batch picks greedily: the gain per unit of cost,
        or the expected width itself (the most informative run that fits the ``budget``).
        Gain per FLOP favours cheap runs; ``"width"`` with a ``budget`` spends it where a run
        is expected to narrow the target more than a cheaper one.
    goal : float, optional
        A target width (same units as the target). The batch then picks the cheapest run whose
        expected width reaches it, and stops there; while none does, the most informative run
        (smallest expected width). Overrides ``rank`` for the batch, not for the table.
    seed : int, default 0
        Seed of the simulated outcomes.
    progress_bar : bool, optional
        Show the scoring's progress (chunks of candidates, for each run of the batch); default
        in a terminal or a notebook.

    Returns
    -------
    Design

    Raises
    ------
    DataError
        If a candidate lacks n_params/n_tokens or has non-positive values.
    OptionError
        If the target, cost or a setting is invalid, or the law is not a law of N and D.
    FitError
        If the fit has no posterior draws with a noise scale (a Huber fit).

    Warns
    -----
    ConvergenceWarning
        When a chosen run's weights have an ESS below ``min_ess``.

    Notes
    -----
    For candidate c, outcome m drawn from posterior draw :math:`j_m`,

    .. math::

        y_{cm} = \mu_{j_m}(x_c) + \sigma_{j_m}\epsilon_m, \qquad
        w_{cms} \propto p(y_{cm} \mid \mu_s(x_c), \sigma_s)\,[s \ne j_m],

    with :math:`\mu_s` the law plus the misfit at draw s; the score is
    :math:`\bar W_c = M^{-1}\sum_m W(T; w_{cm\cdot})`, the weighted width of the target T's
    interval, and ``gain_per_flop = (W_now - \bar W_c) / cost_c``. The draws :math:`j_m` are
    stratified over T's quantiles, and the same :math:`(j_m, \epsilon_m)` serve every
    candidate (common random numbers: differences between candidates carry less noise than
    each score).

    Examples
    --------
    >>> import bayescale as bs
    >>> fit = bs.fit(bs.simulate("chinchilla", seed=1), method="map")
    >>> d = bs.design(fit, "grid", {"optimal_loss": 1e23})
    >>> d.table.columns[:4].tolist()
    ['n_params', 'n_tokens', 'compute', 'cost']
    """
    seed = opt.seed(seed)
    _require_nd(fit)
    tgt = Target.parse(target)
    batch = opt.count(batch, "batch")
    n_outcomes = opt.count(n_outcomes, "n_outcomes", minimum=2)
    if kind not in ("mean", "predictive"):
        raise OptionError(f"unknown kind {kind!r}. Available: 'mean', 'predictive'.")
    if rank not in RANKS:
        raise OptionError(f"unknown rank {rank!r}. Available: {', '.join(RANKS)}.")
    lo, hi = interval_probs(ci_prob)
    total = math.inf if budget is None else opt.positive(budget, "budget", example=1e21)
    frame = _candidates(fit, candidates)
    costs = _costs(frame, cost)
    goal_ = None if goal is None else opt.positive(goal, "goal", example=0.05)
    value, mu = target_draws(fit, tgt, kind=kind, seed=seed, at=frame)
    sigma = require_draws(fit, "design")["sigma"]
    keep = np.isfinite(value) & np.all(np.isfinite(mu), axis=1)
    if keep.sum() < 10 * n_outcomes:
        raise OptionError(
            f"only {int(keep.sum())} posterior draws give a finite target (of {len(value)}); "
            "the target is not identified by the fit. Choose a nearer target."
        )
    value, mu, sigma = value[keep], mu[keep], sigma[keep]
    s_count = len(value)
    rng = streams.rng(seed, "design_candidates")
    order = np.argsort(value, kind="stable")
    # stratified source draws: one uniformly inside each of M equal-mass strata of T
    edges = np.linspace(0, s_count, n_outcomes + 1)
    pos = np.floor(edges[:-1] + rng.uniform(size=n_outcomes) * np.diff(edges)).astype(int)
    src = order[np.minimum(pos, s_count - 1)]
    eps = fit.noise.sample(rng, (n_outcomes,))
    probs = np.array([lo, 0.5, hi])
    scorer = _Scorer(fit, value, order, sigma, src, eps, probs)

    base = np.zeros((n_outcomes, s_count))
    now = _weighted_stats(value, order, None, probs)
    current = pd.Series(
        {
            "median": now[1],
            f"q{lo * 100:.10g}": now[0],
            f"q{hi * 100:.10g}": now[2],
            "width": now[2] - now[0],
            "sd": float(np.std(value, ddof=1)),
        }
    )
    width_now = float(current["width"])

    show = progress_default() if progress_bar is None else opt.flag(progress_bar, "progress_bar")
    chunks = math.ceil(mu.shape[1] / CHUNK)
    bar = new_bar(chunks * max(int(batch), 1), f"design: {mu.shape[1]} candidates", show)
    width, mcse, ess, ess_min = scorer.score(mu, base, bar.update)
    table = frame[[*_ND, "compute"]].copy()
    table["cost"] = costs
    table["width"] = width
    table["width_mcse"] = mcse
    table["rel_width"] = width / float(current["median"])
    table["gain"] = width_now - width
    table["gain_per_flop"] = table["gain"] / costs
    table["ess"] = ess
    table["ess_min"] = ess_min
    table["low_ess"] = ess < float(min_ess)
    table.index.name = "candidate"

    picks = []
    spent = 0.0
    chosen: list[int] = []
    cur = (width, ess)
    for k in range(int(batch)):
        if k > 0:
            cur = scorer.score(mu, base, bar.update)[::2]
        w_k, e_k = cur
        gain = (width_now - w_k) / costs if rank == "gain_per_flop" else -w_k
        ok = (spent + costs <= total) & ~np.isin(np.arange(len(costs)), chosen)
        if not ok.any():
            break
        reach = ok & (w_k <= goal_) if goal_ is not None else np.zeros_like(ok)
        if reach.any():  # the cheapest run expected to reach the goal
            i = int(np.argmin(np.where(reach, costs, np.inf)))
        elif goal_ is not None:  # none does: the most informative run
            i = int(np.argmin(np.where(ok, w_k, np.inf)))
        else:
            i = int(np.argmax(np.where(ok, gain, -np.inf)))
        chosen.append(i)
        spent += float(costs[i])
        base = base + scorer.loglik(mu[:, i : i + 1])[0]
        picks.append(
            {
                "candidate": i,
                "n_params": frame["n_params"].iloc[i],
                "n_tokens": frame["n_tokens"].iloc[i],
                "compute": frame["compute"].iloc[i],
                "cost": costs[i],
                "width": w_k[i],
                "cum_cost": spent,
                "ess": e_k[i],
            }
        )
        if reach.any():
            break
    batch_table = pd.DataFrame(
        picks, columns=["candidate", *_ND, "compute", "cost", "width", "cum_cost", "ess"]
    )
    batch_table.index.name = "pick"
    if batch_table.empty:
        warn(
            f"design: no candidate fits the budget {total:.3g} (the cheapest costs "
            f"{costs.min():.3g}), so no run was chosen. Raise budget= or pass cheaper "
            "candidates.",
            UserWarning,
        )
    low = batch_table.loc[batch_table["ess"] < float(min_ess)]
    if len(low):
        warn(
            f"design: the chosen run(s) {low['candidate'].tolist()} have importance-weight "
            f"ESS {', '.join(f'{e:.0f}' for e in low['ess'])} < min_ess={min_ess:g} (of "
            f"{s_count} draws): the outcome would pin the target down to a few draws, so the "
            "expected width is unreliable (too small). Fit with more draws, or refit with the "
            "run's simulated outcome (bs.update) to check.",
            ConvergenceWarning,
        )
    settings = (
        ("ci_prob", float(ci_prob)),
        ("n_outcomes", int(n_outcomes)),
        ("n_draws", int(s_count)),
        ("min_ess", float(min_ess)),
        ("kind", kind),
        ("seed", int(seed)),
        ("budget", None if budget is None else float(total)),
        ("rank", rank),
        ("goal", goal_),
    )
    table = table.sort_values(rank, ascending=rank == "width", kind="stable")
    runs = pd.DataFrame({k: fit.data.column(k) for k in _ND})
    runs["compute"] = FLOPS_PER_PARAM_TOKEN * runs["n_params"] * runs["n_tokens"]
    bar.close()
    return Design(table, batch_table, tgt, current, runs, settings)


# ------------------------------------------------------------------------------ the maths


def _weighted_stats(
    value: np.ndarray, order: np.ndarray, w: np.ndarray | None, probs: np.ndarray
) -> np.ndarray:
    """Quantiles of ``value`` under weights ``w`` (None: equal), by the inverse weighted CDF."""
    sv = value[order]
    ws = np.full(len(sv), 1.0 / len(sv)) if w is None else w[order] / w.sum()
    cum = np.cumsum(ws)
    idx = np.minimum(np.searchsorted(cum, probs), len(sv) - 1)
    return sv[idx]


class _Scorer:
    """Vectorised scoring over (candidate, outcome, draw); the compiled kernel is cached."""

    def __init__(
        self,
        fit: Fit,
        value: np.ndarray,
        order: np.ndarray,
        sigma: np.ndarray,
        src: np.ndarray,
        eps: np.ndarray,
        probs: np.ndarray,
    ) -> None:
        self.noise = fit.noise.predictive  # the outcomes are of runs that train
        self.value = value
        self.order = order
        self.sigma = sigma
        self.src = src
        self.eps = eps
        self.probs = probs
        self.kernel = _kernel(self.noise)
        # the draws in the target's order: the weighted CDF is a cumulative sum
        self.sorted_value = value[order]
        # exclude each outcome's own source draw from its weights
        self.excl = np.zeros((len(src), len(value)), bool)
        self.excl[np.arange(len(src)), src] = True

    def outcomes(self, mu: np.ndarray) -> np.ndarray:
        """Simulated log losses ``(candidate, outcome)`` (centred with ``mu``'s mean)."""
        return (mu[self.src] + self.sigma[self.src, None] * self.eps[:, None]).T

    def loglik(self, mu: np.ndarray) -> np.ndarray:
        """``(candidate, outcome, draw)`` log likelihood of the simulated outcomes (NumPy)."""
        y = self.outcomes(mu)
        z = (y[:, :, None] - mu.T[:, None, :]) / self.sigma
        return self.noise.logpdf(z, 0.0, 1.0) - np.log(self.sigma)

    def score(
        self, mu: np.ndarray, base: np.ndarray, tick: Callable[[], Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Expected width, its MCSE, median ESS and smallest ESS per candidate.

        ``tick`` is called after each chunk of `CHUNK` candidates (a progress bar's update).
        """
        import jax.numpy as jnp

        n_cand = mu.shape[1]
        centre = mu.mean(axis=0)
        mu_c = (mu - centre)[self.order].astype(np.float32)
        y = (self.outcomes(mu - centre)).astype(np.float32)  # (cand, outcome)
        sig = self.sigma[self.order].astype(np.float32)
        base_s = np.where(self.excl, -np.inf, base)[:, self.order].astype(np.float32)
        args = (
            jnp.asarray(sig),
            jnp.asarray(base_s),
            jnp.asarray(self.sorted_value.astype(np.float32)),
            jnp.asarray(self.probs.astype(np.float32)),
        )
        width = np.empty((n_cand, len(self.src)))
        ess = np.empty((n_cand, len(self.src)))
        for start in range(0, n_cand, CHUNK):
            stop = min(start + CHUNK, n_cand)
            m = np.zeros((mu_c.shape[0], CHUNK), np.float32)
            yy = np.zeros((CHUNK, y.shape[1]), np.float32)
            m[:, : stop - start] = mu_c[:, start:stop]
            yy[: stop - start] = y[start:stop]
            w_, e_ = self.kernel(jnp.asarray(m), jnp.asarray(yy), *args)
            width[start:stop] = np.asarray(w_)[: stop - start]
            ess[start:stop] = np.asarray(e_)[: stop - start]
            if tick is not None:
                tick()
        mean = width.mean(axis=1)
        mcse = width.std(axis=1, ddof=1) / math.sqrt(width.shape[1])
        return mean, mcse, np.median(ess, axis=1), ess.min(axis=1)


@functools.lru_cache(maxsize=8)
def _kernel(noise: Any) -> Any:
    """Jitted ``(mu, y, sigma, base, sorted_value, probs) -> (width, ess)`` over a chunk.

    ``mu``: (draw, cand) centred log loss at the candidates, draws in the target's order;
    ``y``: (cand, outcome); ``base``: (outcome, draw) log weights so far (-inf: excluded).
    """
    import jax
    import jax.numpy as jnp

    std = noise.distribution(0.0, 1.0)

    def kernel(mu, y, sigma, base, sorted_value, probs):  # noqa: ANN001, ANN202
        z = (y[:, :, None] - mu.T[:, None, :]) / sigma  # (cand, outcome, draw)
        lw = std.log_prob(z) - jnp.log(sigma) + base[None]
        lw = lw - jnp.max(lw, axis=-1, keepdims=True)
        w = jnp.exp(lw)
        w = w / jnp.sum(w, axis=-1, keepdims=True)
        ess = 1.0 / jnp.sum(w * w, axis=-1)
        cum = jnp.cumsum(w, axis=-1)
        flat = cum.reshape(-1, cum.shape[-1])
        idx = jax.vmap(lambda c: jnp.searchsorted(c, probs))(flat)  # first cum >= p
        idx = idx.reshape(*cum.shape[:-1], probs.shape[0])  # (cand, outcome, prob)
        q = sorted_value[jnp.minimum(idx, sorted_value.shape[0] - 1)]
        return q[..., 2] - q[..., 0], ess

    return jax.jit(kernel)

"""Convergence checks on a posterior `DataTree`, with documented thresholds.

References
----------
Vehtari, Gelman, Simpson, Carpenter and Buerkner (2021), "Rank-normalization, folding, and
localization: an improved R-hat for assessing convergence of MCMC", Bayesian Analysis 16(2),
doi:10.1214/20-BA1221: r_hat <= 1.01 and a bulk and tail ESS of at least 100 per chain.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from bayescale import options as opt
from bayescale.errors import ConvergenceWarning, OptionError, warn

__all__ = [
    "batch_diagnostics",
    "convergence_problems",
    "diagnostic_table",
    "interval_probs",
    "warn_convergence",
]


def convergence_problems(
    tree: Any,
    *,
    var_names: Sequence[str] | None = None,
    max_rhat: float = 1.01,
    min_ess_per_chain: float = 100.0,
    max_divergences: int = 0,
) -> list[str]:
    """List what is wrong with an MCMC posterior; an empty list means no problem was found.

    Parameters
    ----------
    tree : xarray.DataTree
        With ``posterior`` and ``sample_stats`` groups.
    var_names : sequence of str, optional
        Parameters to check; default every posterior variable.
    max_rhat : float, default 1.01
        Largest acceptable rank-normalised split R-hat.
    min_ess_per_chain : float, default 100
        Smallest acceptable bulk and tail effective sample size per chain.
    max_divergences : int, default 0
        Largest acceptable number of divergent transitions.

    Returns
    -------
    list of str
        One sentence per problem, naming the parameters and a fix.
    """
    import arviz_stats as azs

    post = tree["posterior"].to_dataset()
    names = list(var_names or post.data_vars)
    n_chains = post.sizes["chain"]
    problems = []
    if "sample_stats" in tree.children and "diverging" in tree["sample_stats"].data_vars:
        n_div = int(tree["sample_stats"]["diverging"].values.sum())
        if n_div > max_divergences:
            total = tree["sample_stats"]["diverging"].size
            problems.append(
                f"{n_div} of {total} transitions diverged. Try target_accept=0.99, tighter priors,"
                " or a law with fewer parameters for this data."
            )
    if n_chains < 2:
        return problems
    sub = post[names]
    rhat, ess = _quietly(lambda: azs.rhat(sub)), {}
    for method in ("bulk", "tail"):
        ess[method] = _quietly(lambda m=method: azs.ess(sub, method=m))
    # NaN (a chain that never moved) counts as a failure, hence the negated comparisons
    bad = [
        f"{k} ({float(rhat[k].max()):.3f})" for k in names if not float(rhat[k].max()) <= max_rhat
    ]
    if bad:
        problems.append(
            f"r_hat above {max_rhat} for {', '.join(bad)}: chains disagree. Run longer "
            "(num_warmup, num_samples) or check the posterior for several modes."
        )
    floor = min_ess_per_chain * n_chains
    for method in ("bulk", "tail"):
        low = [
            f"{k} ({float(ess[method][k].min()):.0f})"
            for k in names
            if not float(ess[method][k].min()) >= floor
        ]
        if low:
            problems.append(
                f"{method} ESS below {floor:.0f} for {', '.join(low)}. Increase num_samples."
            )
    return problems


def _quietly(compute: Any) -> Any:
    """Run an arviz-stats diagnostic without its RuntimeWarnings on constant chains."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return compute()


def warn_convergence(problems: Sequence[str]) -> None:
    """Emit one `ConvergenceWarning` listing ``problems`` (nothing when empty).

    The warning points at the caller's first line outside bayescale.
    """
    if problems:
        warn("the posterior may not be trustworthy: " + " ".join(problems), ConvergenceWarning)


def diagnostic_table(posterior: Any, names: Sequence[str]) -> dict[str, list[float]]:
    """Bulk and tail ESS and r_hat per parameter (NaN where a chain never moved)."""
    import arviz_stats as azs

    sub = posterior[list(names)]
    bulk = _quietly(lambda: azs.ess(sub, method="bulk"))
    tail = _quietly(lambda: azs.ess(sub, method="tail"))
    rhat = _quietly(lambda: azs.rhat(sub))
    return {
        "ess_bulk": [float(bulk[k]) for k in names],
        "ess_tail": [float(tail[k]) for k in names],
        "r_hat": [float(rhat[k]) for k in names],
    }


def interval_probs(ci_prob: float) -> tuple[float, float]:
    """The probabilities ``((1 - ci_prob) / 2, (1 + ci_prob) / 2)`` of an equal-tailed interval."""
    p = opt.probability(ci_prob, "ci_prob")
    return (1 - p) / 2, (1 + p) / 2


# ------------------------------------------------------------------------------ many curves


def batch_diagnostics(values: np.ndarray, tail_prob: float | None = None) -> dict[str, np.ndarray]:
    """Rank-normalised r_hat and bulk and tail ESS of many arrays at once.

    The same numbers as ``arviz_stats.rhat`` and ``arviz_stats.ess(method="bulk" | "tail")``
    (Vehtari et al. 2021: split chains, rank normalisation, folding, Geyer's initial monotone
    sequence), computed with numpy over a leading batch axis instead of one Python call per
    array. ``ManyFits`` needs them for every parameter of every curve, thousands of arrays,
    where arviz-stats' Python loop dominates the time. Here the rows run in chunks on threads
    (numpy and SciPy release the GIL), ranked by one unstable sort per row with ties averaged
    (timings in the design notes, *Measurements behind the code*).
    ``tests/test_diagnostics.py`` checks the agreement with arviz-stats.

    Parameters
    ----------
    values : ndarray
        ``(batch, chain, draw)``.
    tail_prob : float, optional
        The tail ESS is the smaller ESS of the indicators of the quantiles ``1 - p`` and
        ``p``, ``p = tail_prob`` (default ArviZ's ``rcParams["stats.ci_prob"]``, as
        ``arviz_stats.ess(method="tail")`` without ``prob``).

    Returns
    -------
    dict
        ``r_hat``, ``ess_bulk`` and ``ess_tail``, each ``(batch,)``; NaN where arviz-stats
        gives NaN (a NaN draw, fewer than 4 draws, or fewer than 2 chains for r_hat).
    """
    from arviz_base import rcParams

    x = np.asarray(values)
    if x.ndim != 3:
        raise OptionError(f"values must be (batch, chain, draw); received shape {x.shape}.")
    p = float(rcParams["stats.ci_prob"] if tail_prob is None else tail_prob)
    if not 0 < p < 1:
        raise OptionError(f"tail_prob must lie strictly between 0 and 1; received {tail_prob!r}.")
    low, high = sorted((p, 1 - p))
    chunks = [x[i : i + _ROWS] for i in range(0, len(x), _ROWS)] or [x]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant chains: NaN, as arviz-stats
        if len(chunks) == 1:
            parts = [_diagnose(chunks[0], low, high)]
        else:  # numpy and SciPy release the GIL: the rows' chunks run on every core
            with ThreadPoolExecutor(min(len(chunks), os.cpu_count() or 1)) as pool:
                parts = list(pool.map(lambda c: _diagnose(c, low, high), chunks))
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


#: rows of a `batch_diagnostics` chunk (one thread's work)
_ROWS = 256


def _diagnose(x: np.ndarray, low: float, high: float) -> dict[str, np.ndarray]:
    """`batch_diagnostics` of one chunk of rows (warnings are filtered by the caller)."""
    n_batch, n_chain, n_draw = x.shape
    bad = np.isnan(x).reshape(n_batch, -1).any(axis=1) | (n_draw < 4)
    split = _split_chains(x)

    def z_scale(a: np.ndarray) -> np.ndarray:
        from scipy.special import ndtri

        flat = a.reshape(len(a), -1)
        ranks = _average_ranks(flat)
        return ndtri((ranks - 0.375) / (flat.shape[1] + 0.25)).reshape(a.shape)

    folded = np.abs(split - np.median(split.reshape(n_batch, -1), axis=1)[:, None, None])
    bulk = z_scale(split)
    r_hat = np.maximum(_batch_rhat(bulk), _batch_rhat(z_scale(folded)))
    ess_bulk = _batch_ess(bulk)
    flat = x.reshape(n_batch, -1)
    tails = [
        _batch_ess(_split_chains(x <= np.quantile(flat, q, axis=1)[:, None, None]))
        for q in (low, high)
    ]
    if n_chain < 2:
        r_hat[:] = np.nan
    for arr in (r_hat, ess_bulk, *tails):
        arr[bad] = np.nan
    return {"r_hat": r_hat, "ess_bulk": ess_bulk, "ess_tail": np.minimum(*tails)}


def _average_ranks(flat: np.ndarray) -> np.ndarray:
    """Ranks (1-based, ties averaged) of each row of ``flat``.

    SciPy's ``rankdata(method="average", axis=1)`` in one unstable sort of the batch (SciPy
    sorts stably, about twice as long here), with the tie groups found in the sorted rows. NaN
    rows get numbers, not NaN: `batch_diagnostics` blanks them afterwards.
    """
    n = flat.shape[1]
    order = np.argsort(flat, axis=1)
    ordered = np.take_along_axis(flat, order, axis=1)
    starts = np.ones(flat.shape, bool)  # a tie group starts here
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones(flat.shape, bool)  # a tie group ends here
    ends[:, :-1] = starts[:, 1:]
    position = np.broadcast_to(np.arange(n), flat.shape)
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, position, n - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty(flat.shape)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks


def _split_chains(x: np.ndarray) -> np.ndarray:
    half = x.shape[2] // 2
    return np.concatenate([x[:, :, :half], x[:, :, x.shape[2] - half :]], axis=1)


def _batch_rhat(x: np.ndarray) -> np.ndarray:
    """Classic R-hat of ``(batch, chain, draw)`` (arviz-stats' ``_rhat`` per batch row)."""
    x = x.astype(np.float64)
    n = x.shape[2]
    between = n * np.var(x.mean(axis=2), axis=1, ddof=1)
    within = np.mean(np.var(x, axis=2, ddof=1), axis=1)
    return np.sqrt((between / within + n - 1) / n)


def _batch_ess(x: np.ndarray) -> np.ndarray:
    """ESS of ``(batch, chain, draw)`` by Geyer's initial monotone sequence, per batch row.

    A transliteration of arviz-stats' ``_ess`` in which the rows advance in lock step, each
    with its own stopping point.
    """
    from scipy.fft import irfft, next_fast_len, rfft

    x = x.astype(np.float64)
    n_batch, n_chain, n_draw = x.shape
    size = n_chain * n_draw
    const = (x.max(axis=(1, 2)) - x.min(axis=(1, 2))) < np.finfo(float).resolution
    m = next_fast_len(2 * n_draw)
    centred = x - x.mean(axis=2, keepdims=True)
    spectrum = rfft(centred, n=m, axis=2)
    spectrum *= np.conjugate(spectrum)
    acov = irfft(spectrum, n=m, axis=2)[:, :, :n_draw] / n_draw
    mean_var = acov[:, :, 0].mean(axis=1) * n_draw / (n_draw - 1.0)
    var_plus = mean_var * (n_draw - 1.0) / n_draw
    if n_chain > 1:
        var_plus = var_plus + np.var(x.mean(axis=2), axis=1, ddof=1)
    rho = 1.0 - (mean_var[:, None] - acov.mean(axis=1)) / var_plus[:, None]
    rows = np.arange(n_batch)
    kept = np.zeros((n_batch, n_draw))
    kept[:, 0], kept[:, 1] = 1.0, rho[:, 1]
    even, odd = np.ones(n_batch), rho[:, 1].copy()
    t = np.ones(n_batch, dtype=int)
    active = np.ones(n_batch, dtype=bool)
    for step in range(1, n_draw - 3, 2):  # Geyer's initial positive sequence
        active &= (even + odd) > 0.0
        if not active.any():
            break
        e, o = rho[:, step + 1], rho[:, step + 2]
        even, odd = np.where(active, e, even), np.where(active, o, odd)
        store = active & (e + o >= 0)
        kept[store, step + 1], kept[store, step + 2] = e[store], o[store]
        t = np.where(active, step + 2, t)
    max_t = t - 2
    last = np.where(even > 0, even, kept[rows, max_t + 1])
    kept[rows, max_t + 1] = last
    for step in range(1, int(max_t.max()) - 1, 2):  # Geyer's initial monotone sequence
        lane = step <= max_t - 2
        before = kept[:, step - 1] + kept[:, step]
        fix = lane & (kept[:, step + 1] + kept[:, step + 2] > before)
        kept[fix, step + 1] = kept[fix, step + 2] = before[fix] / 2.0
    csum = np.concatenate([np.zeros((n_batch, 1)), np.cumsum(kept, axis=1)], axis=1)
    tau = -1.0 + 2.0 * csum[rows, max_t + 1] + kept[rows, max_t + 1]
    tau = np.maximum(tau, 1.0 / np.log10(size))
    ess = size / tau
    ess[np.isnan(kept).any(axis=1)] = np.nan
    ess[const] = size
    return ess

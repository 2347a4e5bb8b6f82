"""Convergence checks on a posterior `DataTree`, with documented thresholds.

References
----------
Vehtari, Gelman, Simpson, Carpenter and Buerkner (2021), "Rank-normalization, folding, and
localization: an improved R-hat for assessing convergence of MCMC", Bayesian Analysis 16(2),
doi:10.1214/20-BA1221: r_hat <= 1.01 and a bulk and tail ESS of at least 100 per chain.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from bayescale.errors import ConvergenceWarning, OptionError, OptionTypeError, warn

__all__ = ["convergence_problems", "diagnostic_table", "interval_probs", "warn_convergence"]


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
                f"{n_div} of {total} transitions diverged. Try target_accept=0.95, tighter priors,"
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
    if isinstance(ci_prob, bool) or not isinstance(ci_prob, (int, float, np.floating)):
        raise OptionTypeError(
            f"ci_prob must be a number in (0, 1); received {ci_prob!r}. For example ci_prob=0.9."
        )
    if not 0 < float(ci_prob) < 1:  # NaN fails too
        raise OptionError(
            f"ci_prob must lie strictly between 0 and 1; received {ci_prob!r}. For example "
            "ci_prob=0.9 for a 90% interval."
        )
    return (1 - float(ci_prob)) / 2, (1 + float(ci_prob)) / 2

"""The one prediction path: per-draw predictions of log loss at new points.

For each posterior draw ``s`` and point ``j`` a fit predicts

    log L_sj = log f(x_j; theta_s) + delta_s(x_j) + sigma_s eps_sj,

the law, its misfit (zero for the exact law) and the observation noise. `predictive` returns
the first two and the noise scale as a `Prediction`; the verbs take from it what they need:
densities (`bayescale.analysis.checks.check`, `bayescale.analysis.compare`), replicated losses
(``ppc``, ``stacked_predictive``, ``detect_break``'s bands), or the misfit alone at points whose
law they evaluate in a compiled program of their own (`bayescale.analysis.forecast`,
`bayescale.analysis.design`) through `misfit_delta` (`misfit_blocks`: by blocks of draws).
Inside the fitted range each draw's misfit is its walks interpolated; beyond it the walks
continue at random, from the generator the caller passes (a named stream of
`bayescale.streams`), so the misfit at several points is drawn jointly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bayescale.inference.fit import Fit
from bayescale.io.data import ScalingData
from bayescale.model.likelihoods import Likelihood
from bayescale.model.misfit import (
    MisfitAt,
    MisfitCoords,
    coordinate_columns,
    law_jacobian,
    misfit_at,
)

__all__ = ["Prediction", "misfit_blocks", "misfit_delta", "posterior_draws", "predictive"]


@dataclass(frozen=True)
class Prediction:
    """Per-draw predictive distributions of log loss at ``point``s (float64).

    Attributes
    ----------
    law : ndarray
        ``(draw, point)``: the law's log loss.
    misfit : ndarray
        ``(draw, point)``: the misfit delta (zeros for the exact law).
    sigma : ndarray
        ``(draw, 1)``: the noise scale.
    noise : Likelihood
        The observation model.
    """

    law: np.ndarray
    misfit: np.ndarray
    sigma: np.ndarray
    noise: Likelihood

    @property
    def loc(self) -> np.ndarray:
        """``(draw, point)``: the location of log loss, law plus misfit."""
        return self.law + self.misfit

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One replicated log loss per draw and point, ``(draw, point)``."""
        loc = self.loc
        return loc + self.sigma * self.noise.sample(rng, loc.shape)

    def logpdf(self, log_loss: np.ndarray) -> np.ndarray:
        """Log density of observed log losses ``(point,)`` under each draw: ``(draw, point)``."""
        return self.noise.logpdf(np.asarray(log_loss)[None, :], self.loc, self.sigma)


def posterior_draws(fit: Fit) -> dict[str, np.ndarray]:
    """The fit's draws flattened over chains: the law's, ``sigma`` and every misfit site.

    Float64 arrays ``(draw, ...)``; select draws by indexing every value alike.
    """
    post = fit.posterior
    n = post.sizes["chain"] * post.sizes["draw"]
    out = fit.draws()
    for k in post.data_vars:
        if k.startswith("misfit_") and k not in out:
            out[k] = post[k].values.reshape(n, *post[k].shape[2:])
    return out


def misfit_delta(
    fit: Fit,
    columns: Mapping[str, np.ndarray],
    draws: Mapping[str, np.ndarray],
    rng: np.random.Generator,
    coords: MisfitCoords | None = None,
) -> np.ndarray | None:
    """The misfit ``(draw, point)`` of ``draws`` at points given by ``columns``; None without one.

    ``columns`` holds each input column the misfit needs (`coordinate_columns`),
    ``draws`` the misfit sites (as `posterior_draws` gives them), ``coords`` where the fitted
    runs lie (the fit's by default; a refit on a subset of runs passes its own).
    """
    at = misfit_blocks(fit, columns, draws, rng, coords)
    return None if at is None else at.whole()


def misfit_blocks(
    fit: Fit,
    columns: Mapping[str, np.ndarray],
    draws: Mapping[str, np.ndarray],
    rng: np.random.Generator,
    coords: MisfitCoords | None = None,
) -> MisfitAt | None:
    """`misfit_delta` to compute by blocks of draws (`MisfitAt.block`); None without a misfit."""
    if fit.misfit is None:
        return None
    coords = fit.misfit_coords if coords is None else coords
    mf = {k: v for k, v in draws.items() if k.startswith("misfit_")}
    jac = None
    if coords.anchor is not None and "misfit_shift" in mf:
        logx = {v: np.log(np.asarray(columns[v], np.float64)) for v in fit.law.variables}
        jac = law_jacobian(fit.law, coords.anchor, logx)
    return misfit_at(fit.misfit, coords, mf, columns, rng, jac)


def predictive(
    fit: Fit,
    points: ScalingData,
    *,
    rng: np.random.Generator,
    draws: Mapping[str, np.ndarray] | None = None,
    coords: MisfitCoords | None = None,
) -> Prediction:
    """Per-draw predictions of log loss at ``points``: law, misfit and noise scale.

    Parameters
    ----------
    fit : Fit
        A fit with posterior draws (one group of a grouped fit: `bayescale.group_fit`).
    points : ScalingData
        The points, with every input column of the law (a ``loss`` column is not read).
    rng : numpy.random.Generator
        Where the misfit's walks continue beyond the fitted range (a `bayescale.streams`
        stream); untouched for the exact law.
    draws : mapping, optional
        Flattened draws to predict from instead of the fit's (`posterior_draws`): a subset of
        them, or a refit's.
    coords : MisfitCoords, optional
        The misfit coordinates of ``draws`` when they come from a refit.
    """
    import jax.numpy as jnp

    law = fit.law
    draws = posterior_draws(fit) if draws is None else draws
    params = {k: jnp.asarray(draws[k])[:, None] for k in law.param_names}
    logx = {v: jnp.asarray(np.log(points.column(v)))[None, :] for v in law.variables}
    n_draw = len(draws["sigma"])
    mu = np.asarray(law.fn(params, logx), dtype=np.float64)
    mu = np.broadcast_to(mu, (n_draw, points.n_runs))
    delta: Any = None
    if fit.misfit is not None:
        coords = fit.misfit_coords if coords is None else coords
        cols = coordinate_columns(coords, law.variables)
        delta = misfit_delta(fit, {c: points.column(c) for c in cols}, draws, rng, coords)
    return Prediction(
        law=mu,
        misfit=np.zeros_like(mu) if delta is None else np.asarray(delta, np.float64),
        sigma=np.asarray(draws["sigma"], dtype=np.float64).reshape(n_draw, 1),
        noise=fit.noise,
    )

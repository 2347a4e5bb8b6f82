"""Named random sub-streams of a user's seed: every host-side random draw is named here once.

A verb that draws at random takes one ``seed``. Where one analysis needs several independent
streams (the noise of a forecast and the continuation of the misfit's walks beyond the fitted
range, say), each comes from its own named stream of that seed, so that adding or removing one
kind of draw never shifts the others: a forecast with the misfit draws the same noise as
without it. `rng` is the only way the package turns a seed into a NumPy generator.

The sampler's chains take JAX keys split from ``PRNGKey(seed)`` in `bayescale.inference.driver`
(`chain_keys`, `curve_keys`, `jitter_key`); they are not NumPy streams and are not listed here.
"""

from __future__ import annotations

import numpy as np

__all__ = ["STREAMS", "rng"]

#: stream name -> the entropy appended to the seed (``default_rng([seed, k])``); None: the
#: seed alone (``default_rng(seed)``), the primary stream of the verb that owns the name.
#: Keys are unique among the streams that one analysis combines; a test checks that every
#: number appears once.
STREAMS: dict[str, int | None] = {
    # primary streams of one verb each (never combined with one another)
    "simulate": None,  # simulation.simulate: the ladder's noise
    "forecast_noise": None,  # forecast(kind="predictive"): the observation noise
    "ppc_noise": None,  # ppc: replicated losses at the fitted runs
    "pointwise_noise": None,  # the fit's posterior_predictive group
    "laplace_start": None,  # laplace_start: one Gaussian draw per chain
    "huber_starts": None,  # the Huber fit's random subset of its start grid
    "break_predictive": None,  # detect_break: the predictive band of the chosen model
    # secondary streams, combined with a primary one in the same analysis
    "stack_pick": 0,  # stacked_predictive: which draw of which law
    "laplace_draws": 1,  # MAP + Laplace: the Gaussian draws of the approximation
    "forecast_misfit": 2,  # forecast: the misfit's walks beyond the fitted range
    "new_group": 3,  # a new group drawn from a grouped fit's population
    "new_group_misfit": 6,  # a new group's misfit walk, drawn from the shared misfit scales
    "held_out_misfit": 4,  # compare(method="lfo"): the misfit at held-out runs
    "check_misfit": 5,  # check, ppc, stacking: the misfit at new or fitted runs
    "misfit_indicator": 12,  # Misfit(p_exact > 0): which draws carry the misfit
    "design_target": 21,  # design: the simulated outcomes at the target
    "design_candidates": 22,  # design: the simulated outcomes of the candidate runs
    "stack_noise": 23,  # stacked_predictive: the observation noise of the mixture
    "huber_bootstrap": 24,  # fit(method="huber", bootstrap=...): the resampled runs
}


def rng(seed: int, stream: str, *index: int) -> np.random.Generator:
    """The NumPy generator of ``stream`` for ``seed`` (see `STREAMS`).

    ``index`` names one of many independent copies of a secondary stream (``fit_many``'s
    curve ``i``: ``index=(i,)``), appended to the entropy.

    Raises
    ------
    KeyError
        If ``stream`` is not a name in `STREAMS` (a programming error, not a user's).
    """
    key = STREAMS[stream]
    if index and key is None:  # [seed, i] would be the keyed stream i
        raise ValueError(f"stream {stream!r} is a primary stream: it has no indexed copies.")
    entropy = [int(seed)] + ([] if key is None else [key]) + [int(i) for i in index]
    return np.random.default_rng(entropy if len(entropy) > 1 else int(seed))

"""The default model (the law plus its misfit) on ladders where the law is exact.

Design: as `test_coverage.py` (40 simulated IsoFLOP ladders of the Chinchilla law with Epoch's
parameters, nine budgets from 6e18 to 3e21 FLOP, eight sizes each, Student-t noise of scale
0.01). Each ladder is fitted on the runs at or below the 2/3 quantile of compute, once with the
misfit (the default) and once with the exact law, and the 24 runs of the three larger budgets
(0.3 to 1.0 decade beyond the fit) are forecast. The 80 fits go through `fit_many` (4 chains x
1000 warm-up + 1000 draws per ladder): the same model and priors as ``fit`` gives each ladder
alone (`tests/test_one_model.py` checks that each lane scores the single model), in minutes
instead of the quarter hour that 80 NUTS fits take on two cores.

Claims, with their error budgets (the bands are issue 26's):
- the misfit's pooled coverage is at least 0.88 for the 90% predictive intervals and at least
  0.45 for the 50% ones. When the law is exact, a model that admits it might not be should be
  somewhat conservative, so the claims are one-sided. With 960 held-out runs and the design
  effect of about 2 of `test_coverage.py` (per-ladder spread measured here: 0.049 at 90%), the sd
  of a pooled coverage is about 0.014 at 90% and 0.023 at 50%; the measured 0.955 and 0.639
  are 5 and 8 sd above the bounds, so a false alarm is below 1e-6 unless calibration moves.
- inside the fitted range, the median width of the 90% predictive interval at the fitted runs
  is at most 25% above the exact law's (a deterministic property of the fits: no error budget
  beyond Monte Carlo noise of the quantiles, under 1%; measured 1.01).
- every fit converges (no divergence, r_hat at most 1.01, enough ESS): a fit stuck in a wrong
  mode would otherwise enter the pooled coverage unnoticed.
"""

import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale.analysis.forecast import forecast

pytestmark = [pytest.mark.slow, pytest.mark.statistical]

SEEDS = list(range(40))


def _interval(fit, at, prob):
    q = forecast(fit, at, seed=1, warn=False).quantiles([(1 - prob) / 2, (1 + prob) / 2])
    return q.to_numpy()


@pytest.fixture(scope="module")
def ladders():
    """Per ladder: (training runs, held-out runs); and the two ManyFits (misfit, exact)."""
    split = {}
    for seed in SEEDS:
        runs = bs.simulate("chinchilla", seed=seed)
        cut = np.quantile(runs["compute"], 2 / 3)
        split[f"ladder {seed:02d}"] = (runs[runs["compute"] <= cut], runs[runs["compute"] > cut])
    table = pd.concat([t.assign(ladder=g) for g, (t, _) in split.items()], ignore_index=True)
    fits = {
        m: bs.fit_many(table, "chinchilla", group="ladder", misfit=m, seed=7, progress_bar=False)
        for m in (True, False)
    }
    return split, fits


def test_the_misfit_fits_converge(ladders):
    _, fits = ladders
    assert fits[True].problems() == {}
    assert fits[False].problems() == {}


@pytest.mark.parametrize("prob, least", [(0.5, 0.45), (0.9, 0.88)])
def test_misfit_intervals_cover_at_least_nominal_when_the_law_is_exact(ladders, prob, least):
    split, fits = ladders
    inside = []
    for g, (_, held) in split.items():
        q = _interval(fits[True][g], held[["n_params", "n_tokens"]], prob)
        y = held["loss"].to_numpy()
        inside.append((q[:, 0] < y) & (y < q[:, 1]))
    inside = np.concatenate(inside)
    assert inside.size == 24 * len(SEEDS)
    assert inside.mean() >= least, inside.mean()


def test_misfit_intervals_are_no_wider_in_range(ladders):
    split, fits = ladders
    ratios = []
    for g, (train, _) in split.items():
        at = train[["n_params", "n_tokens"]]
        misfit, exact = (np.diff(_interval(fits[m][g], at, 0.9), axis=1) for m in (True, False))
        ratios.append((misfit / exact).ravel())
    ratio = np.median(np.concatenate(ratios))
    assert ratio <= 1.25, ratio

"""The misfit model on ladders where the law is exact: calibrated, and no wider in range.

Design: as `test_coverage.py` (40 simulated IsoFLOP ladders of the Chinchilla law with Epoch's
parameters, nine budgets from 6e18 to 3e21 FLOP, eight sizes each, Student-t noise of scale
0.01); each ladder is fitted with ``misfit=True`` (4 chains x 500 warm-up + 500 draws) on the
runs at or below the 2/3 quantile of compute, and the 24 runs of the three larger budgets
(0.3 to 1.0 decade beyond the fit) are forecast.

Claims, with their error budgets:
- pooled coverage of the 50% and 90% predictive intervals within 5 points of nominal. With 960
  held-out runs and the design effect of about 2 measured in `test_coverage.py`, the sd of a
  pooled coverage is about 0.023 at 50% and 0.014 at 90%: +-5 points is 2.2 and 3.6 sd, a
  family-wise false-alarm rate of about 3% if the model were exactly calibrated (the bands are
  the issue's).
- inside the fitted range, the median width of the 90% predictive interval at the fitted runs
  is at most 25% above the exact law's (a deterministic property of the fits: no error budget
  beyond Monte Carlo noise of the quantiles, under 1%).
"""

import warnings

import numpy as np
import pytest

import bayescale as bs
from bayescale.analysis.forecast import forecast
from bayescale.errors import ConvergenceWarning

pytestmark = [pytest.mark.slow, pytest.mark.statistical]

SEEDS = list(range(40))
DRAWS = dict(num_warmup=500, num_samples=500)
# Known gap of issue 9, measured with this design (2026-11-29): the claims below do not hold
# yet, so they are expected failures (not strict: a change of the MAP start changes the draws).
GAP = (
    "known gap (issue 9): measured {} over 960 runs; with six fitted budgets the misfit's "
    "scales do not shrink to zero, so the intervals of an exact law over-cover beyond the "
    "fitted range"
)


def _interval(fit, at, prob, seed):
    q = forecast(fit, at, seed=seed, warn=False).quantiles([(1 - prob) / 2, (1 + prob) / 2])
    return q.to_numpy()


@pytest.fixture(scope="module")
def ladders():
    out = []
    for seed in SEEDS:
        runs = bs.simulate("chinchilla", seed=seed)
        cut = np.quantile(runs["compute"], 2 / 3)
        train, held = runs[runs["compute"] <= cut], runs[runs["compute"] > cut]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            misfit = bs.fit(train, "chinchilla", misfit=True, seed=seed, **DRAWS)
            exact = bs.fit(train, "chinchilla", seed=seed, misfit=False, **DRAWS)
        problems = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
        at, inside = held[["n_params", "n_tokens"]], train[["n_params", "n_tokens"]]
        y = held["loss"].to_numpy()
        cover = {p: _interval(misfit, at, p, seed) for p in (0.5, 0.9)}
        width = [np.diff(_interval(f, inside, 0.9, seed), axis=1).ravel() for f in (misfit, exact)]
        out.append((y, cover, width, problems))
    return out


@pytest.mark.parametrize(
    "prob",
    [
        pytest.param(0.5, marks=pytest.mark.xfail(reason=GAP.format("0.64"))),
        pytest.param(0.9, marks=pytest.mark.xfail(reason=GAP.format("0.956"))),
    ],
)
def test_misfit_intervals_are_calibrated_when_the_law_is_exact(ladders, prob):
    inside = np.concatenate([(c[prob][:, 0] < y) & (y < c[prob][:, 1]) for y, c, _, _ in ladders])
    assert inside.size == 24 * len(SEEDS)
    assert abs(inside.mean() - prob) <= 0.05, inside.mean()


def test_misfit_intervals_are_no_wider_in_range(ladders):
    ratio = np.median(np.concatenate([w[0] / w[1] for _, _, w, _ in ladders]))
    assert ratio <= 1.25, ratio


@pytest.mark.xfail(reason="known gap (issue 9): measured a ConvergenceWarning for seed 39")
def test_misfit_fits_converge(ladders):
    failed = [s for s, (*_, problems) in zip(SEEDS, ladders, strict=True) if problems]
    assert not failed, f"convergence problems for seeds {failed}"

"""The design's predicted width matches the width a refit obtains, and refits stay calibrated.

Design: 10 simulated small ladders of the Chinchilla law (Epoch's parameters; 3 IsoFLOP
budgets from 6e18 to 6e19 FLOP, 5 sizes each; Student-t(4) noise of scale 0.01 on log loss),
each fitted by NUTS (4 chains x 500 warm-up + 500 draws). The target is the expected loss at
the truth's compute-optimal run for 6e21 FLOP (100x the largest run). ``design`` picks a batch
of 4 runs from ``design_grid`` (the most informative within a budget of 1e21 FLOP,
``rank="width"``); the 4 runs are simulated from the truth and the fit is updated.

Claims, with their error budgets:
- the median over ladders of (width after the refit) / (the design's expected width) lies in
  [0.8, 1.25] (the issue's 20%). Measured spread of one ratio: sd about 0.2, so the median of 10
  has a standard error near 0.08 and the band is about 2.5 se on either side (a false alarm
  about 1%, if the prediction were unbiased).
- the refit's 90% interval covers the true target in at least 7 of 10 ladders: P(X <= 6) for
  X ~ Binomial(10, 0.9) is 1.3%.
"""

import warnings

import numpy as np
import pytest

import bayescale as bs
from bayescale.analysis.design import target_draws
from bayescale.model.simulation import TRUTHS, isoflop_design

pytestmark = [pytest.mark.slow, pytest.mark.statistical]

SEEDS = list(range(10))
DRAWS = dict(num_warmup=500, num_samples=500, progress_bar=False)
TRUTH = TRUTHS["chinchilla"]
LAW = bs.get_law("chinchilla")


def _train(runs, rng):
    runs = runs[["n_params", "n_tokens"]].reset_index(drop=True).copy()
    mean = np.asarray(LAW(TRUTH, **{k: runs[k].to_numpy() for k in runs}))
    runs["loss"] = mean * np.exp(0.01 * rng.standard_t(4.0, len(runs)))
    return runs


def _target():
    n = np.geomspace(1e8, 1e12, 20001)
    loss = np.asarray(LAW(TRUTH, n_params=n, n_tokens=6e21 / (6 * n)))
    i = int(np.argmin(loss))
    return {"loss_at": {"n_params": float(n[i]), "n_tokens": float(6e21 / (6 * n[i]))}}, float(
        loss[i]
    )


@pytest.fixture(scope="module")
def outcomes():
    target, true_loss = _target()
    rows = []
    for seed in SEEDS:
        rng = np.random.default_rng([seed, 5])
        ladder = _train(isoflop_design(np.geomspace(6e18, 6e19, 3), 5, 1.0), rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bs.ConvergenceWarning)
            fit = bs.fit(ladder, seed=seed, misfit=False, **DRAWS)
            d = bs.design(fit, "grid", target, batch=4, budget=1e21, rank="width", seed=seed)
            new = _train(d.batch, rng)
            refit = bs.update(fit, new, seed=seed, **DRAWS)
        value, _ = target_draws(refit, target)
        lo, hi = np.quantile(value, [0.05, 0.95])
        rows.append((float(d.batch["width"].iloc[-1]), hi - lo, lo < true_loss < hi))
    return np.array(rows)


def test_the_expected_width_matches_the_refit(outcomes):
    ratio = outcomes[:, 1] / outcomes[:, 0]
    assert 0.8 <= np.median(ratio) <= 1.25, ratio


def test_the_refit_covers_the_truth(outcomes):
    assert outcomes[:, 2].sum() >= 7, outcomes

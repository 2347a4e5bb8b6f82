"""Coverage of predictive intervals for held-out, larger runs (extrapolation in compute).

Design: 40 simulated IsoFLOP ladders of the Chinchilla law (Epoch's parameters; the default
design of nine budgets from 6e18 to 3e21 FLOP, eight sizes each; Student-t noise, nu = 4,
scale 0.01, as the likelihood assumes). Each ladder is fitted by NUTS (4 chains x 500 draws
after 500 warm-up steps) on the runs with compute at or below its 2/3 quantile (the six
smaller budgets, 48 runs); the 24 runs of the three larger budgets (0.3 to 1.0 decade of
compute beyond the fit) are held out and forecast. The pooled 90% predictive coverage must lie
in 85-95%.

Error budget: 960 held-out runs. Independent runs would give a binomial sd of
sqrt(0.9 * 0.1 / 960) = 0.0097; the runs of a ladder share one posterior, so their
indicators are correlated. The spread of the per-ladder coverage (measured 0.087 against 0.061
for 24 independent runs) gives a design effect of about 2, hence an sd of about 0.014 for the
pooled coverage: the 85-95% band is about +-3.5 sd, a false-alarm rate below 1e-3, and leaves
room for the (small) gap between Bayesian and frequentist coverage at a fixed truth.
Measured: 0.898.

Positive control: intervals of the law's mean (parameter uncertainty only, no noise) must
under-cover (measured 0.59); the test then fails as it should.

Every fit must converge (`test_truncated_ladders_converge`): a fit stuck in a wrong mode would
otherwise enter the pooled coverage unnoticed. (Before the MAP start moved to the prior median,
4 of these 40 truncated ladders started NUTS in a degenerate mode: one amplitude at the float32
clip exp(85), its exponent above 4, sigma about 0.08 against 0.01.)
"""

import warnings

import numpy as np
import pytest

import bayescale as bs
from bayescale.analysis.forecast import forecast
from bayescale.errors import ConvergenceWarning

pytestmark = [pytest.mark.slow, pytest.mark.statistical]

SEEDS = list(range(40))
PROB = 0.9


@pytest.fixture(scope="module")
def ladders():
    """Per ladder: held-out losses, predictive and mean-only intervals, fit problems."""
    out = []
    for seed in SEEDS:
        runs = bs.simulate("chinchilla", seed=seed)
        cut = np.quantile(runs["compute"], 2 / 3)
        train, held = runs[runs["compute"] <= cut], runs[runs["compute"] > cut]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            fit = bs.fit(
                train, "chinchilla", num_warmup=500, num_samples=500, seed=seed, misfit=False
            )
        problems = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
        at = held[["n_params", "n_tokens"]]
        probs = [(1 - PROB) / 2, (1 + PROB) / 2]
        pred = forecast(fit, at, seed=seed, warn=False).quantiles(probs).to_numpy()
        mean = forecast(fit, at, kind="mean", warn=False).quantiles(probs).to_numpy()
        out.append((held["loss"].to_numpy(), pred, mean, problems))
    return out


def _covered(y, interval):
    return (interval[:, 0] < y) & (y < interval[:, 1])


def test_predictive_intervals_cover_held_out_runs(ladders):
    inside = np.concatenate([_covered(y, pred) for y, pred, _, _ in ladders])
    per_ladder = np.array([_covered(y, pred).mean() for y, pred, _, _ in ladders])
    coverage = inside.mean()
    assert inside.size == 24 * len(SEEDS)
    assert 0.85 <= coverage <= 0.95, (coverage, per_ladder.round(2).tolist())
    # positive control: without the noise the intervals are far too narrow for new runs
    mean_only = np.concatenate([_covered(y, mean) for y, _, mean, _ in ladders]).mean()
    assert mean_only < 0.85


def test_truncated_ladders_converge(ladders):
    failed = [seed for seed, (*_, problems) in zip(SEEDS, ladders, strict=True) if problems]
    assert not failed, f"convergence problems for seeds {failed}"

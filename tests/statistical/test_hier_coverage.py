"""Partial pooling on simulated families that share their exponent: recovery and new groups.

Each replicate simulates 6 "full" families (10 runs, N from 1e7 to 1e10) and 8 "new" families
whose 2 smallest runs enter the fit and whose 8 larger runs are held out. All share
alpha = 0.35 and the noise sigma = 0.01 (Student-t, nu = 4, as the fit assumes); their floors
are log-normal around 1.8 (sd 0.1 in logs, the population the model assumes for families of
one kind, whose exponents agree) and their amplitudes vary freely (sd 0.3 in logs; amplitudes
are per group by default). One grouped fit per replicate with the default settings (pool E,
alpha and sigma; 4 chains x 1000 + 1000 draws).

Error budget (family-wise about 2%, split over the three claims):
- recovery: every group's 90% intervals of E, alpha and A over 3 replicates, 3 x 14 x 3 = 126
  intervals, correlated through the shared hyper-parameters (the 14 alphas of a replicate
  are nearly one check). We assert a rate in [0.80, 1.0]: the binomial(126, 0.9) lower 0.5%
  point is 0.83 and the correlation widens it; and that each replicate's alpha posterior
  contracted (sd below a tenth of the prior's, 1 in logs) so that a vague posterior cannot pass;
- new groups: 90% predictive intervals of 3 x 8 x 8 = 192 held-out runs, clustered in 24
  families; the claim of the issue is a rate in [0.85, 0.95] (a window of about +-1.5
  clustered standard errors, the residual risk of this claim is the largest of the three);
- width: the median relative width of the pooled forecasts against those of lone fits of the
  same 2 runs (see below) must be at least 2x narrower; measured many times narrower.

The fairest single-group alternative: a lone fit of the 2 runs is refused with the default
priors (4 parameters, 2 runs); passing those same default priors explicitly lets it run (the
priors then carry the fit), which is what a user without other families could do.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bayescale as bs

pytestmark = [pytest.mark.slow, pytest.mark.statistical]

ALPHA, SIGMA = 0.35, 0.01
N_FULL, N_NEW, N_RUNS, N_SEEN = 6, 8, 10, 2
DRAWS = dict(progress_bar=False)  # the defaults


def replicate(seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict[str, float]]]:
    """(fit runs, held-out runs, truth per family) for one replicate."""
    rng = np.random.default_rng(seed)
    design = pd.DataFrame({"n_params": np.geomspace(1e7, 1e10, N_RUNS)})
    train, held, truths = [], [], {}
    for g in range(N_FULL + N_NEW):
        name = f"{'full' if g < N_FULL else 'new'}{g:02d}"
        truth = {
            "E": 1.8 * float(np.exp(0.1 * rng.standard_normal())),
            "alpha": ALPHA,
            "A": 480.0 * float(np.exp(0.3 * rng.standard_normal())),
        }
        truths[name] = truth
        runs = bs.simulate("power_law", truth, design, noise=SIGMA, seed=seed * 100 + g)
        runs = runs.drop(columns="loss_mean").assign(family=name)
        seen = N_RUNS if g < N_FULL else N_SEEN
        train.append(runs.iloc[:seen])
        held.append(runs.iloc[seen:])
    return pd.concat(train, ignore_index=True), pd.concat(held, ignore_index=True), truths


@pytest.fixture(scope="module")
def results():
    out = []
    for seed in (101, 102, 103):
        train, held, truths = replicate(seed)
        with warnings.catch_warnings():  # convergence is asserted by the tests below
            warnings.simplefilter("ignore", bs.ConvergenceWarning)
            fit = bs.fit(train, "power_law", group="family", seed=seed, misfit=False, **DRAWS)
        out.append((fit, train, held, truths))
    return out


def test_partial_pooling_recovers_each_group(results):
    covered = []
    for fit, _train, _held, truths in results:
        table = fit.summary()
        print(f"max r_hat {table['r_hat'].max():.3f}; problems: {fit.problems()}")
        for g, truth in truths.items():
            for name, value in truth.items():
                row = table.loc[f"{name}[{g}]"]
                covered.append(row["q5"] <= value <= row["q95"])
        # contraction: the shared exponent is pinned down far below its prior's sd (1 in logs)
        assert np.log(fit.posterior["alpha"].sel(group="full00")).std() < 0.1
    rate = float(np.mean(covered))
    print(f"recovery: {rate:.3f} of {len(covered)} 90% intervals cover the truth")
    assert 0.80 <= rate <= 1.0


# every replicate's grouped fit converges with the default settings (its history: the design
# notes, Measurements behind the code)
def test_grouped_fits_converge(results):
    for fit, *_ in results:
        table = fit.summary()
        print(f"max r_hat {table['r_hat'].max():.3f}; problems: {fit.problems()}")
    for fit, *_ in results:
        assert fit.summary()["r_hat"].max() <= 1.01 and not fit.problems(), fit.problems()


def test_new_groups_from_two_runs(results):
    inside, pooled_width, lone_width = [], [], []
    for i, (fit, train, held, _truths) in enumerate(results):
        for g in sorted(held["family"].unique()):
            if not g.startswith("new"):
                continue
            rows = held[held["family"] == g]
            fc = bs.forecast(fit, rows[["n_params"]], group_label=g, warn=False)
            q = fc.quantiles([0.05, 0.5, 0.95])
            obs = rows["loss"].to_numpy()
            inside += list((obs >= q["q5"]) & (obs <= q["q95"]))
            width = fc.relative_width()
            pooled_width.append(np.median(width))
            if i == 0 and len(lone_width) < 3:  # lone fits of three families (time)
                seen = train[train["family"] == g].drop(columns="family")
                law = bs.get_law("power_law")
                priors = dict(bs.default_priors(law, bs.from_frame(seen)))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", bs.ConvergenceWarning)
                    lone = bs.fit(seen, "power_law", priors=priors, seed=0, misfit=False, **DRAWS)
                lone_fc = bs.forecast(lone, rows[["n_params"]], warn=False)
                lone_width.append(np.median(lone_fc.relative_width()))
    coverage = float(np.mean(inside))
    ratio = float(np.median(lone_width) / np.median(pooled_width[: len(lone_width)]))
    print(
        f"new groups: 90% coverage {coverage:.3f} of {len(inside)} held-out runs; median "
        f"relative width pooled {np.median(pooled_width):.4f}, lone {np.median(lone_width):.4f}"
        f" ({ratio:.1f}x)"
    )
    assert 0.85 <= coverage <= 0.95
    assert ratio >= 2.0

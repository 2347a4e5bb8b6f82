"""Golden tests on Epoch's 240 Chinchilla rows (Besiroglu et al. 2024).

Tolerances were fixed before running, from the published standard errors: a point estimate must
agree with Epoch's to a tenth of its standard error (E 0.026, A 124.5, B 1293, alpha 0.015,
beta 0.021). That is far below the sampling uncertainty but above the optimiser's own spread
along the flat A-alpha and B-beta ridges (the data README's plain grid fit, E=1.8172, A=477.84,
B=2143.86, alpha=0.34731, beta=0.36718, sits inside it).
"""

import arviz_stats as azs
import numpy as np
import pytest

import bayescale as bs

EPOCH = {"E": 1.817, "A": 482.0, "B": 2085.4, "alpha": 0.3478, "beta": 0.3658}
EPOCH_SE = {"E": 0.026, "A": 124.52, "B": 1293.28, "alpha": 0.015, "beta": 0.021}
BOOTSTRAP_95 = {"E": (1.769, 1.871), "alpha": (0.317, 0.373), "beta": (0.331, 0.415)}


def test_huber_reproduces_epoch(epoch_240):
    result = bs.fit(epoch_240, "chinchilla", method="huber")
    est = result.summary()["mean"]
    for name, value in EPOCH.items():
        assert abs(est[name] - value) < 0.1 * EPOCH_SE[name], (name, est[name], value)
    # the summed Huber objective of the data README's grid fit, to its printed digits
    assert result.settings.huber_objective == pytest.approx(0.00101827, abs=5e-9)


def test_posterior_converges_inside_epoch_bootstrap(epoch_fit):
    assert int(epoch_fit.tree["sample_stats"]["diverging"].sum()) == 0
    summary = epoch_fit.summary()
    assert (summary["r_hat"] <= 1.01).all(), summary["r_hat"]
    for name, (low, high) in BOOTSTRAP_95.items():
        assert low < summary.loc[name, "median"] < high, (name, summary.loc[name, "median"])
    # the medians are estimated far more precisely than the bootstrap width: ESS > 1000
    assert (summary.loc[list(BOOTSTRAP_95), "ess_bulk"] > 1000).all()
    # and the verdict is not a Monte Carlo accident: each median clears the interval's ends by
    # 4 Monte Carlo standard errors of the median (arviz-stats mcse), so another seed could not
    # move it outside (z = 4: two-sided 6e-5 per bound)
    mcse = azs.mcse(epoch_fit.posterior, method="median")
    for name, (low, high) in BOOTSTRAP_95.items():
        median, margin = summary.loc[name, "median"], 4 * float(mcse[name])
        assert low + margin < median < high - margin, (name, median, margin)


def test_map_laplace_agrees_with_nuts(epoch_240, epoch_fit):
    laplace = bs.fit(epoch_240, "chinchilla", method="map", num_samples=4000, seed=0, misfit=False)
    nuts, approx = epoch_fit.summary(), laplace.summary()
    for name in ("E", "alpha", "beta"):
        # PERFORMANCE.md: Laplace medians within 1-2% of NUTS; allow 0.5 posterior sd
        assert (
            abs(approx.loc[name, "median"] - nuts.loc[name, "median"]) < 0.5 * nuts.loc[name, "sd"]
        )
        assert approx.loc[name, "sd"] == pytest.approx(nuts.loc[name, "sd"], rel=0.25)
    assert np.isfinite(approx.values).all()

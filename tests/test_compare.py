"""Model comparison by PSIS-LOO and leave-future-out, stacking weights and stacked predictions.

The Epoch Chinchilla rows (240 runs) compare Hoffmann et al.'s law with Kaplan et al.'s. Which
law wins is recorded below with the margins measured when the test was written; the assertions
only require the winner to be ahead by more than 4 standard errors of the difference, a margin
that Monte Carlo error of the fits (well under 1 nat) cannot close.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale.analysis.compare import compare
from bayescale.analysis.stacking import Stack, stack, stacked_predictive, stacking_weights

LOO_COLUMNS = [
    "rank",
    "elpd",
    "p",
    "elpd_diff",
    "weight",
    "se",
    "dse",
    "warning",
    "method",
    "n_scored",
]


@pytest.fixture(scope="module")
def epoch_fits(epoch_fit, epoch_240):
    kaplan = bs.fit(epoch_240, "kaplan", num_warmup=500, num_samples=500, seed=0, misfit=False)
    return {"chinchilla": epoch_fit, "kaplan": kaplan}


@pytest.fixture(scope="module")
def epoch_loo(epoch_fits):
    return compare(epoch_fits, method="loo", max_refits=2)


@pytest.fixture(scope="module")
def epoch_lfo(epoch_fits):
    return compare(epoch_fits, method="lfo", num_warmup=500, num_samples=500)


@pytest.mark.slow
def test_loo_on_epoch_rows_keeps_its_diagnostics(epoch_loo):
    table = epoch_loo
    assert list(table.columns[: len(LOO_COLUMNS)]) == LOO_COLUMNS
    assert {"max_pareto_k", "n_high_k", "n_refits", "problems"} <= set(table.columns)
    assert table["method"].eq("loo").all() and table["n_scored"].eq(240).all()
    assert table["rank"].tolist() == [0, 1]
    assert table["weight"].sum() == pytest.approx(1.0)
    assert (table["n_refits"] <= 2).all()
    # measured: chinchilla wins LOO by 226 +- 22 nats (stacking weight 0.96), no Pareto k > 0.7
    assert table.index[0] == "chinchilla"
    assert table.loc["kaplan", "elpd_diff"] > 4 * table.loc["kaplan", "dse"]


@pytest.mark.slow
def test_lfo_on_epoch_rows(epoch_lfo):
    table = epoch_lfo
    assert table["method"].eq("lfo").all()
    assert table["n_refits"].eq(1).all()
    assert table["cutoffs"].iloc[0].startswith("compute=")
    assert np.isnan(table["p"]).all()
    assert (table["n_scored"] > 10).all() and (table["n_scored"] < 120).all()
    assert table["weight"].sum() == pytest.approx(1.0)
    assert table.loc[table.index[0], "elpd_diff"] == 0.0
    assert (table["dse"] > 0).sum() == 1
    # measured: one cutoff (compute 6.2e20, 40 runs scored) puts chinchilla ahead by 19 +- 15
    # nats, not a decisive difference; three cutoffs score 104 runs and separate the laws


@pytest.mark.slow
def test_lfo_with_several_cutoffs_prefers_chinchilla(epoch_fits):
    table = compare(
        epoch_fits, method="lfo", cutoffs=[1e20, 3e20, 1e21], num_warmup=500, num_samples=500
    )
    assert table["n_refits"].eq(3).all()
    # measured: 72.6 +- 18.5 nats (3.9 se); the assertion leaves room for Monte Carlo error
    assert table.index[0] == "chinchilla"
    assert table.loc["kaplan", "elpd_diff"] > 2 * table.loc["kaplan", "dse"]


@pytest.mark.slow
def test_stacking_weights_match_arviz(epoch_fits, epoch_loo):
    import arviz_stats as azs

    pointwise = np.stack(
        [azs.loo(f.tree, pointwise=True).elpd_i.values for f in epoch_fits.values()], axis=1
    )
    mine = dict(zip(epoch_fits, stacking_weights(pointwise), strict=True))
    if epoch_loo["n_refits"].sum() == 0:  # refits change the pointwise values
        for name, w in mine.items():
            assert w == pytest.approx(epoch_loo.loc[name, "weight"], abs=1e-3)
    # a model that is better at every run gets all the weight
    np.testing.assert_allclose(stacking_weights(np.array([[0.0, -1.0]] * 5)), [1, 0], atol=1e-6)


@pytest.mark.slow
def test_stacked_predictive_mixes_draws_by_weight(epoch_fits):
    weighted = Stack(epoch_fits, {"chinchilla": 0.75, "kaplan": 0.25})
    at = pd.DataFrame({"n_params": [1e9, 7e10], "n_tokens": [2e10, 1.4e12]})
    pred = stacked_predictive(weighted, at, num_draws=1000, seed=0)
    assert isinstance(pred, bs.Forecast) and pred.kind == "predictive"
    assert pred.draws["loss"].dims == ("chain", "draw", "point")
    assert pred.draws["loss"].shape == (1, 1000, 2)
    table = pred.summary()
    assert (table["q5"] < table["median"]).all() and (table["median"] < table["q95"]).all()
    assert table["decades_beyond"].iloc[1] > 0  # 7e10 parameters: beyond Epoch's largest run
    draws = pred.tree["predictions"]
    labels = draws["model"].values.ravel()
    assert (labels == "chinchilla").sum() == 750 and (labels == "kaplan").sum() == 250
    mean = stacked_predictive(weighted, at, kind="mean", num_draws=1000, seed=0)
    # predictive = mean draw times exp(noise): the log ratio is the likelihood's noise, whose
    # scale is the fits' sigma (about 0.005 for chinchilla on these rows; Student-t 4 has sd
    # sigma * sqrt(2)), far below the spread between the two laws that dominates pred.std()
    noise = np.log(draws["loss"].values / draws["loss_mean"].values)
    assert 0.002 < noise.std() < 0.05
    # the same seed picks the same posterior draws for both kinds
    np.testing.assert_array_equal(draws["loss_mean"].values, mean.draws["loss"].values)
    np.testing.assert_array_equal(draws["model"].values, mean.tree["predictions"]["model"].values)
    assert "chinchilla" in repr(weighted) and weighted.summary()["weight"].sum() == 1.0
    # compute alone (with n_params) is enough: n_tokens = C / (6 N)
    by_compute = stacked_predictive(
        weighted, {"n_params": [7e10], "compute": [5.88e23]}, num_draws=10, seed=0
    )
    assert by_compute.points["n_tokens"].iloc[0] == pytest.approx(5.88e23 / 6 / 7e10)


def test_stack_uses_compare_weights(small_fits):
    table = compare(small_fits, method="loo", max_refits=0)
    combined = stack(small_fits, method="loo", max_refits=0)
    assert combined.method == "loo"
    for name in small_fits:
        assert combined.weights[name] == pytest.approx(table.loc[name, "weight"], abs=1e-6)


@pytest.mark.slow
def test_stack_validation(epoch_fits):
    with pytest.raises(ValueError, match="sum to 1"):
        Stack(epoch_fits, {"chinchilla": 0.5, "kaplan": 0.2})
    with pytest.raises(ValueError, match="same fits"):
        Stack(epoch_fits, {"chinchilla": 1.0})


@pytest.fixture(scope="module")
def small_fits():
    runs = bs.simulate("power_law", seed=3)
    a = bs.fit(runs, "power_law", num_warmup=500, num_samples=500, seed=0, misfit=False)
    b = bs.fit(
        runs,
        "power_law",
        likelihood="normal",
        num_warmup=500,
        num_samples=500,
        seed=0,
        misfit=False,
    )
    return {"student_t": a, "normal": b}


def test_exact_refits_agree_with_psis_where_psis_is_good(small_fits):
    import arviz_stats as azs

    psis = {k: azs.loo(f.tree, pointwise=True).elpd_i.values for k, f in small_fits.items()}
    # k_threshold=-1 forces refits of the two highest-k runs of each fit
    table = compare(small_fits, method="loo", k_threshold=-1.0, max_refits=2)
    assert table["n_refits"].eq(2).all()
    for name in small_fits:
        # the exact and the PSIS estimates of the total agree within Monte Carlo error (the
        # refitted runs have k < 0.5 here, where PSIS is accurate to a few hundredths of a nat)
        assert table.loc[name, "elpd"] == pytest.approx(psis[name].sum(), abs=0.5)


def test_compare_bad_input(small_fits, sim_fit):
    with pytest.raises(ValueError, match="two or more fits"):
        compare({"a": small_fits["normal"]})
    with pytest.raises(ValueError, match="unknown method 'waic'"):
        compare(small_fits, method="waic")
    with pytest.raises(ValueError, match="different runs"):
        compare({"a": small_fits["normal"], "b": sim_fit})
    with pytest.raises(ValueError, match="LFO cutoff"):
        compare(small_fits, method="lfo", cutoffs=[1e5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        huber = bs.fit(small_fits["normal"].data.table, "power_law", method="huber")
    with pytest.raises(ValueError, match="no log_likelihood group"):
        compare({"a": small_fits["normal"], "b": huber})

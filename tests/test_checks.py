"""Posterior predictive checks of new runs, in-sample LOO-PIT checks, and updating a fit.

Error budget of the rate tests: each is an exact binomial (or Kolmogorov-Smirnov) test at
alpha = 0.001; the eight such assertions in this file give a family-wise alpha of 0.008.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bayescale as bs
from bayescale.analysis.checks import VERDICTS, check, ppc
from bayescale.errors import DataError, OptionTypeError
from bayescale.inference.fit import update
from bayescale.model import simulation

ALPHA = 0.001


def _predictive_runs(fit, n, seed):
    """``n`` runs at the fit's inputs, each drawn from the posterior predictive distribution."""
    rng = np.random.default_rng(seed)
    draws = fit.draws()
    s = rng.integers(0, len(draws["sigma"]), n)
    rows = rng.integers(0, fit.data.n_runs, n)
    inputs = {v: fit.data.column(v)[rows] for v in fit.law.variables}
    params = {k: draws[k][s] for k in fit.law.param_names}
    mu = np.log(np.asarray(fit.law(params, **inputs), dtype=np.float64))
    y = mu + draws["sigma"][s] * rng.standard_t(fit.nu, n)
    return pd.DataFrame({**inputs, "loss": np.exp(y)})


def _predictive_moments(fit, runs):
    draws = fit.draws()
    params = {k: draws[k][:, None] for k in fit.law.param_names}
    inputs = {v: runs[v].to_numpy()[None, :] for v in fit.law.variables}
    mu = np.log(np.asarray(fit.law(params, **inputs), dtype=np.float64))
    var = mu.var(axis=0) + np.mean(draws["sigma"] ** 2) * fit.nu / (fit.nu - 2)
    return mu.mean(axis=0), np.sqrt(var)


@pytest.fixture(scope="module")
def rate_check(sim_fit):
    runs = _predictive_runs(sim_fit, 400, seed=11)
    # three levels, as the error budget above counts (the default set has four)
    return check(sim_fit, runs, levels=(0.5, 0.9, 0.99))


@pytest.mark.slow
def test_verdicts_occur_at_the_stated_rates(rate_check):
    # runs drawn from the predictive distribution: P(as predicted) = 0.9, each flag 0.05
    counts = rate_check.table["verdict"].value_counts()
    n = len(rate_check.table)
    assert stats.binomtest(int(counts.get(VERDICTS[1], 0)), n, 0.9).pvalue > ALPHA
    assert stats.binomtest(int(counts.get(VERDICTS[2], 0)), n, 0.05).pvalue > ALPHA


@pytest.mark.slow
def test_coverage_and_calibration_of_predictive_runs(rate_check):
    assert (rate_check.coverage["p_value"] > ALPHA).all(), rate_check.coverage
    assert rate_check.calibration["p_value"] > ALPHA
    assert list(rate_check.coverage.index) == ["50", "90", "99"]
    assert rate_check.coverage.loc["90", "n"] == 400


def test_a_run_shifted_by_five_sds_is_flagged(sim_fit):
    base = sim_fit.data.table.iloc[[10, 40]][["n_params", "n_tokens"]].reset_index(drop=True)
    mean, sd = _predictive_moments(sim_fit, base)
    runs = base.assign(loss=np.exp(mean + np.array([5.0, -5.0]) * sd))
    result = check(sim_fit, runs)
    table = result.table
    np.testing.assert_allclose(table["z"], [5.0, -5.0], rtol=1e-6)
    assert table["verdict"].tolist() == ["worse than predicted", "better than predicted"]
    assert table["outside_99"].all()
    assert (table["p_two_sided"] < 0.01).all()
    assert "1 of 2 runs worse than predicted" in repr(result)
    # a run at the predictive median is as predicted
    calm = check(sim_fit, base.assign(loss=table["median"].to_numpy()))
    assert (calm.table["verdict"] == "as predicted").all()
    np.testing.assert_allclose(calm.table["pit"], 0.5, atol=1e-6)


def test_check_table_and_thresholds(sim_fit):
    runs = sim_fit.data.table.iloc[:5][["n_params", "n_tokens", "loss"]].copy()
    before = runs.copy()
    with pytest.warns(bs.PlausibilityWarning, match="were in the fit"):  # fitted: plumbing
        result = check(sim_fit, runs, levels=(0.8,), verdict_level=0.5)
    pd.testing.assert_frame_equal(runs, before)  # the caller's frame is untouched
    table = result.summary()
    assert {"pit", "z", "p_two_sided", "lpd", "median", "q10", "q90", "outside_80"} <= set(table)
    assert table["verdict"].isin(VERDICTS).all()
    # verdict rule at 50%: outside the 25-75% predictive range
    low, high = table["pit"] < 0.25, table["pit"] > 0.75
    assert (table.loc[low, "verdict"] == VERDICTS[0]).all()
    assert (table.loc[high, "verdict"] == VERDICTS[2]).all()
    assert (table["q10"] < table["median"]).all() and (table["median"] < table["q90"]).all()
    assert "<pre>" in result._repr_html_()


def test_check_bad_input(sim_fit):
    runs = sim_fit.data.table.iloc[:3][["n_params", "loss"]]
    with pytest.raises(DataError, match="column 'n_tokens' not in data"):
        check(sim_fit, runs)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        check(sim_fit, sim_fit.data.table.iloc[:3], levels=(0.5, 1.5))
    huber = bs.fit(sim_fit.data.table, "chinchilla", method="huber", seed=0)
    with pytest.raises(ValueError, match="needs posterior draws"):
        check(huber, sim_fit.data.table.iloc[:3])


def test_ppc_replicates_and_loo_pit(sim_fit):
    own = sim_fit.tree["posterior_predictive"]["loss"].values.copy()  # the fit's replicates
    result = ppc(sim_fit, seed=3)
    table = result.table
    post = sim_fit.posterior
    rep = result.tree["posterior_predictive"]["loss"]
    assert rep.shape == (post.sizes["chain"], post.sizes["draw"], sim_fit.data.n_runs)
    # the fit is untouched: its tree keeps its own replicates, not ppc's (seed 3)
    np.testing.assert_array_equal(sim_fit.tree["posterior_predictive"]["loss"].values, own)
    assert not np.array_equal(rep.values, own)
    assert result.kind == "loo" and len(table) == sim_fit.data.n_runs
    assert table["pit"].between(0, 1).all() and "pareto_k" in table
    assert (table["q5"] < table["q95"]).all()
    # the model is right, so the LOO-PITs of its own runs are uniform (alpha = 0.001)
    assert result.calibration["p_value"] > ALPHA


def test_update_combines_runs_and_records_provenance(sim_fit):
    new = bs.simulate("chinchilla", design=simulation.isoflop_design([6e21, 1.2e22]), seed=2)
    new_copy = new.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        updated = update(sim_fit, new, seed=5)
    pd.testing.assert_frame_equal(new, new_copy)
    assert updated.data.n_runs == sim_fit.data.n_runs + len(new)
    assert updated.data.table["batch"].tolist() == [0] * sim_fit.data.n_runs + [1] * len(new)
    provenance = updated.settings.history
    assert [p["n_runs"] for p in provenance] == [sim_fit.data.n_runs, len(new)]
    assert provenance[1]["updated_fit_seed"] == 1
    assert updated.settings.init.startswith("warm start")
    assert not updated.problems()
    # recovery: family-wise alpha 0.01 over the 5 parameters (each truth inside its central
    # 1 - 0.01/5 interval), and more runs than before cannot widen the posterior much
    truth = simulation.TRUTHS["chinchilla"]
    draws, old = updated.draws(), sim_fit.draws()
    for name, value in truth.items():
        lo, hi = np.quantile(draws[name], [0.001, 0.999])
        assert lo < value < hi, name
        assert np.std(np.log(draws[name])) < 1.2 * np.std(np.log(old[name])), name
    again = update(updated, new.iloc[:3], seed=6)
    assert [p["batch"] for p in again.settings.history] == [0, 1, 2]


def test_update_bad_input(sim_fit):
    with pytest.raises(DataError, match="not in data"):
        update(sim_fit, pd.DataFrame({"n_params": [1e9], "loss": [2.0]}))


# ------------------------------------------------ replicated data in the tree, prior predictive


def _standardised(law, params, inputs, loss, sigma):
    """(log loss - log law) / sigma at every draw and run: the fit's noise, if all is right."""
    p = {k: np.asarray(v)[..., None] for k, v in params.items() if k in law.param_names}
    mu = np.log(np.asarray(law(p, **inputs), dtype=np.float64))
    return ((np.log(loss) - mu) / np.asarray(sigma)[..., None]).ravel()


def test_fit_tree_holds_replicated_runs_for_arviz(sim_fit):
    import arviz_stats as azs

    tree = sim_fit.tree
    rep = tree["posterior_predictive"]["loss"]
    assert rep.dims == ("chain", "draw", "run")
    assert rep.shape == tree["log_likelihood"]["loss"].shape
    # replicated log loss = the law at each draw plus Student-t(4) noise of scale sigma; a
    # normal (the wrong noise) is rejected: positive control of the test's power
    post = sim_fit.posterior
    inputs = {v: sim_fit.data.column(v) for v in sim_fit.law.variables}
    eps = _standardised(sim_fit.law, post, inputs, rep.values, post["sigma"].values)
    assert stats.kstest(eps, stats.t(4).cdf).pvalue > ALPHA
    assert stats.kstest(eps, stats.norm.cdf).pvalue < 1e-6
    pit = azs.loo_pit(tree, var_names=["loss"])["loss"].values  # ArviZ reads the fit as is
    assert pit.shape == (sim_fit.data.n_runs,) and np.all((pit >= 0) & (pit <= 1))
    assert stats.kstest(pit, "uniform").pvalue > ALPHA  # the model simulated the data


def test_prior_predictive_draws_from_the_priors():
    runs = bs.simulate("chinchilla", seed=1)
    tree = bs.prior_predictive(runs, "chinchilla", num_samples=400, seed=0)
    assert {"prior", "prior_predictive", "observed_data", "constant_data"} <= set(tree.children)
    prior = tree["prior"]
    assert set(prior.data_vars) == {"E", "A", "B", "alpha", "beta", "sigma"}
    loss = tree["prior_predictive"]["loss"]
    assert loss.dims == ("chain", "draw", "run") and loss.shape == (1, 400, len(runs))
    # the parameters follow the stated priors (alpha ~ LogNormal(loc, scale))
    spec = dict(bs.default_priors(bs.get_law("chinchilla"), bs.from_frame(runs))["alpha"].params)
    log_alpha = np.log(prior["alpha"].values.ravel())
    assert stats.kstest(log_alpha, stats.norm(spec["loc"], spec["scale"]).cdf).pvalue > ALPHA
    # and the losses are the law at each prior draw plus the noise
    inputs = {v: runs[v].to_numpy() for v in ("n_params", "n_tokens")}
    eps = _standardised(bs.get_law("chinchilla"), prior, inputs, loss.values, prior["sigma"])
    assert stats.kstest(eps, stats.t(4).cdf).pvalue > ALPHA
    again = bs.prior_predictive(runs, "chinchilla", num_samples=400, seed=0)
    other = bs.prior_predictive(runs, "chinchilla", num_samples=400, seed=1)
    np.testing.assert_array_equal(loss.values, again["prior_predictive"]["loss"].values)
    assert not np.array_equal(loss.values, other["prior_predictive"]["loss"].values)
    with pytest.raises(
        bs.BayescaleError, match="num_samples must be an integer of at least 1; received 0"
    ):
        bs.prior_predictive(runs, "chinchilla", num_samples=0)


def test_check_validates_levels(sim_fit):
    runs = sim_fit.data.table.iloc[:3]
    with pytest.raises(OptionTypeError, match=r"levels must be a sequence"):
        check(sim_fit, runs, levels=0.9)
    with pytest.raises(
        OptionTypeError,
        match=r"levels must hold numbers strictly between 0 and 1; received str: 'a'",
    ):
        check(sim_fit, runs, levels=("a",))


def test_check_warns_about_runs_that_were_in_the_fit(sim_fit):
    fitted = sim_fit.data.table.iloc[[3, 7]][["n_params", "n_tokens", "loss"]]
    with pytest.warns(bs.PlausibilityWarning, match=r"2 of the 2 runs .* were in the fit") as rec:
        check(sim_fit, fitted)
    assert rec[0].filename == __file__
    # a new run at a fitted size (another seed: another loss) is a new run: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check(sim_fit, fitted.assign(loss=fitted["loss"] * 1.001))

"""Break detection: simulated ladders with and without a break, and the 4-digit addition curve.

Each simulated case is one fixed-seed ladder; the rates over many ladders (false alarms,
misses, coverage of the location interval) are measured in
tests/statistical/test_break_rates.py.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale.analysis.breaks import BreakReport, BreakScreen, detect_break
from bayescale.analysis.checks import check
from bayescale.errors import ConvergenceWarning, DataError
from bayescale.io.data import from_frame
from bayescale.model.geometry import BrokenMap, ridge_map
from bayescale.model.priors import default_priors
from bayescale.model.simulation import TRUTHS, sweep_design

BREAK = TRUTHS["broken_power_law"]  # E=0.4, b=3, c0=0.1, c1=0.6, d1=3e3, f1=0.3
FLAT = {"E": BREAK["E"], "A": BREAK["b"] * 100 ** BREAK["c0"], "alpha": BREAK["c0"]}
DESIGN = sweep_design("n_params", 1e2, 1e5, 50)
#: the one-break refit of Caballero et al. on the first 14 runs (README of bnsl_4digit/)
PAPER = {"E": 0.4139, "c1": 5.6629, "d1": 612.58, "rmsle": 1.09e-2}


@pytest.fixture(scope="module")
def break_report():
    runs = bs.simulate("broken_power_law", BREAK, DESIGN, noise=0.01, seed=0)
    return detect_break(runs, variable="n_params", max_breaks=2, seed=0)


@pytest.fixture(scope="module")
def flat_report():
    runs = bs.simulate("power_law", FLAT, DESIGN, noise=0.01, seed=0)
    return detect_break(runs, variable="n_params", max_breaks=2, seed=0)


@pytest.fixture(scope="module")
def bnsl(reference_dataset):
    curve = reference_dataset("bnsl_4digit")
    return curve[curve["split"] == "fit"], curve[curve["split"] == "extrapolate"]


@pytest.mark.slow  # detect_break on 50 runs: tens of seconds
def test_a_break_inside_the_range_is_found(break_report):
    report = break_report
    assert isinstance(report, BreakReport)
    assert report.n_breaks == 1
    row = report.locations.loc["break 1"]
    assert row["q5"] < BREAK["d1"] < row["q95"]
    assert row["exponent_before_q5"] < BREAK["c0"] < row["exponent_before_q95"]
    after = BREAK["c0"] + BREAK["c1"]
    assert row["exponent_after_q5"] < after < row["exponent_after_q95"]
    table = report.summary()
    assert table.index.tolist() == [0, 1, 2] and table["selected"].tolist() == [0, 1, 0]
    # the evidence against the power law is overwhelming by both criteria
    assert table.loc[0, "elpd_diff_loo"] > 4 * table.loc[0, "dse_loo"] + 4
    assert table.loc[0, "elpd_diff_lfo"] > 4 * table.loc[0, "dse_lfo"] + 4
    assert report.fit is report.fits[1]
    assert "n_breaks=1" in repr(report) and "break 1" in repr(report)
    assert "within max(2 x SE" in report.rule


@pytest.mark.slow  # detect_break on 50 runs: tens of seconds
def test_no_break_is_declared_on_a_power_law(flat_report):
    assert flat_report.n_breaks == 0
    # forward selection: one break is not selected, so two are not fitted
    assert set(flat_report.fits) == {0, 1} and list(flat_report.comparison.index) == [0, 1]
    assert "fitted only where" in flat_report.rule
    assert flat_report.locations.empty
    assert list(flat_report.locations.columns[:3]) == ["median", "q5", "q95"]
    assert flat_report.fit.law.name == "power_law"


@pytest.mark.slow
def test_four_digit_addition_fit_with_the_defaults(bnsl):
    # Issue 29: with the defaults a one-break fit must converge (r_hat <= 1.01, no divergence,
    # so no ConvergenceWarning) and forecast the three larger runs: each inside its 90%
    # predictive interval, and the posterior median's RMSLE on them at most twice the paper's
    # refit (2.2e-2). Before the floor's headroom coordinates and the Student-t prior on c1:
    # r_hat 1.034, E 0.16, RMSLE 0.112 and all three runs outside.
    fit_rows, held_out = bnsl
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        fit = bs.fit(
            fit_rows, "broken_power_law", variable="data_size", breaks=1, seed=0, misfit=False
        )
    summary = fit.summary()
    assert summary["r_hat"].max() <= 1.01
    assert int(fit.tree["sample_stats"]["diverging"].values.sum()) == 0
    table = check(fit, held_out).table
    assert not table["outside_90"].any()
    rmsle = float(np.sqrt(np.mean(np.log(table["median"] / table["loss"]) ** 2)))
    assert rmsle <= 2 * PAPER["rmsle"]
    for name in ("E", "c1", "d1"):
        assert summary.loc[name, "q5"] < PAPER[name] < summary.loc[name, "q95"]


@pytest.mark.slow
def test_four_digit_addition_break_is_detected(bnsl):
    fit_rows, held_out = bnsl
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the 2-break model: see problems
        report = detect_break(fit_rows, variable="data_size", max_breaks=1, seed=0)
    assert report.n_breaks == 1
    table = report.summary()
    assert table.loc[0, "elpd_diff_loo"] > max(2 * table.loc[0, "dse_loo"], 4)
    row = report.locations.loc["break 1"]
    assert row["q5"] < PAPER["d1"] < row["q95"]
    # the power law's 90% intervals contain none of the three larger runs
    single = check(report.fits[0], held_out).table
    assert (single["verdict"] == "better than predicted").all()


@pytest.mark.slow  # detect_break on 50 runs: tens of seconds
def test_curves_for_plotting(break_report):
    curves = break_report.curves(num=50)
    assert set(curves["breaks"]) == {0, 1}
    assert len(curves) == 100
    assert (curves["lower"] <= curves["median"]).all()
    assert (curves["median"] <= curves["upper"]).all()
    wide = break_report.curves(num=50, kind="predictive", seed=1)
    width = (curves["upper"] / curves["lower"]).mean()
    assert (wide["upper"] / wide["lower"]).mean() > width


def test_bad_input():
    runs = bs.simulate("power_law", FLAT, DESIGN, noise=0.01, seed=0)
    with pytest.raises(ValueError, match="only laws with breaks; received base='m4'"):
        detect_break(runs, base="m4")
    with pytest.raises(ValueError, match="max_breaks must be 1 or 2"):
        detect_break(runs, max_breaks=3)
    with pytest.raises(ValueError, match="unknown criterion 'aic'"):
        detect_break(runs, criterion="aic")
    with pytest.raises(DataError, match="column 'data_size' not in data"):
        detect_break(runs, variable="data_size")
    with pytest.raises(DataError, match="only 8 runs"):
        detect_break(runs.iloc[:8])
    with pytest.raises(ValueError, match=r"priors name \['alpha_N'\]"):
        detect_break(runs, priors={"alpha_N": bs.Prior("HalfNormal", scale=1.0)})
    frame = pd.DataFrame({"n_params": np.repeat([1e3, 1e4, 1e5], 5), "loss": np.ones(15)})
    with pytest.warns(bs.PlausibilityWarning, match="runs repeat an earlier row exactly"):
        with pytest.raises(DataError, match="3 distinct values"):
            detect_break(frame)
    with pytest.raises(DataError, match="2 groups.*Pass group='group'"):
        detect_break(runs.assign(group=["a", "b"] * 25))
    with pytest.raises(TypeError, match="group must be the name of a column; received int"):
        detect_break(runs, group=3)
    with pytest.raises(TypeError, match="forward must be True or False; received str: 'yes'"):
        detect_break(runs, forward="yes")
    two = pd.concat([runs.assign(g="a"), runs.iloc[:8].assign(g="b")], ignore_index=True)
    # a screen compares a short curve with fewer breaks, but 8 runs are too few for one
    with pytest.raises(DataError, match="curve 'b': 8 runs are too few for 1 breaks"):
        detect_break(two, group="g")
    with pytest.raises(DataError, match="11 runs are too few for 2 breaks.*12 in all"):
        detect_break(runs.iloc[:11])


@pytest.fixture(scope="module")
def broken_setup(model_at_start):
    runs = bs.simulate("broken_power_law", BREAK, DESIGN, noise=0.01, seed=4)
    return model_at_start(runs, bs.get_law("broken_power_law", breaks=2))


def test_broken_map_applies_to_a_uniform_floor_only():
    law = bs.get_law("broken_power_law")
    base = dict.fromkeys(["c0", "b", "f1", "sigma"], "LogNormal") | {"E": "Uniform"}
    base |= {"c1": "StudentT", "d1": "LogUniform"}
    assert isinstance(ridge_map(law, base), BrokenMap)
    assert ridge_map(law, {**base, "E": "LogNormal"}) is None
    assert ridge_map(law, {**base, "b": "Normal"}) is None
    assert ridge_map(bs.get_law("broken_power_law", floor=False), base) is None


def test_broken_map_is_a_bijection_with_its_jacobian(broken_setup):
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import unconstrain_fn

    model, args, start = broken_setup
    ridge = model.ridge
    assert isinstance(ridge, BrokenMap)
    sites = unconstrain_fn(model, args, {}, start)
    z0, _ = ravel_pytree(sites)
    where = ridge.positions(sites)
    rng = np.random.default_rng(5)
    # floors from near zero to near the smallest loss (logit -6 to 6), levels far off
    for shift in rng.normal(0.0, 3.0, size=(12, z0.size)):
        z = z0 + jnp.asarray(shift, z0.dtype)
        y = ridge.to_y(z, args, where)
        np.testing.assert_allclose(ridge.to_z(y, args, where), z, rtol=2e-3, atol=2e-3)
        jac = jax.jacfwd(lambda v: ridge.to_z(v, args, where))(y)
        logdet = np.linalg.slogdet(np.asarray(jac, np.float64))[1]
        np.testing.assert_allclose(ridge.log_det(y, args, where), logdet, rtol=1e-4, atol=1e-3)


def test_broken_law_without_a_floor():
    law = bs.get_law("broken_power_law", variable="n_params", floor=False)
    assert "E" not in law.param_names and law.description.startswith("L = b x^-c0")
    params = {"c0": 0.1, "b": 3.0, "c1": 0.6, "d1": 3e3, "f1": 0.3}
    with_floor = bs.get_law("broken_power_law", variable="n_params")
    x = np.array([1e2, 3e3, 1e5])
    np.testing.assert_allclose(
        np.asarray(law(params, n_params=x)) + 0.4,
        np.asarray(with_floor({**params, "E": 0.4}, n_params=x)),
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="floor must be True or False; received 'no'"):
        bs.get_law("broken_power_law", floor="no")


def test_default_prior_of_an_exponent_change_has_heavy_tails():
    runs = bs.simulate("broken_power_law", BREAK, DESIGN, noise=0.01, seed=0)
    law = bs.get_law("broken_power_law")
    prior = default_priors(law, from_frame(runs))["c1"]
    assert prior.family == "StudentT" and dict(prior.params)["df"] == 3.0


@pytest.mark.slow
def test_many_curves_in_one_call():
    # two curves, one with a break: one call, one report each, the same laws' compiled
    # samplers (the two curves share a bucket)
    broken = bs.simulate("broken_power_law", BREAK, DESIGN, noise=0.01, seed=6)
    flat = bs.simulate("power_law", FLAT, DESIGN, noise=0.01, seed=6)
    table = pd.concat([broken.assign(curve="b"), flat.assign(curve="a")], ignore_index=True)
    before = table.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        screen = detect_break(table, group="curve", max_breaks=1, seed=0, progress_bar=False)
    pd.testing.assert_frame_equal(table, before)
    assert isinstance(screen, BreakScreen) and screen.groups == ("a", "b")
    summary = screen.summary()
    assert summary.index.name == "curve"
    assert summary["n_breaks"].tolist() == [0, 1]
    assert summary.loc["b", "location_q5"] < BREAK["d1"] < summary.loc["b", "location_q95"]
    assert summary.loc["b", "loo_gain"] > 4 * summary.loc["b", "dse_loo"]
    assert screen["b"].n_breaks == 1 and "with a break: 1 (b)" in repr(screen)
    with pytest.raises(KeyError, match="no curve 'c'"):
        screen["c"]


def test_misfit_and_one_progress_bar_pass_through(monkeypatch):
    # plumbing only (the statistics are in the slow tests): every compared law is fitted
    # with the caller's misfit and without a bar of its own
    import bayescale.analysis.breaks as breaks

    seen = []

    class Stop(Exception):
        pass

    def fake_fit(data, law, **kwargs):
        seen.append((law.name, kwargs["misfit"], kwargs["progress_bar"]))
        raise Stop

    monkeypatch.setattr(breaks, "fit", fake_fit)
    runs = bs.simulate("power_law", FLAT, DESIGN, noise=0.01, seed=0)
    with pytest.raises(Stop):
        detect_break(runs, misfit=True, progress_bar=False)
    assert seen == [("power_law", True, False)]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::bayescale.errors.ConvergenceWarning")  # short chains
def test_one_progress_bar_for_the_whole_analysis(capsys):
    runs = bs.simulate("broken_power_law", BREAK, sweep_design("n_params", 1e2, 1e5, 20), seed=1)
    report = detect_break(
        runs,
        variable="n_params",
        max_breaks=1,
        max_refits=0,
        num_chains=2,
        num_warmup=100,
        num_samples=100,
        seed=0,
        progress_bar=True,
    )
    err = capsys.readouterr().err
    assert "detect_break: 0 to 1 breaks" in err and "| 0/6 " in err
    # the fits and refits draw no bar of their own
    assert "fit power_law" not in err and "refit" not in err
    assert set(report.fits) == {0, 1}
    # the curves for plotting predict through the one path (law, misfit, noise)
    curves = report.curves(kind="predictive", num=5, seed=0)
    assert (curves["lower"] < curves["median"]).all() and (curves["median"] < curves["upper"]).all()


def test_refits_of_the_largest_model_are_skipped_only_when_they_cannot_matter():
    # the rule's decision among 0 and 1 breaks is 1 (a gain of 40 nats); the exact refits of
    # the 2-break model matter only when its optimistic PSIS elpd beats that by the margin
    from types import SimpleNamespace

    from bayescale.analysis.breaks import _refits_cannot_matter

    base = np.linspace(-0.5, 0.5, 14)

    def scores(total):
        elpd_i = base + total / 14
        elpd = SimpleNamespace(elpd=float(elpd_i.sum()), elpd_i=SimpleNamespace(values=elpd_i))
        return {"elpd": elpd, "chains": np.full(4, total), "k_left": 0}

    loo = {0: scores(-3.0), 1: scores(37.0), 2: {**scores(40.9), "k_left": 2}}
    why = _refits_cannot_matter(loo, 2.0, 4.0)
    assert "2 runs keep Pareto k" in why and "3.9 nats from the 1-break model" in why
    loo[2] = {**scores(41.1), "k_left": 2}
    assert _refits_cannot_matter(loo, 2.0, 4.0) == ""
    # with 1 break at most, the one-break model is the largest: compared with the power law
    assert _refits_cannot_matter({0: scores(-3.0), 1: scores(0.5)}, 2.0, 4.0)
    assert _refits_cannot_matter({0: scores(-3.0), 1: scores(37.0)}, 2.0, 4.0) == ""

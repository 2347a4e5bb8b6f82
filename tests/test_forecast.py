"""Forecasts: Epoch's point inside the interval, noise model, inputs, extrapolation risk."""

import importlib

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bayescale as bs
from bayescale.analysis.forecast import extrapolation_horizon, forecast
from bayescale.errors import DataError, ExtrapolationWarning
from bayescale.model.simulation import TRUTHS

INSIDE = {"n_params": 1e9, "n_tokens": 2e10}  # inside the simulated ladder's range


def fit_from_draws(law, draws, runs, method="nuts", likelihood="student_t", nu=4.0):
    """A `Fit` around given posterior draws ``(chain, draw)``: plumbing without sampling."""
    import arviz_base as azb

    law = bs.get_law(law)
    tree = azb.from_dict({"posterior": {k: np.asarray(v, float) for k, v in draws.items()}})
    tree.attrs.update(method=method, likelihood=likelihood, nu=nu, law=law.name)
    return bs.Fit(tree, law, None, bs.from_frame(runs))


def constant_draws(law, shape, sigma=None):
    draws = {k: np.full(shape, v) for k, v in TRUTHS[law].items()}
    if sigma is not None:
        draws["sigma"] = np.full(shape, sigma)
    return draws


# ------------------------------------------------------------------------- Epoch (golden)


def test_epoch_interval_contains_epochs_point_value(epoch_fit):
    # Epoch's point estimate (Besiroglu et al. 2024) at Chinchilla's own run: about 1.97
    epoch = float(bs.get_law("chinchilla")(TRUTHS["chinchilla"], n_params=7e10, n_tokens=1.4e12))
    assert epoch == pytest.approx(1.97, abs=0.01)
    with pytest.warns(ExtrapolationWarning, match=r"n_params .*point 0 \+0\.64"):
        fc = forecast(epoch_fit, {"n_params": 7e10, "n_tokens": 1.4e12})
    row = fc.summary(ci_prob=0.9).iloc[0]
    assert row["q5"] < epoch < row["q95"]
    # and the interval is informative: a few percent wide, not the prior
    assert 0.005 < row["rel_width"] < 0.1


# ------------------------------------------------------------------------- draws and noise


def test_draws_layout_and_kinds(sim_fit):
    at = pd.DataFrame({"n_params": [3e8, 1e9, 3e9], "n_tokens": [1e10, 2e10, 6e10]})
    fc = forecast(sim_fit, at)
    post = sim_fit.posterior
    assert fc.draws["loss"].dims == ("chain", "draw", "point")
    assert fc.draws["loss"].shape == (post.sizes["chain"], post.sizes["draw"], 3)
    assert set(fc.tree["predictions"].data_vars) == {"loss", "loss_mean"}
    assert list(fc.tree["predictions_constant_data"].data_vars) == [
        "n_params",
        "n_tokens",
        "compute",
    ]
    assert fc.tree.attrs["kind"] == "predictive" and fc.tree.attrs["seed"] == 0
    mean = forecast(sim_fit, at, kind="mean")
    assert set(mean.tree["predictions"].data_vars) == {"loss_mean"}
    # the mean forecast is the law at each draw (float32: 1e-6)
    law = sim_fit.law
    p = {k: post[k].values[..., None] for k in law.param_names}
    expect = np.asarray(law(p, n_params=at["n_params"].values, n_tokens=at["n_tokens"].values))
    np.testing.assert_allclose(mean.draws["loss"].values, expect, rtol=2e-6)
    np.testing.assert_allclose(fc.tree["predictions"]["loss_mean"], mean.draws["loss"], rtol=1e-6)
    # noise widens the predictive distribution around the same centre
    sd_pred = fc.summary()["sd"].to_numpy()
    sd_mean = mean.summary()["sd"].to_numpy()
    assert np.all(sd_pred > sd_mean)
    np.testing.assert_allclose(fc.summary()["median"], mean.summary()["median"], rtol=2e-3)


@pytest.mark.parametrize(
    ("likelihood", "nu", "dist"),
    [("student_t", 4.0, stats.t(4)), ("normal", 4.0, stats.norm), ("student_t", 3.0, stats.t(3))],
)
def test_predictive_noise_follows_the_likelihood(likelihood, nu, dist):
    # log(pred / mean) / sigma are the noise draws: 200 x 500 = 100k of them. KS at level
    # 0.001 (the seed is fixed; the level is what a correct sampler passes 99.9% of the time).
    # Positive control: the same draws against the wrong family must be rejected.
    runs = bs.simulate("chinchilla", seed=1)
    sigma = 0.02
    fit = fit_from_draws(
        "chinchilla",
        constant_draws("chinchilla", (2, 100), sigma),
        runs,
        likelihood=likelihood,
        nu=nu,
    )
    at = {"n_params": np.geomspace(1e8, 3e9, 500), "n_tokens": 2e10}
    fc = forecast(fit, at, seed=11, warn=False)
    pred = fc.tree["predictions"]
    eps = (np.log(pred["loss"].values) - np.log(pred["loss_mean"].values)).ravel() / sigma
    assert stats.kstest(eps, dist.cdf).pvalue > 1e-3
    wrong = stats.norm if likelihood == "student_t" else stats.t(4)
    assert stats.kstest(eps, wrong.cdf).pvalue < 1e-6


def test_same_seed_same_draws(sim_fit):
    a = forecast(sim_fit, INSIDE, seed=3)
    b = forecast(sim_fit, INSIDE, seed=3)
    c = forecast(sim_fit, INSIDE, seed=4)
    np.testing.assert_array_equal(a.draws["loss"], b.draws["loss"])
    assert not np.array_equal(a.draws["loss"], c.draws["loss"])


def test_map_and_point_fits(sim_fit):
    runs = bs.simulate("chinchilla", seed=1)
    one = fit_from_draws("chinchilla", constant_draws("chinchilla", (1, 1)), runs, method="huber")
    fc = forecast(one, INSIDE, kind="mean")
    assert fc.draws["loss"].shape == (1, 1, 1)
    with pytest.raises(ValueError, match="no noise scale sigma .*Pass kind='mean'"):
        forecast(one, INSIDE)
    laplace = fit_from_draws(
        "chinchilla", constant_draws("chinchilla", (1, 50), 0.01), runs, method="map"
    )
    assert forecast(laplace, INSIDE).draws["loss"].shape == (1, 50, 1)


def test_one_variable_and_data_constrained_laws():
    runs = bs.simulate("power_law", seed=1)
    fit = fit_from_draws("power_law", constant_draws("power_law", (1, 4), 0.01), runs)
    fc = forecast(fit, {"n_params": [1e8, 1e9]})
    assert fc.draws["loss"].shape == (1, 4, 2)
    dc_runs = bs.simulate("data_constrained", seed=1)
    dc = fit_from_draws(
        "data_constrained", constant_draws("data_constrained", (1, 4), 0.01), dc_runs
    )
    with pytest.raises(DataError, match=r"'unique_tokens' not in `at`.*unique_tokens=n_tokens"):
        forecast(dc, {"n_params": 1e9, "n_tokens": 1e10})
    fc = forecast(dc, {"n_params": 1e9, "n_tokens": 1e10, "unique_tokens": 4e9})
    assert np.isfinite(fc.draws["loss"].values).all()


# ------------------------------------------------------------------------- inputs


def test_inputs_are_mapped_and_never_mutated(sim_fit):
    at = pd.DataFrame(
        {"n_params": [1e9, 2e9], "compute": [1.2e20, 2.4e20], "name": ["a", "b"]}, index=[7, 9]
    )
    before = at.copy(deep=True)
    fc = forecast(sim_fit, at, kind="mean")
    pd.testing.assert_frame_equal(at, before)
    np.testing.assert_allclose(fc.points["n_tokens"], at["compute"] / (6 * at["n_params"]))
    assert list(fc.points["name"]) == ["a", "b"] and list(fc.points.index) == [0, 1]
    # N from C and D; scalars broadcast
    fc = forecast(sim_fit, {"n_tokens": 2e10, "compute": [1.2e20, 2.4e20]}, kind="mean")
    np.testing.assert_allclose(fc.points["n_params"], [1e9, 2e9])


def test_bad_inputs_say_what_and_how(sim_fit):
    with pytest.raises(DataError, match=r"'n_tokens' not in `at`.*Pass n_tokens, or compute"):
        forecast(sim_fit, {"n_params": [1e9]})
    with pytest.raises(DataError, match=r"'n_params' in `at` has 1 non-positive .*rows 1"):
        forecast(sim_fit, {"n_params": [1e9, -1.0], "n_tokens": 1e10})
    with pytest.raises(DataError, match=r"non-numeric values \(rows 0\), for example 'big'"):
        forecast(sim_fit, pd.DataFrame({"n_params": ["big"], "n_tokens": [1e10]}))
    with pytest.raises(DataError, match="do not broadcast"):
        forecast(sim_fit, {"n_params": [1e9, 2e9], "n_tokens": [1e10, 2e10, 3e10]})
    with pytest.raises(DataError, match="must be a DataFrame or a mapping"):
        forecast(sim_fit, [1e9, 1e10])
    with pytest.raises(ValueError, match="unknown kind 'median'. Available: predictive, mean"):
        forecast(sim_fit, INSIDE, kind="median")
    with pytest.raises(bs.OptionTypeError, match=r"seed must be an integer .*received float: 1.5"):
        forecast(sim_fit, INSIDE, seed=1.5)


# ------------------------------------------------------------------------- extrapolation risk


def test_extrapolation_warning_names_variables_and_decades(sim_fit):
    with pytest.warns(ExtrapolationWarning) as record:
        fc = forecast(sim_fit, {"n_params": [1e9, 1e11], "n_tokens": [2e10, 2e12]})
    message = str(record[0].message)
    assert record[0].filename == __file__  # stacklevel points at the caller
    assert "n_params (observed" in message and "point 1 +" in message
    assert "compute (observed" in message
    decades = fc.decades_beyond()
    assert decades.loc[0].eq(0).all()
    top = sim_fit.data.table["n_params"].max()
    assert decades.loc[1, "n_params"] == pytest.approx(np.log10(1e11 / top))
    # many points: counted, not listed
    with pytest.warns(ExtrapolationWarning, match=r"n_params .*: 10 of 10 points, from -"):
        forecast(sim_fit, {"n_params": np.geomspace(1e3, 1e5, 10), "n_tokens": 2e10})


def test_risk_measures_per_point(sim_fit):
    at = {"n_params": [1e9, 1e10, 1e11], "n_tokens": [2e10, 2e11, 2e12]}
    fc = forecast(sim_fit, at, warn=False)
    table = fc.summary(ci_prob=0.9, target=2.3)
    for col in ("mean", "sd", "median", "q5", "q95", "rel_width", "decades_beyond", "prob_below"):
        assert col in table.columns
    np.testing.assert_allclose(table["rel_width"], (table["q95"] - table["q5"]) / table["median"])
    np.testing.assert_allclose(table["rel_width"], fc.relative_width(0.9))
    # extrapolation widens the interval (two decades out: clearly; one decade out the noise,
    # 4.3 sigma = 0.037 wide, still dominates)
    assert table["rel_width"].iloc[2] > 1.1 * table["rel_width"].iloc[0]
    assert table["decades_beyond"].iloc[0] == 0 and table["decades_beyond"].iloc[2] > 1
    np.testing.assert_array_equal(fc.prob_below(np.inf), 1.0)
    low, high = fc.prob_below(table["median"].to_numpy()), fc.prob_below(table["q95"].to_numpy())
    np.testing.assert_allclose(low, 0.5, atol=0.01)
    np.testing.assert_allclose(high, 0.95, atol=0.01)
    q = fc.quantiles([0.05, 0.5, 0.95])
    assert list(q.columns) == ["q5", "q50", "q95"] and q.index.name == "point"
    assert "points beyond the observed runs" in repr(fc) and "<table" in fc._repr_html_()


def test_extrapolation_horizon(sim_fit):
    # on this ladder the 90% width grows from 0.038 (noise, sigma = 0.009) inside the data to
    # 0.055 six decades beyond: 0.045 is crossed 1-2 decades out, 0.05 about 4
    loose = extrapolation_horizon(sim_fit, tolerance=0.05)
    tight = extrapolation_horizon(sim_fit, tolerance=0.045)
    top = sim_fit.data.table["compute"].max()
    assert loose.max_observed_compute == top
    curve = loose.curve
    for col in ("compute", "n_params", "n_tokens", "median", "q5", "q95", "rel_width"):
        assert col in curve.columns
    assert curve["rel_width"].iloc[-1] > curve["rel_width"].iloc[0]
    assert top < tight.compute < loose.compute
    # below the horizon every grid point is under the tolerance, just above it is not
    under = curve["compute"] <= loose.compute
    assert (curve.loc[under, "rel_width"] < 0.05).all()
    assert curve.loc[~under, "rel_width"].iloc[0] >= 0.05
    assert loose.decades == pytest.approx(np.log10(loose.compute / top))
    # the run's noise alone is about 4.3 sigma wide: a tolerance below it is never met
    assert np.isnan(extrapolation_horizon(sim_fit, tolerance=0.01).compute)
    wide = extrapolation_horizon(sim_fit, tolerance=10.0)
    assert wide.beyond_grid and wide.compute == curve["compute"].iloc[-1]
    with pytest.raises(ValueError, match="tolerance must be a positive, finite number; received 0"):
        extrapolation_horizon(sim_fit, tolerance=0)
    with pytest.raises(ValueError, match="strictly increasing"):
        extrapolation_horizon(sim_fit, tolerance=0.1, compute=[1e22, 1e21])


def test_split_over_devices_matches_one_call():
    # forecasts and the optimiser cut the draws over host devices (the tests have 4): the
    # result must not depend on the cut
    import jax

    from bayescale.analysis.common import split_over_devices as _split_over_devices

    fn = jax.jit(lambda a, b, c: (a["x"] * c, None if b is None else b + c))
    a = {"x": np.arange(12.0).reshape(6, 2)}
    one = _split_over_devices(fn, (a, None), (2.0,), 6, 6)
    many = _split_over_devices(fn, (a, None), (2.0,), 6, 1)
    assert many[1] is None and isinstance(many[0], np.ndarray)
    np.testing.assert_array_equal(one[0], many[0])
    np.testing.assert_array_equal(many[0], a["x"] * 2)


@pytest.mark.parametrize("nu", [4.0, 5.0])  # t_4 by inverse CDF; other nu by standard_t
def test_chunked_forecast_is_identical_to_one_chunk(monkeypatch, nu):
    # issue: 1e6 points x 400 draws peaked at 8.2 GB for a 1.6 GB result; draws now run in
    # chunks, and the noise stream must not depend on the chunk size
    forecast_module = importlib.import_module("bayescale.analysis.forecast")  # not the function

    fit = bs.fit(
        bs.simulate("power_law", seed=2), "power_law", method="map", nu=nu, seed=0, misfit=False
    )
    at = {"n_params": np.geomspace(1e7, 1e10, 7)}
    whole = forecast(fit, at, seed=3)
    monkeypatch.setattr(forecast_module, "FORECAST_CHUNK", 5)  # one draw per chunk
    chunked = forecast(fit, at, seed=3)
    assert chunked.tree["predictions"].identical(whole.tree["predictions"])
    assert not np.array_equal(  # positive control: another seed gives other draws
        forecast(fit, at, seed=4).draws["loss"].values, whole.draws["loss"].values
    )


def test_chunked_misfit_forecast_is_identical_to_one_chunk(monkeypatch):
    # the misfit's walks continue beyond the fitted runs from normals drawn block by block of
    # draws (`MisfitAt`): points below, inside and above the range, one draw per chunk
    forecast_module = importlib.import_module("bayescale.analysis.forecast")  # not the function

    fit = bs.fit(bs.simulate("chinchilla", seed=2), "chinchilla", method="map", seed=0)
    assert fit.misfit is not None
    n = np.sqrt(np.geomspace(1e16, 1e24, 9) / 120)  # 20 tokens per parameter
    at = {"n_params": n, "n_tokens": 20 * n}
    whole = forecast(fit, at, seed=3, warn=False)
    t = fit.misfit_coords.scaled(at)[0]
    assert (t < -1).sum() >= 2 and (t > 1).sum() >= 2 and (abs(t) < 1).any()
    monkeypatch.setattr(forecast_module, "FORECAST_CHUNK", 5)  # one draw per chunk
    chunked = forecast(fit, at, seed=3, warn=False)
    assert chunked.tree["predictions"].identical(whole.tree["predictions"])
    spread = whole.tree["predictions"]["loss_mean"] / whole.tree["predictions"]["loss_law"]
    assert np.all(spread.std(("chain", "draw")).values > 0)  # the misfit is there


# ------------------------------------------------------------------ summary statistics


def test_per_point_quantiles_of_signed_values_match_numpy():
    # losses are never negative, and their quantiles come from integer partitions of the float
    # bits; a negative value (or -0.0) anywhere in a block takes the float partition instead
    from bayescale.analysis.forecast import _per_point

    rng = np.random.default_rng(4)
    x = rng.standard_normal((1001, 300)).astype(np.float32)
    x[:, 5] = np.float32(-0.0)
    probs = [0.5, 0.05, 0.95, 0.0, 1.0]
    got = _per_point(x, probs)["q"]
    np.testing.assert_allclose(got, np.quantile(x, probs, axis=0), rtol=1e-6, atol=0)


def test_per_point_statistics_match_numpy():
    """Quantiles (NumPy's linear method), mean, sd and variance of the log, point by point.

    NaN draws give NaN quantiles; an infinite draw stays infinite where NumPy's interpolation
    gives NaN (``inf * 0``), the only place where they may differ.
    """
    from bayescale.analysis.forecast import _log_variance, _per_point

    rng = np.random.default_rng(3)
    for n_draw, n_point in [(4000, 300), (1, 5), (2, 7), (7, 300), (1001, 129)]:
        x = np.exp(rng.standard_normal((n_draw, n_point)) * 0.05 + 0.7).astype(np.float32)
        if n_draw > 2:
            x[0, 1], x[1, 2], x[:, 3] = np.nan, np.inf, np.inf
        probs = [0.5, 0.05, 0.95, 0.0, 1.0, 0.123]
        got = _per_point(x, probs, moments=True, log_var=True)
        with np.errstate(invalid="ignore"):
            ref = np.quantile(x, probs, axis=0)
        assert np.array_equal(np.isnan(got["q"]), np.isnan(ref) & ~np.isinf(got["q"]))
        fine = np.isfinite(ref)
        np.testing.assert_allclose(got["q"][fine], ref[fine], rtol=1e-6)
        finite = np.isfinite(x).all(axis=0)
        x64 = x[:, finite].astype(np.float64)
        np.testing.assert_allclose(got["mean"][finite], x64.mean(axis=0), rtol=1e-9)
        logs = np.log(x64).var(axis=0)
        np.testing.assert_allclose(got["log_var"][finite], logs, rtol=1e-4, atol=1e-12)
        np.testing.assert_allclose(_log_variance(x[:, finite]), logs, rtol=1e-4, atol=1e-12)
        if n_draw > 1:
            np.testing.assert_allclose(got["sd"][finite], x64.std(axis=0, ddof=1), rtol=1e-6)
        else:
            assert np.isnan(got["sd"]).all()

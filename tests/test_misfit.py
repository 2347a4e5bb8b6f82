"""The misfit observation model: its forecasts, its shrinkage, and the backtest verb."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale.cli import main
from bayescale.model.misfit import Misfit, MisfitCoords, misfit_draws_at

DRAWS = dict(num_warmup=400, num_samples=400)


@pytest.fixture(scope="module")
def ladder() -> pd.DataFrame:
    return bs.simulate("chinchilla", seed=4)


@pytest.fixture(scope="module")
def misfit_fit(ladder):
    return bs.fit(ladder, "chinchilla", misfit=True, seed=4, **DRAWS)


def test_continuation_shares_delta_at_equal_u_and_grows_like_brownian_motion():
    """Beyond the range, Var delta grows by s^2 d: checked with 20000 draws to 5 SE."""
    spec = Misfit(knots=4)
    coords = MisfitCoords(u_mid=0.0, half=1.0, r_mid=0.0, tilt=False)
    n = 20000
    post = {
        "misfit_level": np.full(n, 0.02),
        "misfit_level_knots": np.zeros((n, 4)),
    }
    x = 10.0 ** np.array([0.5, 2.0, 2.0, 3.0])  # inside, 1 decade beyond (twice), 2 beyond
    delta = misfit_draws_at(spec, coords, post, {"data_size": x}, np.random.default_rng(0))
    assert np.all(delta[:, 0] == 0.0)
    np.testing.assert_array_equal(delta[:, 1], delta[:, 2])
    for col, d in ((1, 1.0), (3, 2.0)):
        var, expected = delta[:, col].var(), 0.02**2 * d
        assert abs(var - expected) < 5 * expected * np.sqrt(2 / n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_misfit_blocks_of_draws_give_the_whole(dtype):
    """`MisfitAt.block` over any split of the draws gives the rows of one block, bit for bit.

    With tilt and an orthogonalising shift, points below, inside and above the fitted range
    (with a tie in u beyond it); the stream moves past the normals the draws use.
    """
    from threadpoolctl import threadpool_limits

    from bayescale.model.misfit import misfit_at

    spec = Misfit()
    coords = MisfitCoords(u_mid=20.0, half=1.0, r_mid=1.0, tilt=True)
    rng = np.random.default_rng(5)
    n_draw = 37
    post = {
        "misfit_level": rng.uniform(0.01, 0.05, n_draw),
        "misfit_tilt": rng.uniform(0.01, 0.05, n_draw),
        "misfit_level_knots": rng.standard_normal((n_draw, spec.knots)) * 0.01,
        "misfit_tilt_knots": rng.standard_normal((n_draw, spec.knots)) * 0.01,
        "misfit_shift": rng.standard_normal((n_draw, 3)) * 0.01,
        "misfit_on": (rng.uniform(size=n_draw) < 0.8).astype(float),
    }
    n = np.array([1e7, 1e8, 1e9, 1e10, 1e11, 1e11, 1e12, 1e13])
    d = np.array([1e9, 1e10, 2e10, 1e11, 1e12, 1e12, 1e13, 1e14])
    jac = rng.standard_normal((n.size, 3))
    jac[5] = jac[4]  # points 4 and 5 are the same run
    stream = np.random.default_rng(9)
    at = misfit_at(spec, coords, post, {"n_params": n, "n_tokens": d}, stream, jac)

    def block(a, b):
        with threadpool_limits(limits=1, user_api="blas"):
            return at.block(a, b, out=np.empty((b - a, n.size), dtype))

    whole = block(0, n_draw)
    if dtype == np.float64:  # all draws in one product: the same up to BLAS's rounding
        np.testing.assert_allclose(at.whole(), whole, rtol=1e-12, atol=1e-15)
    for cuts in ([0, 1, 2, 10, n_draw], [0, 20, n_draw], list(range(n_draw + 1))):
        parts = [block(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal(whole[:, 4], whole[:, 5])  # the same point, the same delta
    np.testing.assert_array_equal(whole[post["misfit_on"] == 0], 0.0)
    assert np.all(whole[post["misfit_on"] == 1] != 0.0)
    # the caller's stream moves on: the next draw is not one the walks used
    fresh = np.random.default_rng(9)
    fresh.bit_generator.advance(n_draw * at.normals // 2)
    assert stream.random() == fresh.random()


@pytest.mark.slow
def test_misfit_fit_reports_its_scales_and_converges(misfit_fit):
    summary = misfit_fit.summary()
    assert {"misfit_level", "misfit_tilt"} <= set(summary.index)
    assert misfit_fit.misfit == Misfit()
    assert not misfit_fit.problems()
    assert misfit_fit.settings.target_accept == 0.95


@pytest.mark.slow
def test_misfit_is_orthogonal_to_the_law_at_the_fitted_runs(misfit_fit, ladder):
    """The model's delta at the fitted runs has no component the law can express.

    Rebuilt by the prediction path (`predictive`) from the stored walks and shift: J^T delta
    at the anchor vanishes for every draw, up to float32 rounding of the model's projection
    (relative 1e-3 of |J| |delta|, where the rounding is about 1e-6).
    """
    from bayescale.analysis.predict import predictive
    from bayescale.io.data import from_frame
    from bayescale.model.misfit import law_jacobian

    coords = misfit_fit.misfit_coords
    assert set(coords.anchor) == set(misfit_fit.law.param_names)
    runs = from_frame(ladder)
    delta = predictive(misfit_fit, runs, rng=np.random.default_rng(0)).misfit
    logx = {v: np.log(runs.column(v)) for v in misfit_fit.law.variables}
    jac = law_jacobian(misfit_fit.law, coords.anchor, logx)
    inner = delta @ jac  # (draw, parameter)
    bound = 1e-3 * np.linalg.norm(delta, axis=1)[:, None] * np.linalg.norm(jac, axis=0)[None]
    assert np.all(np.abs(inner) <= bound)
    assert np.median(np.linalg.norm(delta, axis=1)) > 0  # not orthogonal by being zero


@pytest.mark.slow
def test_misfit_shrinks_when_the_law_is_exact(misfit_fit):
    """Simulated from the exact law: both scales' posteriors sit well below their priors'."""
    d = misfit_fit.draws()
    for name in ("misfit_level", "misfit_tilt"):
        prior_median = 0.6745 * 0.03
        assert np.median(d[name]) < prior_median, name


@pytest.mark.slow
def test_forecast_widens_with_distance_and_says_why(misfit_fit, ladder):
    top = ladder["compute"].max()
    n = 1e9
    at = pd.DataFrame({"n_params": n, "compute": top * np.array([1.0, 10.0, 1000.0])})
    fc = bs.forecast(misfit_fit, at, warn=False)
    table = fc.summary()
    assert table["rel_width"].is_monotonic_increasing
    shares = table[["share_parameter", "share_misfit", "share_noise"]]
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    assert shares["share_misfit"].iloc[-1] > shares["share_misfit"].iloc[0]
    exact = bs.fit(ladder, "chinchilla", seed=4, misfit=False, **DRAWS)
    exact = bs.forecast(exact, at, warn=False)
    assert (exact.summary()["share_misfit"] == 0).all()


@pytest.mark.slow
def test_every_verb_takes_a_misfit_fit(misfit_fit, ladder, tmp_path):
    new = ladder.iloc[:5]
    with pytest.warns(bs.PlausibilityWarning, match="5 of the 5 runs passed to check were in"):
        assert len(bs.check(misfit_fit, new).table) == 5  # fitted runs: plumbing only
    assert np.isfinite(bs.ppc(misfit_fit).table["pit"]).all()
    alloc = bs.compute_optimal(misfit_fit, [1e22], warn=False)
    assert np.isfinite(alloc.summary()["n_params_median"]).all()
    loaded = bs.load_fit(misfit_fit.save(tmp_path / "m.nc"))
    assert loaded.misfit == misfit_fit.misfit and loaded.misfit_coords == misfit_fit.misfit_coords
    a = bs.forecast(loaded, {"n_params": 1e10, "n_tokens": 2e11}, warn=False, seed=3)
    b = bs.forecast(misfit_fit, {"n_params": 1e10, "n_tokens": 2e11}, warn=False, seed=3)
    np.testing.assert_array_equal(a.draws["loss"].values, b.draws["loss"].values)


def test_the_misfit_is_the_default_and_false_gives_the_exact_law(ladder):
    assert bs.fit(ladder, "chinchilla", method="map").misfit == Misfit()
    assert bs.fit(ladder, "chinchilla", method="map", misfit=False).misfit is None
    assert bs.fit(ladder, "chinchilla", method="huber").misfit is None  # a point fit of the law


def test_misfit_option_errors(ladder):
    with pytest.raises(bs.OptionTypeError, match="misfit must be"):
        bs.fit(ladder, "chinchilla", misfit="yes")
    with pytest.raises(bs.OptionError, match="Huber point fit has no misfit"):
        bs.fit(ladder, "chinchilla", misfit=True, method="huber")
    with pytest.raises(bs.OptionError, match="knots must be at least 4"):
        Misfit(knots=2)


@pytest.mark.slow
def test_backtest_scores_every_model(ladder):
    result = bs.backtest(ladder, "chinchilla", holdout=1 / 3, models=("exact", "huber"), **DRAWS)
    summary = result.summary()
    assert list(summary.index) == ["exact", "huber"]
    assert summary.loc["exact", "n"] == summary.loc["huber", "n"] > 0
    assert 0 <= summary.loc["exact", "coverage_90"] <= 1
    assert np.isnan(summary.loc["huber", "coverage_90"])  # a point fit has no interval
    assert (result.runs["distance"] >= 0).all()
    assert set(result.by_distance().columns) >= {"coverage_90", "n"}


def test_backtest_bad_holdout(ladder):
    with pytest.raises(bs.OptionError, match="holdout must be"):
        bs.backtest(ladder, holdout=2.5)
    with pytest.raises(bs.OptionError, match="lacks"):
        bs.backtest(ladder, holdout=1, budget_column="budget")
    with pytest.raises(bs.OptionError, match="unknown models"):
        bs.backtest(ladder, models=("bootstrap",))
    with pytest.raises(bs.OptionTypeError, match=r"misfit must be a bayescale.Misfit.*str"):
        bs.backtest(ladder, misfit="yes")
    with pytest.raises(bs.OptionError, match=r"no model to backtest \(misfit=False leaves"):
        bs.backtest(ladder, models=("misfit",), misfit=False)


def test_backtest_fits_its_misfit_model_with_the_given_settings(ladder, monkeypatch):
    import importlib

    module = importlib.import_module(
        "bayescale.analysis.backtest"
    )  # the name bs.backtest is the verb
    seen = []

    class Stop(Exception):
        pass

    def fake_fit(train, law, **options):
        seen.append(options.get("misfit"))
        raise Stop

    monkeypatch.setattr(module, "fit", fake_fit)
    # as in fit: True is the default misfit model, as None is
    settings = ((None, Misfit()), (True, Misfit()), (Misfit(p_exact=0.5), Misfit(p_exact=0.5)))
    for given, used in settings:
        with pytest.raises(Stop):
            bs.backtest(ladder, models=("misfit",), misfit=given)
        assert seen[-1] == used
    with pytest.raises(Stop):  # misfit=False leaves the misfit model out: the exact law first
        bs.backtest(ladder, models=("misfit", "exact"), misfit=False)
    assert seen[-1] is False  # fit's exact law (None would be fit's default, the misfit)
    with pytest.raises(Stop):
        bs.backtest(ladder, models=("exact",), misfit=Misfit(p_exact=0.5))
    assert seen[-1] is False


def test_cli_backtest(ladder, tmp_path, capsys):
    csv = tmp_path / "runs.csv"
    ladder.to_csv(csv, index=False)
    code = main(
        ["backtest", str(csv), "--model", "exact", "--warmup", "300", "--samples", "300",
         "--plot", str(tmp_path / "bt.png"), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "Coverage of held-out runs" in out and (tmp_path / "bt.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::bayescale.ConvergenceWarning")  # short chains: plumbing only
def test_exact_or_misfit_mixture_scores_and_forecasts_given_its_indicator(ladder):
    """p_exact > 0: each draw carries the misfit's weight and a 0/1 indicator drawn from it;
    pointwise densities and forecasts use the indicator; the same seed gives the same draws."""
    spec = Misfit(p_exact=0.5)
    kw = dict(misfit=spec, num_warmup=200, num_samples=200, seed=5)
    a, b = bs.fit(ladder, "chinchilla", **kw), bs.fit(ladder, "chinchilla", **kw)
    post = a.posterior
    weight, on = post["misfit_weight"].values, post["misfit_on"].values
    assert np.all((weight >= 0) & (weight <= 1)) and set(np.unique(on)) <= {0.0, 1.0}
    np.testing.assert_array_equal(on, b.posterior["misfit_on"].values)
    assert "_pointwise" not in post
    ll = a.tree["log_likelihood"]["loss"].values
    assert np.all(np.isfinite(ll)) and np.all(ll != 0.0)  # every run scored, given the draw
    at = {"n_params": 1e10, "n_tokens": 2e11}
    fc = bs.forecast(a, at, warn=False, seed=3)
    mean, law = (fc.tree["predictions"][k].values.ravel() for k in ("loss_mean", "loss_law"))
    assert np.all(mean[on.ravel() == 0] == law[on.ravel() == 0])  # exact-law draws: no misfit
    assert np.any(mean[on.ravel() == 1] != law[on.ravel() == 1])
    with pytest.raises(bs.OptionError, match="p_exact must be a probability"):
        Misfit(p_exact=1.0)

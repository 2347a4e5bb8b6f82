import dataclasses
import importlib

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale.errors import ConvergenceWarning, PriorError


def test_tree_has_the_groups_and_provenance(sim_fit):
    tree = sim_fit.tree
    for group in ("posterior", "sample_stats", "log_likelihood", "observed_data", "constant_data"):
        assert group in tree.children, group
    assert set(sim_fit.posterior.data_vars) == {"E", "A", "B", "alpha", "beta", "sigma"}
    assert tree["log_likelihood"]["loss"].dims == ("chain", "draw", "run")
    assert sim_fit.settings.law == "chinchilla" and sim_fit.settings.seed == 1
    assert sim_fit.settings.priors["alpha"].family == "LogNormal"
    assert tree.attrs["bayescale_version"] == bs.__version__
    # the settings are one attribute, beside the version and the law's record
    assert set(tree.attrs) == {
        "bayescale_settings", "bayescale_version", "law_declaration", "law_fingerprint"
    }  # fmt: skip


def test_summary_is_indexed_by_parameter(sim_fit):
    table = sim_fit.summary()
    assert list(table.index) == ["E", "alpha", "beta", "A", "B", "sigma"]
    for col in ("mean", "sd", "median", "q5", "q95", "ess_bulk", "ess_tail", "r_hat"):
        assert col in table.columns
    assert "diagnostics: ok" in repr(sim_fit)


def test_save_and_load_round_trip_exactly(sim_fit, tmp_path):
    path = sim_fit.save(tmp_path / "sub" / "fit.nc")
    assert not list(path.parent.glob("*.tmp"))
    loaded = bs.load_fit(path)
    assert loaded.tree.identical(sim_fit.tree)
    pd.testing.assert_frame_equal(loaded.summary(), sim_fit.summary())
    assert loaded.law is sim_fit.law
    assert repr(loaded.priors) == repr(sim_fit.priors)


def test_load_errors(tmp_path):
    with pytest.raises(bs.BayescaleError, match="no such file"):
        bs.load_fit(tmp_path / "absent.nc")
    bad = tmp_path / "bad.nc"
    bad.write_text("not netcdf")
    with pytest.raises(bs.BayescaleError, match="could not read"):
        bs.load_fit(bad)


def test_same_seed_same_draws():
    runs = bs.simulate("power_law", seed=2)
    # default draws: at 4 x 300, r_hat lands near 1.01 by chance (seed 8: 1.0100 for sigma)
    kwargs = dict(law="power_law", seed=7, misfit=False)
    a, b = bs.fit(runs, **kwargs), bs.fit(runs, **kwargs)
    np.testing.assert_array_equal(a.posterior["alpha"].values, b.posterior["alpha"].values)
    rep = "posterior_predictive"
    np.testing.assert_array_equal(a.tree[rep]["loss"].values, b.tree[rep]["loss"].values)
    # the seed is used: another seed gives other draws (else the equality above proves nothing)
    c = bs.fit(runs, **{**kwargs, "seed": 8})
    assert not np.array_equal(a.posterior["alpha"].values, c.posterior["alpha"].values)
    assert not np.array_equal(a.tree[rep]["loss"].values, c.tree[rep]["loss"].values)


def test_quantile_columns_are_named_alike_in_every_table(sim_fit):
    from bayescale.analysis.forecast import forecast

    at = {"n_params": 1e9, "n_tokens": 2e10}
    for ci in (0.9, 2 / 3):
        in_fit = [c for c in sim_fit.summary(ci_prob=ci).columns if c.startswith("q")]
        in_fc = [c for c in forecast(sim_fit, at).summary(ci_prob=ci).columns if c[0] == "q"]
        assert in_fit == in_fc, ci
    assert in_fit == ["q16.66666667", "q83.33333333"]


def test_too_short_run_warns_naming_parameters():
    # positive control: 20 warm-up steps cannot adapt a dense mass matrix
    runs = bs.simulate("chinchilla", seed=5)
    with pytest.warns(ConvergenceWarning, match=r"(r_hat above 1\.01|ESS below).* for .*alpha"):
        result = bs.fit(runs, "chinchilla", num_warmup=20, num_samples=30, seed=3, misfit=False)
    assert "WARNING" in repr(result)


def test_prior_override_and_errors():
    runs = bs.simulate("power_law", seed=2)
    with pytest.raises(PriorError, match=r"'alpah'.*Did you mean 'alpha'"):
        bs.fit(
            runs, "power_law", priors={"alpah": bs.Prior("Normal", loc=0, scale=1)}, misfit=False
        )
    with pytest.raises(PriorError, match=r"must be a bayescale.Prior"):
        bs.fit(runs, "power_law", priors={"alpha": 0.3}, misfit=False)
    with pytest.raises(PriorError, match=r"Normal takes parameters \['loc', 'scale'\]"):
        bs.Prior("Normal", mu=0, sigma=1)
    tight = bs.fit(
        runs,
        "power_law",
        method="map",
        seed=0,
        priors={"alpha": bs.Prior("LogNormal", loc=np.log(0.2), scale=0.01)},
        misfit=False,
    )
    assert tight.summary().loc["alpha", "median"] == pytest.approx(0.2, rel=0.05)


def test_bad_arguments():
    runs = bs.simulate("power_law", seed=2)
    with pytest.raises(ValueError, match=r"unknown method 'mcmc'\. Available: nuts, map, huber"):
        bs.fit(runs, "power_law", method="mcmc", misfit=False)
    with pytest.raises(ValueError, match=r"unknown likelihood 'cauchy'"):
        bs.fit(runs, "power_law", likelihood="cauchy", misfit=False)
    grouped = runs.assign(group=np.where(np.arange(len(runs)) % 2, "a", "b"))
    with pytest.raises(bs.BayescaleError, match="has 2 groups"):
        bs.fit(grouped, "power_law", misfit=False)


def test_load_refuses_a_law_registered_over_the_saved_one(tmp_path):
    # issue: after register_law(name, other_fn, overwrite=True), load_fit gave a wrong fit
    base = bs.get_law("power_law")
    params = {"E": "floor", "alpha": "exponent"}

    def floor_law(p, logx):
        return jnp.log(p["E"]) - p["alpha"] * 0.01 * logx["n_params"]

    def other_law(p, logx):
        return jnp.log(p["E"]) - p["alpha"] * 0.02 * logx["n_params"]

    name = "test_overwritten_law"
    try:
        bs.register_law(name, floor_law, variables=("n_params",), params=params)
        runs = bs.simulate("power_law", seed=2)
        path = bs.fit(runs, name, method="huber").save(tmp_path / "fit.nc")
        assert bs.load_fit(path).law.fn is floor_law  # the same law loads

        bs.register_law(name, other_law, variables=("n_params",), params=params, overwrite=True)
        with pytest.raises(bs.LawError, match=r"computes something else.*Register the law"):
            bs.load_fit(path)
        swapped = {"E": "floor", "alpha": "shape"}
        bs.register_law(name, floor_law, variables=("n_params",), params=swapped, overwrite=True)
        with pytest.raises(bs.LawError, match=r"declared as .*'exponent'.*now is declared as"):
            bs.load_fit(path)
        del bs.LAWS[name]
        with pytest.raises(bs.LawError, match=rf"law '{name}', which is not registered.*first"):
            bs.load_fit(path)
    finally:
        bs.LAWS.pop(name, None)
    assert base is bs.get_law("power_law")


def test_map_fit_says_it_has_no_chains_and_reports_a_mode_at_a_prior_bound():
    runs = bs.simulate("power_law", seed=2)  # alpha = 0.345 in truth
    fit = bs.fit(runs, "power_law", method="map", seed=0, misfit=False)
    assert "diagnostics: ok" not in repr(fit) and "no chains" in repr(fit)
    capped = {"alpha": bs.Prior("Uniform", low=0.05, high=0.2)}
    with pytest.warns(ConvergenceWarning, match=r"MAP estimate of alpha sits at the upper bound"):
        bounded = bs.fit(runs, "power_law", method="map", seed=0, priors=capped, misfit=False)
    assert "Uniform(low=0.05, high=0.2)" in bounded.problems()[0]
    assert "WARNING" in repr(bounded)


def test_map_fit_reports_a_laplace_failure(monkeypatch):
    fit_module = importlib.import_module("bayescale.inference.fit")  # bs.fit is the function

    real = fit_module.laplace_fit

    def not_positive_definite(*args, **kwargs):
        lap = real(*args, **kwargs)
        return dataclasses.replace(lap, ok=False, message="Hessian not positive definite.")

    monkeypatch.setattr(fit_module, "laplace_fit", not_positive_definite)
    with pytest.warns(ConvergenceWarning, match="Hessian not positive definite"):
        fit = bs.fit(
            bs.simulate("power_law", seed=2), "power_law", method="map", seed=0, misfit=False
        )
    assert fit.problems() == ["Hessian not positive definite."]
    assert "WARNING: Hessian not positive definite." in repr(fit)


def test_summary_of_an_unidentified_fit_has_no_inf_sd_and_no_overflow_warning():
    fit = bs.fit(bs.simulate("power_law", seed=2), "power_law", method="map", seed=0, misfit=False)
    post = fit.tree["posterior"].to_dataset()
    rng = np.random.default_rng(0)
    shape = post["A"].shape  # amplitudes of an unidentified law wander to the float range
    post["A"] = (post["A"].dims, 1e300 * rng.uniform(0.5, 1.5, shape))
    post["alpha"] = (post["alpha"].dims, (1e30 * rng.uniform(0.5, 1.5, shape)).astype(np.float32))
    tree = fit.tree.copy()
    tree["posterior"] = post
    wide = bs.Fit(tree, fit.law, fit.priors, fit.data)
    table = wide.summary()  # filterwarnings=error: an overflow warning fails here
    assert np.isfinite(table[["mean", "sd"]].to_numpy()).all()
    reference = 1e300 * np.std(post["A"].values / 1e300, ddof=1)
    np.testing.assert_allclose(table.loc["A", "sd"], reference, rtol=1e-9)
    assert table.loc["A", "sd"] == pytest.approx(1e300 / np.sqrt(12), rel=0.1)


def test_summary_validates_ci_prob():
    fit = bs.fit(bs.simulate("power_law", seed=2), "power_law", method="huber")
    with pytest.raises(bs.OptionError, match=r"ci_prob must lie strictly between 0 and 1"):
        fit.summary(ci_prob=90)


@pytest.mark.parametrize(
    ("family", "params", "message"),
    [
        ("Normal", {"loc": 0.0, "scale": 0.0}, r"Normal parameter scale must be positive"),
        ("HalfNormal", {"scale": -1.0}, r"HalfNormal parameter scale must be positive"),
        ("Gamma", {"concentration": 2.0, "rate": 0.0}, r"parameter rate must be positive"),
        ("Uniform", {"low": 1.0, "high": 1.0}, r"Uniform needs low < high; received low=1"),
        ("LogUniform", {"low": 0.0, "high": 1.0}, r"LogUniform needs 0 < low"),
        ("LogNormal", {"loc": float("nan"), "scale": 1.0}, r"parameter loc=nan must be finite"),
        ("Normal", {"loc": "0", "scale": 1.0}, r"parameter loc must be a number; received '0'"),
    ],
)
def test_priors_are_validated_when_built(family, params, message):
    with pytest.raises(PriorError, match=message):
        bs.Prior(family, **params)


def test_fit_options_are_validated_before_sampling():
    runs = bs.simulate("power_law", seed=2)
    cases = [
        ({"seed": 2**32}, bs.OptionError, r"seed must be an integer in \[0, 2\*\*32\)"),
        ({"seed": 1.0}, bs.OptionTypeError, r"seed must be an integer"),
        ({"nu": 0.0}, bs.OptionError, r"nu must be a positive, finite number"),
        ({"nu": float("inf")}, bs.OptionError, r"nu must be a positive, finite number"),
        ({"nu": "4"}, bs.OptionTypeError, r"nu must be a positive number"),
        ({"num_warmup": -1}, bs.OptionError, r"num_warmup must be an integer of at least 0"),
        ({"target_accept": 1.0}, bs.OptionError, r"target_accept must be a probability"),
        ({"priors": [bs.Prior("Normal", loc=0, scale=1)]}, bs.OptionTypeError, r"priors must"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            bs.fit(runs, "power_law", **kwargs)


def test_one_chain_says_r_hat_was_not_computed():
    """Before: a 1-chain NUTS fit reported "diagnostics: ok" though no r_hat was computed."""
    import arviz_base as azb

    from bayescale.model.simulation import TRUTHS

    draws = {k: np.full((1, 20), v) for k, v in TRUTHS["chinchilla"].items()}
    draws["sigma"] = np.full((1, 20), 0.01)
    tree = azb.from_dict({"posterior": draws})
    tree.attrs.update(method="nuts", likelihood="student_t", nu=4.0, law="chinchilla")
    runs = bs.from_frame(bs.simulate("chinchilla", seed=1))
    one = bs.Fit(tree, bs.get_law("chinchilla"), None, runs)
    assert "r_hat and ESS not computed with 1 chain" in repr(one)
    assert "diagnostics: ok" not in repr(one)

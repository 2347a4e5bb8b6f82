import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayescale as bs
from bayescale.model import simulation
from bayescale.model.laws import LAWS
from bayescale.model.simulation import TRUTHS


def test_unknown_law_suggests_the_nearest():
    with pytest.raises(
        ValueError,
        match=r"unknown law 'chinchila'\. Available: .*"
        r"Did you mean 'chinchilla'\?",
    ):
        bs.get_law("chinchila")


def test_data_constrained_matches_the_published_fixtures():
    # Muennighoff et al. 2023 constants from their logs (a, b, e); fixtures from the data README.
    law = bs.get_law("data_constrained")
    p = dict(TRUTHS["data_constrained"])
    with jax.enable_x64(True):
        got = [
            float(law(p, n_params=6.34e9, n_tokens=242e9, unique_tokens=25e9)),
            float(law(p, n_params=8.67e9, n_tokens=178e9, unique_tokens=25e9)),
        ]
    # float64 evaluation of the same closed form: agreement to rounding error
    np.testing.assert_allclose(got, [2.2256440889984477, 2.2269634075087867], rtol=1e-13)


def test_chinchilla_at_the_published_point():
    law = bs.get_law("chinchilla")
    p = dict(E=1.69337368, A=406.401018, B=410.722827, alpha=0.33917084, beta=0.2849083)
    with jax.enable_x64(True):
        got = float(law(p, n_params=7e10, n_tokens=1.4e12))
    expected = 1.69337368 + 406.401018 / 7e10**0.33917084 + 410.722827 / 1.4e12**0.2849083
    assert got == pytest.approx(expected, rel=1e-12)


def test_m4_solves_its_implicit_equation_and_has_implicit_gradients():
    law = bs.get_law("m4")
    p = dict(TRUTHS["m4"])
    x = np.geomspace(1e3, 1e8, 7)
    with jax.enable_x64(True):
        y = np.asarray(law(p, data_size=x))
        lhs = (y - p["eps_inf"]) / (p["eps_0"] - y) ** p["alpha"]
        np.testing.assert_allclose(lhs, p["beta"] * x ** -p["c"], rtol=1e-9)

        def total(c):
            return law.fn({**p, "c": c}, {"data_size": jnp.log(x)}).sum()

        eps = 1e-6
        numeric = (total(p["c"] + eps) - total(p["c"] - eps)) / (2 * eps)
        assert float(jax.grad(total)(p["c"])) == pytest.approx(float(numeric), rel=1e-5)


@pytest.mark.parametrize("name", sorted(LAWS))
def test_every_law_is_finite_with_finite_gradients(name):
    law = bs.get_law(name)
    frame = bs.simulate(name, seed=3)
    logx = {v: jnp.log(frame[v].to_numpy()) for v in law.variables}
    params = {k: jnp.asarray(v, jnp.float32) for k, v in TRUTHS[name].items()}
    value = law.fn(params, logx)
    assert np.all(np.isfinite(np.asarray(value)))
    grads = jax.grad(lambda q: law.fn(q, logx).sum())(params)
    assert all(np.isfinite(float(g)) for g in grads.values())


def test_register_a_user_law_and_fit_it():
    def fn(p, logx):
        return jnp.logaddexp(jnp.log(p["E"]), jnp.log(p["K"]) - p["gamma"] * logx["compute"])

    law = bs.register_law(
        "compute_power_law_test",
        fn,
        variables=("compute",),
        params=(
            bs.Param("E", "floor"),
            bs.Param("gamma", "exponent"),
            bs.Param("K", "amplitude", variable="compute", exponent="gamma"),
        ),
        description="L = E + K C^-gamma",
    )
    try:
        with pytest.raises(ValueError, match="already registered"):
            bs.register_law("compute_power_law_test", fn, variables=("compute",), params={})
        runs = bs.simulate(
            law,
            truth={"E": 2.0, "gamma": 0.15, "K": 200.0},
            seed=4,
            design=simulation.isoflop_design(),
        )
        result = bs.fit(runs, "compute_power_law_test", method="huber")
        assert result.summary().loc["gamma", "mean"] == pytest.approx(0.15, abs=0.02)
    finally:
        LAWS.pop("compute_power_law_test")


def test_bad_role_is_refused():
    with pytest.raises(ValueError, match=r"unknown role 'slope'"):
        bs.register_law(
            "bad_role_law", lambda p, x: x, variables=("n_params",), params={"k": "slope"}
        )


def test_amplitude_must_name_an_earlier_exponent_and_a_variable():
    with pytest.raises(ValueError, match=r"amplitude 'A' needs exponent= naming a parameter"):
        bs.register_law(
            "bad_amp_law",
            lambda p, x: x,
            variables=("n_params",),
            params=(
                bs.Param("A", "amplitude", variable="n_params", exponent="alpha"),
                bs.Param("alpha", "exponent"),
            ),
        )
    with pytest.raises(ValueError, match=r"amplitude 'A' needs variable= one of \['n_params'\]"):
        bs.register_law(
            "bad_amp_law",
            lambda p, x: x,
            variables=("n_params",),
            params=(bs.Param("alpha", "exponent"), bs.Param("A", "amplitude", exponent="alpha")),
        )
    assert "bad_amp_law" not in LAWS


def _floor_fn(p, logx):
    return jnp.logaddexp(jnp.log(p["E"]), -p["alpha"] * logx["n_params"])


@pytest.mark.parametrize(
    ("fn", "variables", "params", "message"),
    [
        (_floor_fn, "n_params", {"E": "floor", "alpha": "exponent"}, r"variables=\('n_params',\)"),
        (
            _floor_fn,
            ("n_params",),
            (bs.Param("E", "floor"), bs.Param("E", "floor"), bs.Param("alpha", "exponent")),
            r"declares parameters \['E'\] more than once",
        ),
        (_floor_fn, ("n_params",), {"E": "floor", "sigma": "exponent"}, r"'sigma'.*taken"),
        (lambda p: p["E"], ("n_params",), {"E": "floor"}, r"must take two arguments"),
        (lambda p, x: jnp.log(p["E"]), ("n_params",), {"E": "floor"}, r"one log loss per run"),
        (_floor_fn, ("n_params",), {"E": "floor"}, r"failed with params \['E'\].*alpha"),
    ],
)
def test_register_law_checks_the_function_and_declaration(fn, variables, params, message):
    with pytest.raises(bs.LawError, match=message):
        bs.register_law("checked_law", fn, variables=variables, params=params)
    assert "checked_law" not in LAWS


# ------------------------------------------------------------------------- registration checks


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        # a fixed-length output: right for 3 runs only (before: registered, then a
        # broadcasting error inside the fit)
        (lambda p, x: jnp.log(p["E"]) + p["alpha"] * jnp.zeros(3), r"one log loss per run"),
        (lambda p, x: jnp.log(p["E"] * jnp.array([1.0, 2.0, 3.0])) + 0 * p["alpha"], r"per run"),
        # parameters that do not broadcast with draws (as forecasts evaluate laws)
        (
            lambda p, x: jnp.log(p["E"]).reshape(()) + 0 * p["alpha"] * x["n_params"],
            r"shape \(2, 1\)",
        ),
    ],
)
def test_register_law_refuses_outputs_of_the_wrong_shape(fn, message):
    with pytest.raises(bs.LawError, match=message):
        bs.register_law(
            "shape_law", fn, variables=("n_params",), params={"E": "floor", "alpha": "exponent"}
        )
    assert "shape_law" not in LAWS


def test_register_law_refuses_a_parameter_the_law_ignores():
    """Before: a declared parameter that fn never reads was accepted and fitted from its prior."""

    def fn(p, logx):  # A is declared but never used
        return jnp.logaddexp(jnp.log(p["E"]), -p["alpha"] * logx["n_params"])

    params = (
        bs.Param("E", "floor"),
        bs.Param("alpha", "exponent"),
        bs.Param("A", "amplitude", variable="n_params", exponent="alpha"),
    )
    with pytest.raises(bs.LawError, match=r"fn ignores the declared parameter\(s\) \['A'\]"):
        bs.register_law("ignoring_law", fn, variables=("n_params",), params=params)
    assert "ignoring_law" not in LAWS


#: every built-in law, and the factory laws with their options
BUILT = [(name, {}) for name in sorted(LAWS)] + [
    ("power_law", {"variable": "compute"}),
    ("broken_power_law", {"breaks": 2}),
    ("m4", {"variable": "compute"}),
]


@pytest.mark.parametrize(("name", "options"), BUILT, ids=lambda v: str(v))
def test_every_built_in_law_passes_the_registration_checks(name, options):
    from bayescale.model.laws import _check_fn

    law = bs.get_law(name, **options)
    _check_fn(law.name, law.fn, law.variables, law.params)


def test_a_law_without_a_finite_value_at_its_start_is_refused():
    """Before: MAP returned its start values and NUTS raised numpyro's ValueError."""

    def fn(p, logx):  # log of a negative number wherever E < 10
        return jnp.logaddexp(
            jnp.log(p["E"] - 10.0), jnp.log(p["A"]) - p["alpha"] * logx["n_params"]
        )

    bs.register_law(
        "nan_law",
        fn,
        variables=("n_params",),
        params=(
            bs.Param("E", "floor"),
            bs.Param("alpha", "exponent"),
            bs.Param("A", "amplitude", variable="n_params", exponent="alpha"),
        ),
    )
    try:
        runs = bs.simulate("power_law", seed=1)
        for method in ("map", "nuts"):
            with pytest.raises(bs.LawError, match=r"no finite log loss at 30 of 30 runs .*E=0\.9"):
                bs.fit(runs, "nan_law", method=method, num_warmup=10, num_samples=10, misfit=False)
    finally:
        LAWS.pop("nan_law")

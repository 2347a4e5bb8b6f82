"""The ridge coordinates of the power law: a bijection with the right Jacobian, where it applies."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale.io.data import from_frame
from bayescale.model.geometry import ridge_map


@pytest.fixture(scope="module")
def setup(model_at_start):
    return model_at_start(bs.simulate("power_law", seed=4), bs.get_law("power_law"))


def test_the_map_applies_only_where_it_is_exact():
    law = bs.get_law("power_law")
    base = {"E": "Uniform", "A": "LogNormal", "alpha": "LogNormal", "sigma": "HalfNormal"}
    assert ridge_map(law, base) is not None
    # a LogUniform's support is an interval (a sigmoid, not a log): no map
    assert ridge_map(law, {**base, "alpha": "LogUniform"}) is None
    assert ridge_map(law, {**base, "A": "Normal"}) is None
    assert ridge_map(bs.get_law("chinchilla"), {}) is None


def check_map(model, args, start, seed, sd, n, tol):
    """``n`` points around ``start`` (unconstrained, normal shifts of sd ``sd``): round trip
    within ``tol``, and the log Jacobian against ``jax.jacfwd``."""
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import unconstrain_fn

    ridge = model.ridge
    sites = unconstrain_fn(model, args, {}, start)
    z0, _ = ravel_pytree(sites)
    where = ridge.positions(sites)
    rng = np.random.default_rng(seed)
    for shift in rng.normal(0.0, sd, size=(n, z0.size)):
        z = z0 + jnp.asarray(shift, z0.dtype)
        y = ridge.to_y(z, args, where)
        np.testing.assert_allclose(ridge.to_z(y, args, where), z, rtol=tol, atol=tol)
        jac = jax.jacfwd(lambda v: ridge.to_z(v, args, where))(y)
        logdet = np.linalg.slogdet(np.asarray(jac, np.float64))[1]
        np.testing.assert_allclose(ridge.log_det(y, args, where), logdet, rtol=1e-4, atol=1e-3)


def test_round_trip_and_jacobian(setup):
    model, args, start = setup
    check_map(model, args, start, seed=0, sd=0.5, n=5, tol=1e-4)


@pytest.mark.parametrize("floor", ["log", "share"])
@pytest.mark.parametrize(
    "pool", [("E", "alpha", "sigma"), ("alpha", "sigma"), ("E", "A", "alpha", "sigma")]
)
def test_grouped_partial_pooling_round_trip_and_jacobian(pool, floor):
    """Per group, through the population: the level and slope at the group's own centre."""
    from bayescale.model.hierarchy import group_inputs, group_start, model_for

    law = bs.get_law("power_law")
    frames = [  # three groups at different scales: their centres are not the common one
        bs.simulate("power_law", seed=s).assign(
            group=f"g{s}", n_params=lambda d, k=s: d.n_params * 4**k
        )
        for s in range(3)
    ]
    data = from_frame(pd.concat(frames, ignore_index=True))
    labels = ["g0", "g1", "g2"]
    inputs, priors, _ = group_inputs(
        law, data, labels, "partial", pool, None, "student_t", floor=floor
    )
    model = model_for(law, priors, pool, bs.get_likelihood("student_t"), len(labels))
    ridge = model.ridge
    assert ridge is not None and ridge.variable == "n_params"
    start = {k: v[0] for k, v in group_start(law, priors, pool, labels, 1).items()}
    check_map(model, inputs.args(), start, seed=1, sd=0.3, n=4, tol=1e-3)


def test_groups_of_few_runs_take_the_floor_and_noise_non_centred():
    """A group with fewer runs than `centred_min_runs`: its floor and sigma coordinates are
    numpyro's standardised effects (non-centred), the other groups' their own values."""
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import unconstrain_fn

    from bayescale.model.hierarchy import centred_min_runs, group_inputs, group_start, model_for

    law = bs.get_law("power_law")
    pool = ("E", "alpha", "sigma")
    frames = [bs.simulate("power_law", seed=s).assign(group=f"g{s}") for s in range(3)]
    frames[2] = frames[2].iloc[:2]  # a new family: its two smallest runs
    data = from_frame(pd.concat(frames, ignore_index=True))
    labels = ["g0", "g1", "g2"]
    assert len(frames[0]) >= centred_min_runs(law) > 2
    inputs, priors, _ = group_inputs(law, data, labels, "partial", pool, None, "student_t")
    model = model_for(law, priors, pool, bs.get_likelihood("student_t"), len(labels))
    args = inputs.args()
    start = {k: v[0] for k, v in group_start(law, priors, pool, labels, 1).items()}
    start["_sigma_z"] = np.array([0.3, -0.2, 0.5], np.float32)
    start["sigma_tau"] = np.float32(0.4)
    check_map(model, args, start, seed=2, sd=0.3, n=4, tol=1e-3)
    sites = unconstrain_fn(model, args, {}, start)
    where = model.ridge.positions(sites)
    y = model.ridge.to_y(ravel_pytree(sites)[0], args, where)
    i = where["sigma"]
    mu, tau = float(start["sigma_mu"]), 0.4
    expected = [mu + tau * 0.3, mu - tau * 0.2, 0.5]  # centred, centred, non-centred
    np.testing.assert_allclose(np.asarray(y[i]), expected, rtol=1e-5, atol=1e-5)

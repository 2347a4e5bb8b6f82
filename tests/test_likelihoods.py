"""Every registered observation model is consistent with itself and with numpyro."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import bayescale as bs
from bayescale.model.likelihoods import LIKELIHOODS, Likelihood, get_likelihood, register_likelihood

NAMES = list(LIKELIHOODS)
Z = np.linspace(-6, 6, 41)


@pytest.fixture(params=NAMES)
def noise(request) -> Likelihood:
    return get_likelihood(request.param, nu=4.0)


def test_numpyro_distribution_matches_logpdf(noise):
    import jax.numpy as jnp

    y = 0.3 + 0.05 * Z
    numpyro_lp = np.asarray(noise.distribution(jnp.asarray(0.3), jnp.asarray(0.05)).log_prob(y))
    np.testing.assert_allclose(numpyro_lp, noise.logpdf(y, 0.3, 0.05), rtol=1e-5, atol=1e-5)


def test_pdf_is_the_derivative_of_the_cdf(noise):
    h = 1e-5
    numeric = (noise.cdf(Z + h) - noise.cdf(Z - h)) / (2 * h)
    np.testing.assert_allclose(numeric, noise.pdf(Z), rtol=1e-5, atol=1e-9)


def test_ppf_inverts_the_cdf(noise):
    p = np.linspace(0.001, 0.999, 37)
    np.testing.assert_allclose(noise.cdf(noise.ppf(p)), p, atol=1e-9)


def test_samples_and_forecast_noise_follow_the_cdf(noise):
    """KS tests of both samplers against the CDF: each false alarm has probability 1e-3."""
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    draws = noise.sample(rng, (4000,))
    forecast = np.asarray(noise.transform(jnp.asarray(noise.uniforms(rng, (4000,)))))
    for x in (draws, forecast):
        assert stats.kstest(x, noise.cdf).pvalue > 1e-3


def test_variance_matches_the_samples(noise):
    """Sample variance within 5 standard errors (t_4's fourth moment is infinite: skip it)."""
    if not np.isfinite(noise.variance()) or (noise.name == "student_t" and noise.nu <= 4):
        pytest.skip("the sample variance has no finite standard error for this likelihood")
    x = noise.sample(np.random.default_rng(1), (20000,))
    se = np.sqrt((np.mean(x**4) - np.var(x) ** 2) / len(x))
    assert abs(np.var(x) - noise.variance()) < 5 * se


def test_every_likelihood_fits(noise):
    runs = bs.simulate("power_law", likelihood=noise.name, seed=2)
    fit = bs.fit(runs, "power_law", likelihood=noise.name, method="map", seed=0, misfit=False)
    assert fit.noise == noise or fit.likelihood == noise.name
    assert np.isfinite(fit.tree["log_likelihood"]["loss"].values).all()


def test_unknown_likelihood_names_the_choices():
    with pytest.raises(bs.OptionError, match="Available: student_t, normal"):
        get_likelihood("student")


def test_register_rejects_a_non_likelihood():
    with pytest.raises(bs.OptionError, match="subclass"):
        register_likelihood("mine", dict)  # type: ignore[arg-type]

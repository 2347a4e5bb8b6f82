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


def test_simulated_data_follow_the_density(noise):
    """KS test of the whole model's draws against the CDF integrated from its density
    (a false alarm has probability 1e-3); equal to `cdf` unless the model has failed runs."""
    z = np.sinh(np.linspace(-10.0, 10.0, 400_001))  # to beyond +-10,000 scales, fine near 0
    dens = np.exp(noise.logpdf(z, 0.0, 1.0))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(z))])
    assert abs(cdf[-1] - 1.0) < 1e-6  # the density integrates to one

    draws = noise.sample_observed(np.random.default_rng(3), (4000,), 1.0)
    assert stats.kstest(draws, lambda x: np.interp(x, z, cdf)).pvalue > 1e-3


def test_a_failed_run_stops_pulling_on_the_law():
    """Under the default model a run far off the law is explained as a failed run. At a noise
    scale of 0.01 (about 1%), the gradient of its log density in the location (its pull on the
    law) is under a tenth of the Student-t's from 0.2 to 0.6 in log loss (Epoch's outlying runs
    sit there) and under a quarter to 1 (a factor of e). Beyond about 2 the failed runs' normal
    pulls as much as the Student-t: ``spread`` sets that reach."""
    import jax
    import jax.numpy as jnp

    robust, t4 = get_likelihood("contaminated_t"), get_likelihood("student_t")

    def pull(noise, r):
        lp = lambda m: noise.distribution(m, jnp.float32(0.01)).log_prob(r)  # noqa: E731
        return abs(float(jax.grad(lp)(0.0)))

    for r in (0.2, 0.35, 0.6, 1.0):
        assert pull(robust, r) < (0.1 if r <= 0.6 else 0.25) * pull(t4, r), r
    # within 4 noise scales of the law the two score a run alike, but for log(1 - rate)
    near = 0.01 * Z[np.abs(Z) <= 4]
    gap = robust.logpdf(near, 0.0, 0.01) - t4.logpdf(near, 0.0, 0.01) - np.log1p(-robust.rate)
    assert np.all(np.abs(gap) < 0.01)


def test_variance_matches_the_samples(noise):
    """Sample variance within 5 standard errors (t_4's fourth moment is infinite: skip it)."""
    if not np.isfinite(noise.variance()) or (noise.name == "student_t" and noise.nu <= 4):
        pytest.skip("the sample variance has no finite standard error for this likelihood")
    x = noise.sample(np.random.default_rng(1), (20000,))
    se = np.sqrt((np.mean(x**4) - np.var(x) ** 2) / len(x))
    assert abs(np.var(x) - noise.variance()) < 5 * se


def test_every_likelihood_fits(noise):
    # a ladder whose runs all trained (the predictive part): a failed run simulated below the
    # law would move the default prior's bound on E (the smallest loss), not what this tests
    runs = bs.simulate("power_law", likelihood=noise.predictive.name, seed=2)
    fit = bs.fit(runs, "power_law", likelihood=noise.name, method="map", seed=0, misfit=False)
    assert fit.noise == noise or fit.likelihood == noise.name
    assert np.isfinite(fit.tree["log_likelihood"]["loss"].values).all()


def test_unknown_likelihood_names_the_choices():
    with pytest.raises(bs.OptionError, match="Available: student_t, normal"):
        get_likelihood("student")


def test_register_rejects_a_non_likelihood():
    with pytest.raises(bs.OptionError, match="subclass"):
        register_likelihood("mine", dict)  # type: ignore[arg-type]

"""The vectorised HMC engine of fit_many on posteriors whose answer is known exactly.

Three independent Gaussian "curves" of dimension 3 with very different scales and
correlations (so that one step size or one preconditioner could not serve all of them), 4
chains each. Error budget: each of the 9 posterior means is checked within 4.5 Monte Carlo
standard errors (from the bulk ESS of arviz-stats; family-wise false alarm about 1e-4), each
of the 9 standard deviations within 15% (with an ESS of at least 400 per coordinate the
relative sd error of an sd estimate is under 4%, so 15% is over 3.5 of its sds).
"""

from __future__ import annotations

import numpy as np
import pytest

from bayescale.inference import vhmc

MEANS = np.array([[0.0, 1.0, -2.0], [5.0, -3.0, 0.5], [100.0, 0.0, 0.0]], np.float32)
SDS = np.array([[1.0, 0.1, 3.0], [0.01, 0.02, 0.05], [10.0, 1.0, 0.001]], np.float32)
CORR = np.array([0.0, 0.9, -0.6], np.float32)  # correlation of the first two coordinates


def _covariances() -> np.ndarray:
    out = []
    for sd, r in zip(SDS, CORR, strict=True):
        c = np.diag(sd**2).astype(np.float64)
        c[0, 1] = c[1, 0] = r * sd[0] * sd[1]
        out.append(c)
    return np.array(out)


@pytest.fixture(scope="module")
def draws():
    import jax
    import jax.numpy as jnp

    precision = np.linalg.inv(_covariances()).astype(np.float32)
    args = (jnp.asarray(MEANS), jnp.asarray(precision))

    def potential(z, a):
        mean, prec = a
        d = z - mean
        return 0.5 * d @ prec @ d

    settings = vhmc.HmcSettings(num_chains=4, num_warmup=500, num_samples=500)
    keys = jax.vmap(lambda i: jax.random.split(jax.random.PRNGKey(i), 4))(jnp.arange(3))
    # a poor start and a poor first preconditioner: the warm-up has to find both
    z0 = jnp.zeros((3, 4, 3), jnp.float32) + 0.5
    chol0 = jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (3, 3, 3))

    @jax.jit
    def run(keys):
        state = vhmc.init_state(potential, z0, chol0, args)
        state = vhmc.warm_up(potential, settings, keys, jax.random.PRNGKey(99), state, args, 0, 500)
        return vhmc.draw(potential, settings, keys, jax.random.PRNGKey(99), state, args, 500, 500)

    _, z, stats = run(keys)
    return np.asarray(z, np.float64), {k: np.asarray(v) for k, v in stats.items()}


def test_recovers_means_and_scales_of_every_curve(draws):
    import arviz_stats as azs

    z, stats = draws
    assert not stats["diverging"].any()
    for c in range(3):
        ess = np.asarray(azs.ess(z[c], chain_axis=0, draw_axis=1, method="bulk"))
        assert (ess >= 400).all(), (c, ess)
        mean = z[c].mean(axis=(0, 1))
        sd = z[c].std(axis=(0, 1))
        mcse = sd / np.sqrt(ess)
        assert (np.abs(mean - MEANS[c]) < 4.5 * mcse).all(), (c, mean, MEANS[c], mcse)
        assert (np.abs(sd / SDS[c] - 1.0) < 0.15).all(), (c, sd, SDS[c])
    # the step sizes adapted per curve (the scales differ by orders of magnitude, so one
    # step size for all would leave some curves near zero acceptance)
    accept = stats["acceptance_rate"].mean(axis=(1, 2))
    assert ((accept > 0.6) & (accept < 0.95)).all(), accept


def test_the_adaptation_windows_follow_stans_schedule():
    collect, update = vhmc.adaptation_windows(1000)
    ends = np.flatnonzero(update) + 1
    assert np.argmax(collect) == 75 and collect[:75].sum() == 0  # the first fast phase
    assert list(np.diff(np.concatenate([[75], ends]))) == [25, 50, 100, 200, 500]
    assert ends[-1] == 950 and collect[950:].sum() == 0  # the last fast phase
    short, none = vhmc.adaptation_windows(10)
    assert not short.any() and not none.any()

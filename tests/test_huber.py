"""The Huber point fit: failures are errors, and the fit says what it is."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import bayescale as bs


def _nan_law() -> bs.Law:
    base = bs.get_law("power_law")
    return dataclasses.replace(
        base, name="nan_power_law", fn=lambda p, logx: jnp.log(-p["E"]) + 0.0 * logx["n_params"]
    )


def test_huber_fit_of_a_law_that_returns_nan_is_a_fit_error():
    runs = bs.simulate("power_law", seed=2)
    with pytest.raises(bs.FitError, match=r"law 'nan_power_law' failed.*NaN or infinite"):
        bs.fit(runs, _nan_law(), method="huber")


def test_huber_fit_says_it_is_a_point_fit_without_a_likelihood():
    fit = bs.fit(bs.simulate("power_law", seed=2), "power_law", method="huber")
    text = repr(fit)
    assert "loss='huber'" in text and "student_t" not in text
    assert "diagnostics: ok" not in text and "point estimate" in text
    assert fit.problems() == []


def test_negative_huber_exponent_warns_and_is_a_problem():
    # positive control: losses that grow with N (the column reversed) fit a negative alpha
    runs = bs.simulate("power_law", seed=2)
    rising = runs.assign(loss=runs["loss"].to_numpy()[::-1])
    with pytest.warns(bs.PlausibilityWarning, match=r"negative exponents \(alpha = -0\.3"):
        fit = bs.fit(rising, "power_law", method="huber")
    assert "WARNING: the Huber fit has negative exponents" in repr(fit)


def test_the_grid_of_starts_over_a_million_runs_needs_bounded_memory():
    """The grid's objective over 1e6 runs compiles to programs of bounded memory.

    The Epoch grid (4500 starts) times 1e6 runs evaluated at once needed 36 GB (a JAX
    out-of-memory error); the starts now go in chunks of at most `GRID_PAIRS` (start, run)
    pairs. Only compiled here (nothing runs), so the test is fast; the next test runs a fit.
    """
    import jax

    from bayescale.inference.huber import GRID_PAIRS, _objective, epoch_grid, grid_chunk

    law, n_runs = bs.get_law("chinchilla"), 1_000_000
    size = grid_chunk(len(epoch_grid()["E"]), n_runs)
    assert 1 <= size and size * n_runs <= GRID_PAIRS
    batch, _ = _objective(law, 1e-3)
    run = jax.ShapeDtypeStruct((n_runs,), np.float64)
    with jax.enable_x64(True):
        start = jax.ShapeDtypeStruct((size, len(law.params)), np.float64)
        compiled = batch.lower(start, {v: run for v in law.variables}, run).compile()
    memory = compiled.memory_analysis()
    assert memory.temp_size_in_bytes + memory.output_size_in_bytes < 2**30


@pytest.mark.slow
def test_a_huber_fit_of_200_000_runs_runs_and_recovers_the_law():
    """200,000 runs: the unchunked grid needed 7 GB per intermediate array (4500 x 2e5 floats).

    The fitted law matches the true one at every run within 2e-3 in log loss: with noise sd
    0.01 on log loss over 2e5 runs and 5 parameters, the fitted curve's error is of the order
    of 0.01 * sqrt(5 / 2e5) = 5e-5, so 2e-3 leaves a margin of 40 (amplitudes and exponents
    are nearly collinear and not compared one by one).
    """
    import jax

    from bayescale.inference.huber import huber_fit
    from bayescale.model.simulation import TRUTHS

    rng = np.random.default_rng(11)
    n = 200_000
    design = pd.DataFrame(
        {
            "n_params": np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), n)),
            "n_tokens": np.exp(rng.uniform(np.log(1e9), np.log(5e11), n)),
        }
    )
    runs = bs.simulate("chinchilla", design=design, seed=12)
    law = bs.get_law("chinchilla")
    data = bs.from_frame(runs)
    est, _ = huber_fit(law, data, bs.default_priors(law, data), n_polish=2)
    logx = {v: np.log(data.column(v)) for v in law.variables}
    with jax.enable_x64(True):
        fitted = np.asarray(law.fn(est, logx))
        true = np.asarray(law.fn(TRUTHS["chinchilla"], logx))
    assert np.max(np.abs(fitted - true)) < 2e-3


@pytest.mark.slow
def test_bootstrap_intervals_match_epochs_published_ones(epoch_240):
    """95% bootstrap intervals (4000 resamples) of the Huber fit on Epoch's 240 rows against
    Besiroglu et al.'s (../shared/data/README.md).

    Tolerances, from the Monte Carlo error of a 2.5% or 97.5% quantile of 4000 resamples in two
    independent bootstraps (ours and Epoch's), about 4 of its standard deviations: E, alpha
    and beta within 0.006; A within 12% and B within 20% (their bootstrap distributions are
    wide and skewed on the log scale).
    """
    from bayescale.inference.huber import huber_bootstrap, huber_fit

    published = {
        "E": (1.769, 1.871),
        "A": (285.2, 743.6),
        "B": (1042.4, 5810.3),
        "alpha": (0.317, 0.373),
        "beta": (0.331, 0.415),
    }
    law = bs.get_law("chinchilla")
    data = bs.from_frame(epoch_240)
    est, _ = huber_fit(law, data, bs.default_priors(law, data))
    draws = huber_bootstrap(law, data, est, n_resamples=4000, seed=0)
    for name, (lo, hi) in published.items():
        q = np.quantile(draws[name], [0.025, 0.975])
        if name in ("A", "B"):
            rel = 0.12 if name == "A" else 0.20
            assert abs(q[0] / lo - 1) < rel and abs(q[1] / hi - 1) < rel, (name, q)
        else:
            assert abs(q[0] - lo) < 0.006 and abs(q[1] - hi) < 0.006, (name, q)


def test_huber_fit_with_bootstrap_draws_says_what_its_draws_are():
    runs = bs.simulate("power_law", seed=2)
    fit = bs.fit(runs, "power_law", method="huber", bootstrap=20, seed=3)
    assert fit.posterior["alpha"].shape == (1, 20)
    assert fit.settings.bootstrap == 20
    assert "20 bootstrap refits (not a posterior)" in repr(fit)
    point = bs.fit(runs, "power_law", method="huber", seed=3)
    assert fit.settings.huber_estimate["alpha"] == pytest.approx(
        float(point.posterior["alpha"].values.item())
    )
    again = bs.fit(runs, "power_law", method="huber", bootstrap=20, seed=3)
    assert np.array_equal(fit.posterior["alpha"].values, again.posterior["alpha"].values)
    with pytest.raises(bs.OptionError, match="bootstrap applies to method='huber'"):
        bs.fit(runs, "power_law", bootstrap=20, misfit=False)
    with pytest.raises(bs.OptionError, match="at least 2 resamples; received 1"):
        bs.fit(runs, "power_law", method="huber", bootstrap=1)

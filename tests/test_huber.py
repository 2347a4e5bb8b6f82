"""The Huber point fit: failures are errors, and the fit says what it is."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
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

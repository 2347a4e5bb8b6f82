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

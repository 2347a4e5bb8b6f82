"""Priors: a prior must fit the support of its parameter."""

from __future__ import annotations

import pytest

import bayescale as bs
from bayescale.model.priors import NEGATIVE_MASS, negative_mass

P = bs.Prior


@pytest.mark.parametrize(
    ("name", "prior", "share"),
    [
        # before: accepted, and MAP returned a broken fit
        ("E", P("Normal", loc=-5.0, scale=0.1), "100%"),
        ("sigma", P("Normal", loc=0.0, scale=1.0), "50%"),
        ("alpha", P("StudentT", df=3.0, loc=0.0, scale=1.0), "50%"),
        ("beta", P("Uniform", low=-1.0, high=1.0), "50%"),
        ("A", P("TruncatedNormal", loc=0.0, scale=1.0, low=-1.0, high=1.0), "50%"),
    ],
)
def test_a_prior_below_zero_for_a_positive_parameter_is_refused(name, prior, share):
    runs = bs.simulate("chinchilla", seed=1)
    with pytest.raises(bs.PriorError, match=rf"for '{name}' puts {share} of its mass at or below"):
        bs.fit(runs, method="map", priors={name: prior}, misfit=False)


def test_the_message_names_the_fix():
    runs = bs.simulate("chinchilla", seed=1)
    with pytest.raises(bs.PriorError, match=r"E \(a floor\) is positive\. .*HalfNormal.*LogNormal"):
        bs.fit(runs, method="map", priors={"E": P("Normal", loc=-5.0, scale=0.1)}, misfit=False)


def test_negative_mass_of_each_family():
    assert negative_mass(P("Normal", loc=0.34, scale=0.03)) < 1e-20  # priors_from's kind
    assert negative_mass(P("LogNormal", loc=0.0, scale=1.0)) == 0.0
    assert negative_mass(P("Uniform", low=-1.0, high=3.0)) == pytest.approx(0.25)
    assert negative_mass(P("TruncatedNormal", loc=0.0, scale=1.0, low=0.5, high=1.0)) == 0.0
    assert negative_mass(P("StudentT", df=1.0, loc=1.0, scale=1.0)) == pytest.approx(0.25)
    # a positive control at the threshold's edge: just under 1% passes, just over fails
    assert negative_mass(P("Normal", loc=2.4, scale=1.0)) < NEGATIVE_MASS
    assert negative_mass(P("Normal", loc=2.2, scale=1.0)) > NEGATIVE_MASS


def test_a_signed_parameter_keeps_a_prior_on_both_signs():
    from bayescale.model.priors import resolve_priors

    law = bs.get_law("broken_power_law", variable="n_params", breaks=1)
    runs = bs.from_frame(bs.simulate("power_law", seed=1))
    priors = resolve_priors(law, runs, {"c1": P("Normal", loc=0.0, scale=3.0)}, "student_t")
    assert priors["c1"].family == "Normal"

"""Parameter recovery for every registered law on simulated ladders.

Error budget: family-wise alpha = 0.05 over every parameter of every law (Bonferroni): each
parameter's truth must lie within z = Phi^-1(1 - 0.05 / (2 k)) posterior sds of the posterior
mean on the parameter's sampling scale (log for positive parameters), k = the total number of
parameters checked. Contraction: each posterior sd on that scale must be below half the prior sd,
so that a vague posterior cannot pass.
"""

import numpy as np
import pytest
from scipy import stats

import bayescale as bs
from bayescale.model.laws import LAWS
from bayescale.model.simulation import TRUTHS

# every law bayescale registers itself (read from the registry at collection, before any test
# registers its own): a new built-in law is recovery-tested without editing this file
BUILTIN = sorted(name for name, law in LAWS.items() if law.fn.__module__ == "bayescale.model.laws")
K = sum(len(bs.get_law(n).params) for n in BUILTIN)
Z = stats.norm.ppf(1 - 0.05 / (2 * K))


def _scale(law, name, values):
    role = next(p.role for p in law.params if p.name == name)
    return np.asarray(values) if role == "exponent_change" else np.log(np.asarray(values))


def _prior_sd(fit, name, n=4000):
    import jax
    from numpyro.infer import Predictive

    from bayescale.model.build import build_model, model_inputs

    fams = tuple((k, p.family) for k, p in fit.priors.items())
    model = build_model(fit.law, fams, fit.noise)
    inputs = model_inputs(fit.law, fit.data, fit.priors, observed=False)
    draws = Predictive(model, num_samples=n)(jax.random.PRNGKey(0), *inputs.args())
    return float(np.std(_scale(fit.law, name, draws[name])))


def test_every_builtin_law_is_checked():
    # the registry's own laws are found (positive control of the filter above) ...
    assert {"chinchilla", "power_law"} <= set(BUILTIN)
    # ... and each has the known truth that test_recovery simulates from and recovers
    missing = [name for name in BUILTIN if name not in TRUTHS]
    assert not missing, (
        f"built-in laws without TRUTHS (add them to bayescale.model.simulation): {missing}"
    )
    for name in BUILTIN:
        assert set(TRUTHS[name]) == {p.name for p in bs.get_law(name).params}, name


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILTIN)
def test_recovery(name):
    law = bs.get_law(name)
    runs = bs.simulate(name, seed=11)
    fit = bs.fit(runs, name, num_warmup=500, num_samples=1000, seed=11, misfit=False)
    post = fit.posterior
    for p in law.params:
        draws = _scale(law, p.name, post[p.name].values.reshape(-1))
        truth = _scale(law, p.name, TRUTHS[name][p.name])
        z = abs(truth - draws.mean()) / draws.std()
        assert z < Z, f"{name}.{p.name}: truth {TRUTHS[name][p.name]} is {z:.2f} sd away"
        assert draws.std() < 0.5 * _prior_sd(fit, p.name), f"{name}.{p.name} did not contract"

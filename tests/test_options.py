"""The option validators (`bayescale.options`) and their use by every verb: one bad value, one
error class and one message, whichever verb receives it."""

from __future__ import annotations

import re

import numpy as np
import pytest

import bayescale as bs
from bayescale import options as opt

# ------------------------------------------------------------------------------ validators


@pytest.mark.parametrize("value", [1.5, "1", True, None, np.float64(2.0)])
def test_seed_refuses_what_is_not_an_integer(value):
    with pytest.raises(bs.OptionTypeError, match=r"seed must be an integer in \[0, 2\*\*32\); rec"):
        opt.seed(value)


@pytest.mark.parametrize("value", [-1, 2**32])
def test_seed_refuses_integers_out_of_range(value):
    with pytest.raises(bs.OptionError, match=rf"received {value}\. For example seed=0"):
        opt.seed(value)


def test_validators_return_plain_python_values():
    assert type(opt.seed(np.int64(3))) is int and opt.seed(np.uint32(2**32 - 1)) == 2**32 - 1
    assert type(opt.count(np.int32(4), "num_chains")) is int
    assert opt.flag(np.bool_(True), "dropna") is True
    assert opt.optional_flag(None, "progress_bar") is None
    assert type(opt.probability(np.float32(0.5), "ci_prob")) is float
    assert opt.probabilities(np.array([0.9, 0.5, 0.9]), "levels") == (0.5, 0.9)
    assert opt.positive(3, "budget") == 3.0


@pytest.mark.parametrize("value", ["no", "yes", "False", 0, 1, None, 1.0])
def test_flags_are_strict(value):
    """A string is true whatever it says, and 0 or 1 is usually a count passed by mistake."""
    with pytest.raises(bs.OptionTypeError, match=r"dropna must be True or False; received"):
        opt.flag(value, "dropna")


def test_a_string_flag_says_why_it_is_refused():
    with pytest.raises(bs.OptionTypeError, match=r"received str: 'no' \(a string is not a flag"):
        opt.flag("no", "dropna")


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (4.0, bs.OptionTypeError, r"num_chains must be an integer of at least 1; received float"),
        ("4", bs.OptionTypeError, r"received str: '4'"),
        (True, bs.OptionTypeError, r"received bool: True"),
        (0, bs.OptionError, r"num_chains must be an integer of at least 1; received 0\."),
    ],
)
def test_counts(value, error, message):
    with pytest.raises(error, match=message):
        opt.count(value, "num_chains")


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ("0.9", bs.OptionTypeError, r"ci_prob must be a number strictly between 0 and 1"),
        (True, bs.OptionTypeError, r"received bool"),
        (0.0, bs.OptionError, r"ci_prob must lie strictly between 0 and 1; received 0\.0\."),
        (float("nan"), bs.OptionError, r"received nan"),
        (90, bs.OptionError, r"a percentage is a fraction: 0\.9 for 90%"),
    ],
)
def test_probability(value, error, message):
    with pytest.raises(error, match=message):
        opt.probability(value, "ci_prob")


def test_probabilities():
    with pytest.raises(bs.OptionTypeError, match=r"levels must be a sequence of probabilities"):
        opt.probabilities("0.9", "levels")
    with pytest.raises(bs.OptionTypeError, match=r"levels must be a sequence"):
        opt.probabilities(0.9, "levels")
    with pytest.raises(bs.OptionError, match=r"levels is empty"):
        opt.probabilities([], "levels")
    with pytest.raises(bs.OptionError, match=r"levels must hold numbers strictly between 0 and 1"):
        opt.probabilities([0.5, 1.5], "levels")


def test_positive():
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(bs.OptionError, match=r"budget must be a positive, finite number"):
            opt.positive(bad, "budget")
    with pytest.raises(bs.OptionTypeError, match=r"budget must be a positive number; received str"):
        opt.positive("1e21", "budget")


# ------------------------------------------------------------------------------ every verb


@pytest.fixture(scope="module")
def runs():
    return bs.simulate("chinchilla", seed=1)


@pytest.fixture(scope="module")
def point_fit(runs):
    """A `Fit` around the true parameters (one draw): every check below runs before anything
    is computed with it."""
    import arviz_base as azb

    from bayescale.model.simulation import TRUTHS

    draws = {k: np.full((1, 1), v) for k, v in TRUTHS["chinchilla"].items()}
    tree = azb.from_dict({"posterior": draws})
    tree.attrs.update(method="huber", likelihood="student_t", nu=4.0, law="chinchilla")
    return bs.Fit(tree, bs.get_law("chinchilla"), None, bs.from_frame(runs))


def _seeded(runs, fit):
    """Each verb that takes seed=, called with a given seed (everything else valid)."""
    return {
        "fit": lambda s: bs.fit(runs, "chinchilla", method="huber", seed=s),
        "update": lambda s: bs.update(fit, runs, seed=s),
        "fit_many": lambda s: bs.fit_many(
            runs.assign(group="a"), "chinchilla", seed=s, misfit=False
        ),
        "forecast": lambda s: bs.forecast(fit, {"n_params": 1e9, "n_tokens": 1e10}, seed=s),
        "ppc": lambda s: bs.ppc(fit, seed=s),
        "prior_predictive": lambda s: bs.prior_predictive(runs, seed=s),
        "design": lambda s: bs.design(fit, "grid", {"optimal_loss": 1e23}, seed=s),
        "backtest": lambda s: bs.backtest(runs, seed=s),
        "simulate": lambda s: bs.simulate("chinchilla", seed=s),
    }


@pytest.mark.parametrize(
    ("seed", "error"), [(1.5, bs.OptionTypeError), (-1, bs.OptionError), ("0", bs.OptionTypeError)]
)
def test_every_verb_checks_its_seed_alike(runs, point_fit, seed, error):
    messages = set()
    for verb, call in _seeded(runs, point_fit).items():
        with pytest.raises(error) as caught:
            call(seed)
        messages.add(str(caught.value))
        assert type(caught.value) is error, verb
    assert len(messages) == 1, messages  # the same words from every verb


def test_strings_are_not_flags_in_any_verb(runs, point_fit):
    """Before: dropna='no' dropped runs and progress_bar='yes' showed a bar (any string is
    true); now every verb refuses them the same way."""
    calls = {
        "from_frame dropna": lambda: bs.from_frame(runs, dropna="no"),
        "fit dropna": lambda: bs.fit(runs, method="huber", dropna="no"),
        "fit progress_bar": lambda: bs.fit(runs, method="map", progress_bar="yes", misfit=False),
        "fit dense_mass": lambda: bs.fit(runs, method="map", dense_mass="yes", misfit=False),
        "update progress_bar": lambda: bs.update(point_fit, runs, progress_bar="yes"),
        "check dropna": lambda: bs.check(point_fit, runs, dropna="no"),
        "prior_predictive dropna": lambda: bs.prior_predictive(runs, dropna="no"),
        "fit_many dropna": lambda: bs.fit_many(
            runs.assign(group="a"), "chinchilla", dropna="no", misfit=False
        ),
        "backtest progress_bar": lambda: bs.backtest(runs, progress_bar="yes"),
        "fit_many progress_bar": lambda: bs.fit_many(
            runs.assign(group="a"), "chinchilla", progress_bar="yes", misfit=False
        ),
        "forecast warn": lambda: bs.forecast(
            point_fit, {"n_params": 1e9, "n_tokens": 1e10}, warn=0
        ),
        "compute_optimal warn": lambda: bs.compute_optimal(point_fit, 1e22, warn="no"),
    }
    for what, call in calls.items():
        name = what.split()[1]
        with pytest.raises(bs.OptionTypeError, match=rf"^{re.escape(name)} must be True or False"):
            call()


def test_counts_and_probabilities_in_verbs(runs, point_fit):
    with pytest.raises(bs.OptionTypeError, match=r"num_chains must be an integer of at least 1"):
        bs.fit(runs, num_chains=2.0, misfit=False)
    with pytest.raises(bs.OptionError, match=r"batch must be an integer of at least 1; received 0"):
        bs.design(point_fit, "grid", {"optimal_loss": 1e23}, batch=0)
    with pytest.raises(bs.OptionError, match=r"ci_prob must lie strictly between 0 and 1"):
        point_fit.summary(ci_prob=90)
    with pytest.raises(bs.OptionError, match=r"received 90 in levels=\(0\.5, 90\)"):
        bs.ppc(point_fit, levels=(0.5, 90))
    with pytest.raises(bs.OptionError, match=r"num_samples must be an integer of at least 1"):
        bs.backtest(runs, num_samples=0)


def test_group_label_is_the_curve_and_group_its_old_name(runs, point_fit):
    """``group`` names a column in every verb; forecast, check and compute_optimal choose a
    fitted curve with ``group_label`` and still take ``group`` with a FutureWarning."""
    at = {"n_params": 1e9, "n_tokens": 1e10}
    verbs = {
        "forecast": lambda **k: bs.forecast(point_fit, at, kind="mean", warn=False, **k),
        "check": lambda **k: bs.check(point_fit, runs.iloc[:3], **k),
        "compute_optimal": lambda **k: bs.compute_optimal(point_fit, 1e22, warn=False, **k),
    }
    for name, verb in verbs.items():
        with pytest.raises(bs.OptionError, match="group_label='a'.*no groups"):
            verb(group_label="a")
        with (
            pytest.warns(FutureWarning, match=rf"{name}\(group='a'\) is deprecated.*group_label="),
            pytest.raises(bs.OptionError, match="no groups"),
        ):
            verb(group="a")
        with pytest.raises(bs.OptionError, match="both group='a' and group_label='b'"):
            verb(group_label="b", group="a")

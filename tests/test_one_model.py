"""One model, composed of parts (bayescale.model.build): every path builds from it.

- the grouped model and each curve of ``fit_many`` score exactly what the single-curve model
  scores (the same law, priors, misfit and observation parts);
- the misfit works with groups (shared scales, one walk per group) and in ``fit_many``;
- "one change, every path": an observation model registered in this file only is fitted with
  ``fit``, ``fit(group=..., pooling="partial")`` and ``fit_many``, then forecast, checked and
  compared, with no other code touched.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale.io.data import ScalingData, from_frame
from bayescale.model.build import build_model, model_inputs
from bayescale.model.hierarchy import group_inputs, group_labels, model_for
from bayescale.model.likelihoods import LIKELIHOODS, Likelihood, register_likelihood
from bayescale.model.misfit import COEFS, SCALES, Misfit, basis, misfit_coords
from bayescale.model.priors import resolve_priors

FAST = dict(num_warmup=200, num_samples=200, progress_bar=False)


def curves(n_groups: int = 3, n_runs: int = 10, seed: int = 5) -> pd.DataFrame:
    """Power-law curves over different ranges of N, so each group's misfit range differs."""
    frames = []
    for g in range(n_groups):
        design = pd.DataFrame({"n_params": np.geomspace(1e7 * 3**g, 1e10 * 2**g, n_runs)})
        truth = {"E": 1.8 + 0.05 * g, "A": 480.0, "alpha": 0.35}
        runs = bs.simulate("power_law", truth, design, noise=0.01, seed=seed + g)
        frames.append(runs.drop(columns="loss_mean").assign(group=f"c{g}"))
    return pd.concat(frames, ignore_index=True)


def _log_density(model: Any, args: tuple[Any, ...], values: dict[str, Any]) -> float:
    from numpyro.infer.util import log_density

    return float(log_density(model, args, {}, values)[0])


def _prior_values(model: Any, args: tuple[Any, ...], seed: int) -> dict[str, np.ndarray]:
    """A draw of every sample site of ``model`` from its prior (observed sites left out)."""
    from numpyro import handlers

    trace = handlers.trace(handlers.seed(model, seed)).get_trace(*args)
    return {
        k: np.asarray(s["value"])
        for k, s in trace.items()
        if s["type"] == "sample" and not s["is_observed"]
    }


def test_grouped_model_scores_what_the_single_model_scores():
    """pooling='none' with misfit: the joint log density is the sum of the groups' own models.

    The groups share the misfit's scales (one prior term in the grouped model where the
    separate models have one each); everything else is the single-curve model per group.
    """
    law = bs.get_law("power_law")
    noise = bs.get_likelihood("student_t")
    spec = Misfit()
    data = from_frame(curves())
    labels = group_labels(data)
    inputs, priors, _ = group_inputs(law, data, labels, "none", (), None, noise.name, misfit=True)
    grouped = model_for(law, priors, (), noise, len(labels), misfit=spec)
    single_total, per_group = 0.0, []
    for i, g in enumerate(labels):
        sub = ScalingData(data.table[data.table["group"] == g].reset_index(drop=True))
        pri = resolve_priors(law, sub, None, noise.name)
        model = build_model(law, tuple((k, p.family) for k, p in pri.items()), noise, spec)
        args = model_inputs(law, sub, pri, misfit=True).args()
        values = _prior_values(model, args, seed=i)
        values[SCALES] = np.float32([0.02])  # the shared scale (one walk: the level)
        single_total += _log_density(model, args, values)
        per_group.append(values)
    stacked = {k: np.stack([v[k] for v in per_group]) for k in per_group[0]}
    stacked[SCALES] = np.float32([0.02])
    stacked[COEFS] = np.stack([v[COEFS][0] for v in per_group])[None]  # (walk, group, knot)
    joint = _log_density(grouped, inputs.args(), stacked)
    shared_prior = float(
        np.log(2 / math.pi) / 2 - math.log(spec.level) - 0.5 * (0.02 / spec.level) ** 2
    )
    expected = single_total - (len(labels) - 1) * shared_prior
    assert joint == pytest.approx(expected, rel=1e-5)


def test_each_curve_of_fit_many_is_the_single_model():
    """fit_many's arguments of a curve (unpadded, with misfit) score what fit's do."""
    import jax

    from bayescale.inference.many import _curve, _stack

    law = bs.get_law("power_law")
    noise = bs.get_likelihood("student_t")
    spec = Misfit()
    data = from_frame(curves())
    names = sorted(data.table["group"].unique())
    parts = [
        _curve(data.table[data.table["group"] == g], g, law, None, noise.name, spec) for g in names
    ]
    args, _ = _stack(law, parts, 2, spec)
    for i, g in enumerate(names):
        inputs, pri = parts[i]
        model = build_model(law, tuple((k, p.family) for k, p in pri.items()), noise, spec)
        lane = jax.tree_util.tree_map(lambda a: a[i], args)  # noqa: B023
        sub = ScalingData(data.table[data.table["group"] == g].reset_index(drop=True))
        single = model_inputs(law, sub, pri, misfit=True).args()
        values = _prior_values(model, single, seed=i)
        assert _log_density(model, lane, values) == pytest.approx(
            _log_density(model, single, values), rel=1e-6
        )


# ----------------------------------------------------------------------- misfit with groups


@pytest.fixture(scope="module")
def grouped_misfit():
    """A short plumbing fit (200 draws: a ConvergenceWarning is tolerated here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ConvergenceWarning)
        return bs.fit(curves(), "power_law", group="group", pool="all", misfit=True, seed=1, **FAST)


@pytest.mark.slow
def test_grouped_misfit_shares_its_scales_and_has_a_walk_per_group(grouped_misfit):
    post = grouped_misfit.posterior
    assert list(post["misfit_level"].dims) == ["chain", "draw"]
    assert list(post["misfit_level_knots"].dims) == ["chain", "draw", "group", "knot"]
    data = from_frame(curves())
    one = bs.group_fit(grouped_misfit, "c1")
    runs = data.table[data.table["group"] == "c1"]
    assert one.misfit == Misfit()
    assert set(one.misfit_coords.anchor) == {"E", "A", "alpha"}  # the group's exact-law mode
    own = misfit_coords(("n_params",), {"n_params": runs["n_params"]}, one.misfit_coords.anchor)
    assert one.misfit_coords == own
    np.testing.assert_array_equal(
        one.posterior["misfit_level_knots"].values,
        post["misfit_level_knots"].sel(group="c1").values,
    )
    at = pd.DataFrame({"n_params": [1e11, 1e12]})
    with pytest.warns(bs.ExtrapolationWarning):
        table = bs.forecast(grouped_misfit, at, group_label="c1", seed=0).summary()
    assert (table["share_misfit"] > 0).all()


@pytest.mark.slow
def test_new_group_draws_a_fresh_walk_from_the_shared_scales(grouped_misfit):
    """A new group's knots are scale * step * basis @ w, w ~ N(0, 1) (fresh per draw).

    Their summed second moment over knots, scaled by each draw's scale, is
    step^2 trace(B B^T) in expectation; over 800 draws its relative sd is below 5%, so the
    bound of 20% is a 4-sd error budget.
    """
    new = bs.group_fit(grouped_misfit, None, seed=3)
    spec = Misfit()
    knots = new.posterior["misfit_level_knots"].values.reshape(-1, spec.knots)
    scale = new.posterior["misfit_level"].values.reshape(-1, 1).astype(np.float64)
    half = new.misfit_coords.half
    assert (
        half
        == misfit_coords(("n_params",), {"n_params": from_frame(curves()).column("n_params")}).half
    )
    step2 = 2.0 * half / (spec.knots - 1)
    moment = np.mean(np.sum((knots / scale) ** 2, axis=1))
    expected = step2 * np.trace(basis(spec) @ basis(spec).T)
    assert moment == pytest.approx(expected, rel=0.2)
    fitted = grouped_misfit.posterior["misfit_level_knots"].values
    assert not np.isin(knots, fitted).all()  # not one of the fitted groups' walks
    again = bs.group_fit(grouped_misfit, None, seed=3)
    np.testing.assert_array_equal(
        knots, again.posterior["misfit_level_knots"].values.reshape(-1, spec.knots)
    )


@pytest.mark.slow
def test_fit_many_takes_the_misfit():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ConvergenceWarning)
        fits = bs.fit_many(curves(), "power_law", misfit=True, seed=2, **FAST)
    assert "misfit_level" in fits.param_names
    one = fits["c2"]
    assert one.misfit == Misfit()
    runs = from_frame(curves()).table.query("group == 'c2'")
    anchor = one.misfit_coords.anchor
    assert set(anchor) == {"E", "A", "alpha"}  # the curve's exact-law mode
    assert one.misfit_coords == misfit_coords(("n_params",), {"n_params": runs["n_params"]}, anchor)
    assert one.settings.target_accept == 0.9
    with pytest.warns(bs.ExtrapolationWarning):
        table = bs.forecast(one, pd.DataFrame({"n_params": [1e12]}), seed=0).summary()
    assert table["share_misfit"].iloc[0] > 0


# ----------------------------------------------------------------- one change, every path


@dataclass(frozen=True, repr=False)
class Laplace(Likelihood):
    """Laplace noise on log loss: the test's new observation model, written only here."""

    def distribution(self, loc: Any, scale: Any) -> Any:  # noqa: D102
        import numpyro.distributions as dist

        return dist.Laplace(loc, scale)

    def cdf(self, z: np.ndarray) -> np.ndarray:  # noqa: D102
        return np.where(z < 0, 0.5 * np.exp(np.minimum(z, 0)), 1 - 0.5 * np.exp(-np.maximum(z, 0)))

    def pdf(self, z: np.ndarray) -> np.ndarray:  # noqa: D102
        return 0.5 * np.exp(-np.abs(z))

    def ppf(self, p: np.ndarray) -> np.ndarray:  # noqa: D102
        p = np.asarray(p, np.float64)
        return -np.sign(p - 0.5) * np.log1p(-2 * np.abs(p - 0.5))

    def variance(self) -> float:  # noqa: D102
        return 2.0

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:  # noqa: D102
        return rng.laplace(size=shape)

    def transform(self, u: Any, xp: Any = None) -> Any:  # noqa: D102
        if xp is None:
            import jax.numpy as xp
        s = (u - np.float32(0.5)) + np.float32(2.0**-25)
        return -xp.sign(s) * xp.log1p(-2 * xp.abs(s))


@pytest.fixture(scope="module")
def laplace():
    """Registered for this module only (tests parametrized over LIKELIHOODS never see it)."""
    register_likelihood("laplace_test", Laplace)
    yield "laplace_test"
    LIKELIHOODS.pop("laplace_test")


def _assert_scored_by_laplace(fit: bs.Fit) -> None:
    """The fit's pointwise log densities are the Laplace density at its draws' law + misfit.

    The location is rebuilt by the prediction path (at the fitted runs the misfit is each
    draw's walk, interpolated: no random continuation).
    """
    from scipy import stats

    from bayescale.analysis.predict import predictive

    pred = predictive(fit, fit.data, rng=np.random.default_rng(0))
    assert fit.misfit is not None and np.any(pred.misfit != 0)  # the default model
    expected = stats.laplace.logpdf(np.log(fit.data.loss)[None, :], pred.loc, pred.sigma)
    got = fit.tree["log_likelihood"]["loss"].values.reshape(len(pred.sigma), -1)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_one_change_every_path(laplace):
    runs = curves()
    one = runs[runs["group"] == "c0"].drop(columns="group")
    at = pd.DataFrame({"n_params": [3e9]})  # inside c0's range: no extrapolation
    held = bs.simulate("power_law", {"E": 1.8, "A": 480.0, "alpha": 0.35}, at, seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ConvergenceWarning)
        single = {k: bs.fit(one, "power_law", likelihood=k, seed=0, **FAST)
                  for k in (laplace, "normal")}  # fmt: skip
        grouped = {
            k: bs.fit(runs, "power_law", group="group", pooling="partial", likelihood=k,
                      seed=0, **FAST)
            for k in (laplace, "normal")
        }  # fmt: skip
        many = bs.fit_many(runs, "power_law", likelihood=laplace, seed=0, **FAST)
    paths = {
        "fit": single[laplace],
        "fit(group=...)": bs.group_fit(grouped[laplace], "c0"),
        "fit_many": many["c0"],
    }
    for name, fit in paths.items():
        assert fit.likelihood == laplace, name
        _assert_scored_by_laplace(fit)
        table = bs.forecast(fit, at, seed=0).summary()
        assert np.isfinite(table["mean"]).all(), name
        result = bs.check(fit, held)
        assert np.isfinite(result.table["lpd"]).all(), name
    assert np.isfinite(
        bs.forecast(grouped[laplace], at, group_label="c0", seed=0).summary()["mean"]
    ).all()
    for fits in (single, grouped):
        table = bs.compare(fits, method="loo", max_refits=1)
        assert set(table.index) == {laplace, "normal"}
        assert np.isfinite(table["elpd"]).all()


@pytest.mark.slow
def test_compare_refuses_lfo_on_grouped_fits(grouped_misfit):
    with pytest.raises(bs.OptionError, match="grouped"):
        bs.compare({"a": grouped_misfit, "b": grouped_misfit}, method="lfo")

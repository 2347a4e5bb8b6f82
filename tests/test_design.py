"""Experiment design: scores, batches, targets, bad input, the plot and the command line."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale.analysis.design import Target, target_draws
from bayescale.model.simulation import isoflop_design

#: the truth's compute-optimal run at 100x the ladder's largest compute (6e21 FLOP)
TARGET = {"loss_at": {"n_params": 2.2e9, "n_tokens": 4.5e11}}


@pytest.fixture(scope="module")
def ladder() -> pd.DataFrame:
    """A small IsoFLOP ladder: 3 budgets (6e18 to 6e19 FLOP), 5 sizes each."""
    return bs.simulate("chinchilla", design=isoflop_design(np.geomspace(6e18, 6e19, 3), 5), seed=3)


@pytest.fixture(scope="module")
def fit(ladder) -> bs.Fit:
    """MAP + Laplace (2000 draws): a fast posterior with draws for the plumbing."""
    return bs.fit(ladder, method="map", num_samples=2000, seed=0, misfit=False)


def _runs(**cols) -> pd.DataFrame:
    arrays = np.broadcast_arrays(*(np.atleast_1d(v) for v in cols.values()))
    return pd.DataFrame(dict(zip(cols, arrays, strict=True)))


def test_a_run_at_the_target_beats_one_far_from_it(fit):
    """Positive control: observing the target itself narrows it most; a tiny run barely."""
    cands = _runs(n_params=[2.2e9, 1e6], n_tokens=[4.5e11, 2e7])
    d = bs.design(fit, cands, TARGET)
    width = d.table.sort_index()["width"].to_numpy()
    now = d.current["width"]
    mcse = d.table.sort_index()["width_mcse"].to_numpy()
    # the target's own run: one noisy observation of it (a t_4 interval of about 4.3 sigma =
    # 0.043 in log loss, 0.09 in loss) replaces most of the current width (0.15)
    assert width[0] < 0.6 * now
    assert width[0] + 4 * np.hypot(*mcse) < width[1]
    assert now - width[1] < 0.15 * now  # a run 3 decades of compute below: little gain


def test_a_run_like_the_existing_ones_gains_little(fit, ladder):
    """A 16th run repeating a ladder point narrows the target far less than a run near it."""
    middle = ladder.iloc[[7]][["n_params", "n_tokens"]]
    near = _runs(n_params=1.5e9, n_tokens=2.2e11)  # 1/3 of the target's compute
    d = bs.design(fit, pd.concat([middle, near], ignore_index=True), TARGET)
    gain = d.table.sort_index()["gain"].to_numpy()
    assert gain[0] < 0.1 * d.current["width"]
    assert gain[0] < 0.3 * gain[1]


def test_the_table_is_sorted_by_gain_per_flop_and_consistent(fit):
    d = bs.design(fit, "grid", TARGET)
    t = d.table
    assert len(t) == 90 and t.index.name == "candidate"
    assert np.all(np.diff(t["gain_per_flop"].to_numpy()) <= 0)
    np.testing.assert_allclose(t["cost"], 6 * t["n_params"] * t["n_tokens"], rtol=1e-12)
    np.testing.assert_allclose(t["gain"], d.current["width"] - t["width"], rtol=1e-12)
    assert (t["ess"] > 0).all() and (t["ess"] <= d.settings[2][1]).all()
    assert len(d.batch) == 1 and d.batch["candidate"].iloc[0] == t.index[0]
    assert "Design(target=loss at" in repr(d) and "<pre>" in d._repr_html_()
    assert d.summary().equals(t) and d.summary() is not t


def test_same_seed_same_scores_and_the_mcse_is_honest(fit):
    cands = bs.design_grid(fit, budgets=4, sizes=3)
    a = bs.design(fit, cands, TARGET, seed=5).table.sort_index()
    b = bs.design(fit, cands, TARGET, seed=5).table.sort_index()
    c = bs.design(fit, cands, TARGET, seed=6).table.sort_index()
    pd.testing.assert_frame_equal(a, b)
    # two seeds differ by their Monte Carlo error: within 4 combined MCSE (12 candidates)
    diff = np.abs(a["width"] - c["width"])
    assert (diff < 4 * np.hypot(a["width_mcse"], c["width_mcse"])).all()


def test_the_progress_bar_counts_chunks_of_candidates_and_changes_nothing(fit, capsys):
    cands = bs.design_grid(fit, budgets=4, sizes=3)
    quiet = bs.design(fit, cands, TARGET, batch=2, seed=5)
    shown = bs.design(fit, cands, TARGET, batch=2, seed=5, progress_bar=True)
    err = capsys.readouterr().err
    n = len(cands)
    assert f"design: {n} candidates:   0%|          | 0/2 " in err  # 1 chunk x 2 picks
    pd.testing.assert_frame_equal(quiet.batch, shown.batch)
    with pytest.raises(bs.OptionTypeError, match="progress_bar"):
        bs.design(fit, cands, TARGET, progress_bar="yes")


def test_current_width_is_the_posterior_interval(fit):
    value, _ = target_draws(fit, TARGET)
    lo, hi = np.quantile(value, [0.05, 0.95])
    d = bs.design(fit, _runs(n_params=1e9, n_tokens=2e10), TARGET)
    # the inverse weighted CDF at equal weights: within one order statistic of numpy's
    assert d.current["width"] == pytest.approx(hi - lo, rel=0.02)


def test_a_batch_conditions_on_the_picks_before(fit):
    d = bs.design(fit, bs.design_grid(fit, budgets=6, sizes=5), TARGET, batch=3)
    b = d.batch
    assert list(b.index) == [0, 1, 2] and b["candidate"].is_unique
    assert (np.diff(b["width"]) <= 0).all()  # more runs, narrower in expectation
    np.testing.assert_allclose(b["cum_cost"], np.cumsum(b["cost"]))
    assert b["width"].iloc[0] == pytest.approx(d.table.loc[b["candidate"].iloc[0], "width"])


def test_the_budget_caps_the_batch(fit):
    cands = bs.design_grid(fit, budgets=4, sizes=3)
    budget = 2.5 * cands["compute"].min()
    d = bs.design(fit, cands, TARGET, batch=5, budget=budget)
    assert d.batch["cum_cost"].iloc[-1] <= budget and len(d.batch) == 2


@pytest.mark.parametrize("spec", [{"optimal_loss": 6e21}, {"n_opt": 6e21}])
def test_budget_targets(fit, spec):
    d = bs.design(fit, bs.design_grid(fit, budgets=3, sizes=3), spec)
    kind = next(iter(spec))
    assert d.target == Target(kind, compute=6e21)
    alloc = bs.compute_optimal(fit, 6e21, warn=False)
    name = "n_params" if kind == "n_opt" else "loss"
    v = alloc.draws[name].values.reshape(-1)
    lo, hi = np.quantile(v, [0.05, 0.95])
    assert d.current["width"] == pytest.approx(hi - lo, rel=0.02)
    assert d.table["gain"].max() > 0


def test_low_ess_is_flagged_and_warned(fit):
    with pytest.warns(bs.ConvergenceWarning, match="ESS"):
        d = bs.design(fit, _runs(n_params=2.2e9, n_tokens=4.5e11), TARGET, min_ess=1e6)
    assert d.table["low_ess"].all() and "WARNING" in repr(d)


def test_the_callers_candidates_are_not_modified(fit):
    cands = _runs(n_params=[1e9, 2e9], compute=[1e20, 1e21])
    before = cands.copy(deep=True)
    d = bs.design(fit, cands, TARGET, cost=lambda f: f["compute"] * 2)
    pd.testing.assert_frame_equal(cands, before)
    np.testing.assert_allclose(
        d.table.sort_index()["n_tokens"], before["compute"] / (6 * before["n_params"])
    )
    np.testing.assert_allclose(d.table.sort_index()["cost"], 2 * before["compute"])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"target": {"loss": 1}}, bs.OptionError, "unknown target kind 'loss'"),
        ({"target": 1e22}, bs.OptionTypeError, "one-key mapping; received 1e\\+22"),
        ({"target": {"n_opt": -1}}, bs.OptionError, "positive, finite number; received -1"),
        ({"target": {"loss_at": {"n_params": 1e9}}}, bs.OptionError, "needs two of n_params"),
        ({"candidates": _runs(n_params=1e9)}, bs.DataError, "'n_tokens' not in candidates"),
        (
            {"candidates": _runs(n_params=[1e9, -1], n_tokens=1e10)},
            bs.DataError,
            "'n_params' in candidates has 1 non-positive or non-finite values \\(rows 1\\)",
        ),
        ({"candidates": "grd"}, bs.OptionError, "or 'grid'; received 'grd'"),
        ({"candidates": [1, 2]}, bs.OptionTypeError, "received list"),
        ({"batch": 0}, bs.OptionError, "batch must be an integer of at least 1; received 0"),
        ({"cost": "gpu_hours"}, bs.OptionError, "cost 'gpu_hours' is neither"),
        ({"kind": "median"}, bs.OptionError, "unknown kind 'median'"),
        ({"budget": "1e21"}, bs.OptionTypeError, "budget must be a positive number; received str"),
    ],
)
def test_bad_input_says_what_and_how(fit, kwargs, error, message):
    args = {"candidates": _runs(n_params=1e9, n_tokens=1e10), "target": TARGET, **kwargs}
    with pytest.raises(error, match=message):
        bs.design(fit, args.pop("candidates"), args.pop("target"), **args)


def test_a_one_variable_law_is_refused():
    runs = bs.simulate("power_law", seed=0)
    fit = bs.fit(runs, "power_law", method="map", num_samples=200, misfit=False)
    with pytest.raises(bs.OptionError, match="law of n_params and n_tokens"):
        bs.design(fit, "grid", TARGET)


def test_plot_design_renders(fit, tmp_path):
    import matplotlib.pyplot as plt

    from bayescale.plots import plot_design

    for target in (TARGET, {"optimal_loss": 6e21}):
        d = bs.design(fit, bs.design_grid(fit, budgets=4, sizes=4), target, batch=2)
        ax = plot_design(d)
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        ax.figure.savefig(tmp_path / f"design_{next(iter(target))}.png")
        plt.close(ax.figure)
    assert (tmp_path / "design_loss_at.png").stat().st_size > 1000


def test_the_command_line(fit, tmp_path, capsys):
    from bayescale.cli import main

    path = tmp_path / "fit.nc"
    fit.save(path)
    code = main(
        ["design", str(path), "--target-compute", "6e21", "--budget", "1e20", "--batch", "2"]
        + ["--format", "json", "--quiet"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    tables = json.loads(captured.out)
    assert set(tables) == {"candidates", "batch"} and len(tables["candidates"]) == 90
    assert sum(r["cost"] for r in tables["batch"]) <= 1e20
    code = main(
        ["design", str(path), "--plot", str(tmp_path / "d.png"), "--top", "3"]
        + ["--target-n-params", "2.2e9", "--target-n-tokens", "4.5e11"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Candidates, best gain per FLOP first" in captured.out
    assert (tmp_path / "d.png").is_file()
    assert main(["design", str(path)]) == 2
    assert "no target: pass --target-compute" in capsys.readouterr().err


@pytest.mark.slow
def test_misfit_fit_designs(ladder):
    """With misfit, a run near the target in scale still beats a tiny one (joint misfit draws)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ConvergenceWarning)
        fit = bs.fit(ladder, misfit=True, method="map", num_samples=2000, seed=0)
    cands = _runs(n_params=[1.5e9, 1e6], n_tokens=[2.2e11, 2e7])
    d = bs.design(fit, cands, TARGET)
    width = d.table.sort_index()["width"].to_numpy()
    assert width[0] < width[1] < d.current["width"] + 4 * d.table["width_mcse"].max()


def test_rank_by_width_and_a_goal(fit):
    cands = bs.design_grid(fit, budgets=4, sizes=3)
    by_width = bs.design(fit, cands, TARGET, rank="width")
    assert np.all(np.diff(by_width.table["width"].to_numpy()) >= 0)
    # a goal no run reaches: the most informative run; an easy goal: the cheapest that reaches it
    hard = bs.design(fit, cands, TARGET, goal=1e-6, batch=2)
    assert hard.batch["candidate"].iloc[0] == by_width.table.index[0] and len(hard.batch) == 2
    easy_goal = float(by_width.table["width"].median())
    easy = bs.design(fit, cands, TARGET, goal=easy_goal, batch=3)
    reaching = by_width.table[by_width.table["width"] <= easy_goal]
    assert len(easy.batch) == 1 and easy.batch["cost"].iloc[0] == reaching["cost"].min()
    with pytest.raises(bs.OptionError, match="unknown rank 'cost'"):
        bs.design(fit, cands, TARGET, rank="cost")


def test_the_grid_keeps_to_runs_a_lab_would_train(fit):
    """Candidates stay within 5 to 200 tokens per parameter (overridable; None lifts it)."""
    ratio = lambda g: (g["n_tokens"] / g["n_params"]).to_numpy()  # noqa: E731
    grid = bs.design_grid(fit)
    assert len(grid) == 90
    assert ratio(grid).min() >= 5 * (1 - 1e-9) and ratio(grid).max() <= 200 * (1 + 1e-9)
    # each level still spans the band's overlap with N_opt +- 1 decade: sizes differ
    assert (grid.groupby("compute")["n_params"].nunique() == 9).all()
    wide = bs.design_grid(fit, tokens_per_param=(1.0, 1000.0))
    assert ratio(wide).min() >= 1 * (1 - 1e-9) and ratio(wide).max() <= 1000 * (1 + 1e-9)
    assert ratio(wide).max() > 200
    # positive control: without the band, the sizes a decade either side of the optimum at the
    # smallest budget include runs on far fewer or far more tokens than any lab trains
    free = bs.design_grid(fit, tokens_per_param=None)
    assert ratio(free).min() < 5 and ratio(free).max() > 200
    with pytest.raises(bs.OptionError, match=r"tokens_per_param must be a band \(low, high\)"):
        bs.design_grid(fit, tokens_per_param=(200, 5))


def test_a_width_ranked_design_spends_the_budget_on_the_run_that_narrows_most(fit):
    """Given a budget, rank="width" picks the narrowest affordable run, expensive or not."""
    budget = 1e21
    d = bs.design(fit, "grid", TARGET, rank="width", budget=budget)
    affordable = d.table[d.table["cost"] <= budget]
    pick = d.batch.iloc[0]
    assert pick["candidate"] == affordable["width"].idxmin()
    # on this ladder (6e18 to 6e19 FLOP, target 6e21) the narrowest affordable run is one of
    # the largest: more than half the budget, more than 5x the ladder's largest run
    assert pick["cost"] > 0.5 * budget and pick["cost"] > 5 * 6e19
    # and it narrows the target more than the best cheap run (beyond 4 MCSE)
    cheap = affordable[affordable["cost"] <= 6e19]
    assert pick["width"] + 4 * d.table.loc[pick["candidate"], "width_mcse"] < cheap["width"].min()


def test_a_budget_no_candidate_fits_warns(fit):
    cands = bs.design_grid(fit, budgets=3, sizes=3)
    with pytest.warns(UserWarning, match=r"no candidate fits the budget 1 \(the cheapest costs"):
        d = bs.design(fit, cands, TARGET, budget=1.0)
    assert d.batch.empty


def test_design_grid_levels_is_a_deprecated_name_of_budgets(fit):
    # issue 25: levels means interval probabilities in every other verb
    new = bs.design_grid(fit, budgets=3, sizes=2)
    with pytest.warns(FutureWarning, match=r"levels=3\) is deprecated.*Pass budgets=3"):
        old = bs.design_grid(fit, levels=3, sizes=2)
    pd.testing.assert_frame_equal(old, new)
    assert len(new) == 6

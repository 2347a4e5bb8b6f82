"""Plots of checks, comparisons and break reports: Agg backend, Axes returned, one PNG each."""

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import bayescale as bs  # noqa: E402
from bayescale.analysis.breaks import detect_break  # noqa: E402
from bayescale.analysis.checks import check, ppc  # noqa: E402
from bayescale.analysis.compare import compare  # noqa: E402
from bayescale.errors import ConvergenceWarning  # noqa: E402
from bayescale.model.simulation import sweep_design  # noqa: E402
from bayescale.plots.checks import plot_break, plot_check, plot_compare, plot_pit  # noqa: E402


@pytest.fixture(scope="module")
def new_run_check(sim_fit):
    runs = sim_fit.data.table.iloc[::6][["n_params", "n_tokens", "loss"]].copy()
    runs.loc[runs.index[0], "loss"] *= 1.2  # one run clearly worse than predicted
    with pytest.warns(bs.PlausibilityWarning, match="were in the fit"):  # fitted: plumbing
        return check(sim_fit, runs)


@pytest.fixture(scope="module")
def small_report():
    """A quick, coarse report for plumbing: short chains, so convergence is not asked for."""
    runs = bs.simulate("broken_power_law", design=sweep_design("n_params", 1e2, 1e5, 20), seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return detect_break(runs, max_breaks=1, num_warmup=200, num_samples=200, seed=0)


def _normal_fit(fit):
    return bs.fit(
        fit.data.table, likelihood="normal", num_warmup=500, num_samples=500, seed=2, misfit=False
    )


def _save(ax, tmp_path, name):
    assert isinstance(ax, matplotlib.axes.Axes)
    path = tmp_path / f"{name}.png"
    ax.figure.savefig(path)
    assert path.stat().st_size > 1000
    plt.close(ax.figure)


def test_plot_check(new_run_check, tmp_path):
    ax = plot_check(new_run_check)
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "n_params"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "observed: worse than predicted" in labels
    assert "90% predictive interval" in labels
    _save(ax, tmp_path, "check")
    fig, given = plt.subplots()
    assert plot_check(new_run_check, x="n_tokens", ax=given) is given
    plt.close(fig)
    with pytest.raises(ValueError, match="x='compute' is not a column"):
        plot_check(new_run_check, x="compute")


def test_plot_pit(new_run_check, sim_fit, tmp_path):
    ax = plot_pit(new_run_check)
    assert ax.get_xlim() == (0.0, 1.0)
    _save(ax, tmp_path, "pit")
    ax = plot_pit(ppc(sim_fit))
    assert "LOO-PIT" in ax.get_title()
    _save(ax, tmp_path, "pit_loo")


def test_plot_compare(sim_fit, tmp_path, small_report):
    table = compare({"chinchilla": sim_fit, "normal": _normal_fit(sim_fit)}, max_refits=0)
    ax = plot_compare(table)
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == table.index[0]
    _save(ax, tmp_path, "compare")
    ax = plot_compare(small_report, method="lfo")
    assert "LFO" in ax.get_xlabel()
    _save(ax, tmp_path, "compare_breaks")
    with pytest.raises(ValueError, match="lacks"):
        plot_compare(table[["elpd"]])


def test_plot_break(small_report, tmp_path):
    ax = plot_break(small_report, rug_draws=50)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "power law" in labels[0] and "runs" in labels
    assert any("break 1 location" in label for label in labels)
    rug = [line for line in ax.get_lines() if line.get_marker() == "|"]
    assert len(rug) == 1 and 40 <= np.size(rug[0].get_xdata()) <= 60
    _save(ax, tmp_path, "break")


# ----------------------------------------------------------------- issue 28: display


def _tick_texts(ax):
    ax.figure.canvas.draw()
    axes = (ax.xaxis, ax.yaxis)
    return [
        t.get_text()
        for axis in axes
        for t in (*axis.get_majorticklabels(), *axis.get_minorticklabels())
        if t.get_text()
    ]


def test_log_axes_of_check_and_break_plots_have_plain_labels(new_run_check, small_report):
    # issue 28: a loss axis shorter than a decade was labelled 2.4×10^0
    for ax in (plot_check(new_run_check), plot_break(small_report, rug_draws=50)):
        low, high = ax.get_ylim()
        assert high / low < 10  # a short range: matplotlib labels minor ticks there
        texts = _tick_texts(ax)
        assert len(texts) >= 3
        assert not [t for t in texts if "times" in t], texts
        assert [t for t in texts if "." in t]  # minor ticks of the loss, as plain numbers
        plt.close(ax.figure)


def test_backtest_counts_print_as_integers(tmp_path):
    from bayescale.analysis.backtest import Backtest
    from bayescale.plots import plot_backtest

    rng = np.random.default_rng(0)
    runs = pd.DataFrame(
        {
            "model": ["misfit"] * 81 + ["exact"] * 81,
            "inside_50": rng.random(162) < 0.5,
            "inside_90": rng.random(162) < 0.9,
            "rel_error": rng.normal(0, 0.01, 162),
            "distance": rng.uniform(0, 1, 162),
        }
    )
    fits = pd.DataFrame(
        {"model": ["misfit", "exact"], "divergences": [0, 3], "max_r_hat": [1.001, 1.002]}
    )
    result = Backtest(runs=runs, fits=fits, levels=(0.5, 0.9), variable="compute")
    # issue 28: the legend said n=81.0 and the report divergences 0.0
    assert "divergences 0" in repr(result) and "divergences 0.0" not in repr(result)
    ax = plot_backtest(result)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "misfit (n=81)" in labels and "exact (n=81)" in labels
    _save(ax, tmp_path, "backtest")

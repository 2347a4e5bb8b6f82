"""fit_many: independent fits of many curves in one vectorised sampler, locally and on Dask.

Cost: the fast tests share one compiled program (the same settings, batches of 2 curves);
another chunking, the agreement with separate ``bs.fit`` runs and a cluster of worker
processes compile more and are marked slow.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale.errors import ConvergenceWarning, DataError, OptionError, OptionTypeError, PriorError
from bayescale.model.simulation import sweep_design

#: every fast test shares these settings and batches of 2 curves: one compiled program
FAST = dict(num_chains=2, num_warmup=150, num_samples=150, seed=3, chunk_size=2)


def _curves(lengths=(20, 17, 14), names=("b", "a", "c"), seed=10) -> pd.DataFrame:
    """Power-law curves with different truths and lengths, listed in unsorted group order.

    The amplitudes make the power-law term 2 to 4 at N = 1e7, so that every curve, short ones
    included, identifies its floor and exponent (with A = 480 and alpha = 0.5 the term would be
    0.15 to 0.005 over the range: a nearly flat curve, a weakly identified posterior).
    """
    design = sweep_design("n_params", 1e7, 1e10, 20)
    truths = [(0.30, 1.8, 480.0), (0.40, 2.0, 2400.0), (0.35, 1.5, 1100.0)]
    frames = []
    for i, (n, name, (alpha, floor, amp)) in enumerate(zip(lengths, names, truths, strict=True)):
        truth = {"E": floor, "A": amp, "alpha": alpha}
        frame = bs.simulate("power_law", truth, design=design.iloc[:n], seed=seed + i)
        frames.append(frame.assign(group=name))
    return pd.concat(frames, ignore_index=True)


def _fit_quietly(runs, **kwargs):
    """fit_many with its ConvergenceWarning recorded (short plumbing runs may warn)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        fits = bs.fit_many(runs, "power_law", **{"misfit": False, **FAST, **kwargs})
    return fits, [str(w.message) for w in caught if w.category is ConvergenceWarning]


@pytest.fixture(scope="module")
def runs():
    return _curves()


@pytest.fixture(scope="module")
def many(runs):
    return _fit_quietly(runs)


@pytest.mark.slow
def test_one_fit_per_group_in_sorted_order(many, runs):
    fits, caught = many
    assert fits.groups == ("a", "b", "c") and len(fits) == 3 and "a" in fits
    post = fits.posterior
    assert post["alpha"].dims == ("group", "chain", "draw")
    assert post.sizes == {"group": 3, "chain": 2, "draw": 150}
    # the warning, when there is one, names exactly the groups that diagnostics() flags
    flagged = set(fits.problems())
    if caught:
        assert all(f"{g} (" in caught[0] for g in flagged)
    else:
        assert not flagged


@pytest.mark.slow
def test_each_group_is_a_real_fit_with_its_own_model(many, runs):
    fits, _ = many
    one = fits["c"]
    assert isinstance(one, bs.Fit) and one.method == "hmc"
    alone = runs[runs["group"] == "c"]
    assert one.data.n_runs == len(alone) == 14
    # the data-dependent defaults and the centring come from that curve alone, as bs.fit's
    expected = bs.default_priors(bs.get_law("power_law"), bs.from_frame(alone))
    assert repr(one.priors) == repr(expected) == repr(fits.priors["c"])
    assert one.centre["n_params"] == pytest.approx(np.log(alone["n_params"]).mean(), rel=1e-6)
    np.testing.assert_array_equal(
        one.posterior["alpha"].values, fits.posterior["alpha"].sel(group="c").values
    )
    assert one.tree["log_likelihood"]["loss"].shape == (2, 150, 14)
    assert one.settings.group == "c" and one.settings.curve_index == 2
    # the verbs take it
    fc = bs.forecast(one, {"n_params": [1e8]})
    assert np.isfinite(fc.summary()["median"]).all()
    with pytest.raises(KeyError, match="no group 'z'; groups are 'a', 'b', 'c'"):
        fits["z"]


@pytest.mark.slow
def test_summary_and_diagnostics_tables(many):
    fits, _ = many
    table = fits.summary()
    assert table.index.names == ["group", "parameter"]
    assert list(table.loc["a"].index) == ["E", "alpha", "A", "sigma"]
    for col in ("mean", "sd", "median", "q5", "q95", "ess_bulk", "ess_tail", "r_hat"):
        assert col in table.columns
    # the per-group Fit's own summary gives the same numbers
    one = fits["b"].summary()
    np.testing.assert_allclose(table.loc["b"]["median"], one["median"], rtol=1e-6)
    np.testing.assert_allclose(table.loc["b"]["r_hat"], one["r_hat"], rtol=1e-6)
    diag = fits.diagnostics()
    assert list(diag.columns) == ["divergences", "max_r_hat", "min_ess_bulk", "min_ess_tail", "ok"]
    assert list(diag.index) == ["a", "b", "c"]
    # positive control: an ESS floor no run can reach flags every group, by name
    strict = fits.diagnostics(min_ess_per_chain=1e9)
    assert not strict["ok"].any()
    assert set(fits.problems(min_ess_per_chain=1e9)) == {"a", "b", "c"}
    assert "ManyFits(law='power_law'" in repr(fits) and "groups=3" in repr(fits)


@pytest.mark.slow
def test_posteriors_recover_each_curves_own_truth(many):
    # each curve has its own exponent (0.40, 0.30, 0.35 for a, b, c): the vectorised fits did
    # not mix curves up. Loose: the 90% interval, widened by the short plumbing run, holds it.
    fits, _ = many
    table = fits.summary().xs("alpha", level="parameter")
    for g, truth in {"a": 0.40, "b": 0.30, "c": 0.35}.items():
        assert table.loc[g, "q5"] - 0.05 < truth < table.loc[g, "q95"] + 0.05, g
    assert table.loc["b", "median"] < table.loc["a", "median"]


@pytest.mark.slow
def test_the_progress_bar_counts_iterations_and_changes_no_draw(many, runs, capsys):
    fits, _ = many  # progress_bar=None: off under pytest (no terminal)
    shown, _ = _fit_quietly(runs, progress_bar=True)
    err = capsys.readouterr().err
    # iterations of every chain of every curve, as bs.fit's bar counts them
    total = 3 * FAST["num_chains"] * (FAST["num_warmup"] + FAST["num_samples"])
    assert f"fit_many: 3 curves:   0%|          | 0/{total} " in err
    assert f"| {total}/{total} [" in err
    for k in ("E", "alpha", "A", "sigma"):
        np.testing.assert_array_equal(shown.posterior[k].values, fits.posterior[k].values)


@pytest.mark.slow
def test_same_seed_same_draws_whatever_the_chunking(many, runs):
    # another batch size compiles another program (about 30 s on 2 cores)
    fits, _ = many  # chunks (a, b), (c + padding)
    chunked, _ = _fit_quietly(runs, chunk_size=None)  # one chunk of 3
    assert chunked.settings.chunk_size == 3 and fits.settings.chunk_size == 2
    for k in ("E", "alpha", "A", "sigma"):
        np.testing.assert_array_equal(chunked.posterior[k].values, fits.posterior[k].values)


@pytest.mark.slow
def test_the_search_starts_every_curve_at_its_mode(many, runs):
    # (after the fixture's fit: the same settings, so the same compiled programs in this process)
    # the compiled search for each curve's mode (the pilot program) must end where the posterior
    # is: after it, the chains' potential energies are those the whole warm-up settles at.
    # Control: searching from the priors' typical values, where the ridge map's level lay 300 to
    # 500 units (about 70 posterior sds) away and out of the Adam search's reach, fails here.
    from bayescale.inference import many as m
    from bayescale.inference import vhmc
    from bayescale.inference.driver import curve_keys, jitter_key
    from bayescale.model.build import build_model
    from bayescale.model.likelihoods import get_likelihood

    law, noise = bs.get_law("power_law"), get_likelihood("student_t", nu=4.0)
    table = bs.from_frame(runs).table
    curves = [m._curve(t, g, law, None, noise.name) for g, t in table.groupby("group", sort=True)]
    families = tuple((k, p.family) for k, p in curves[0][1].items())
    args, starts = m._stack(law, curves, FAST["num_chains"])
    settings = vhmc.HmcSettings(FAST["num_chains"], FAST["num_warmup"], FAST["num_samples"])
    order = np.arange(len(curves))
    keys = curve_keys(FAST["seed"], order, FAST["num_chains"])
    jitter = jitter_key(FAST["seed"])
    model = build_model(law, families, noise)
    pilot = m._pilot_program(model, settings, m.NUM_CANDIDATES)
    started = m._in_blocks(pilot, order, (keys, starts, args), (jitter,))
    warm = m._warm_program(model, settings)
    span = (jitter, np.int32(m.PILOT), np.int32(settings.num_warmup))
    warmed = m._in_blocks(warm, order, (keys, starts, started, args), span)
    gap = np.median(started.u, axis=1) - np.median(warmed.u, axis=1)
    assert np.all(np.abs(gap) < 10.0), gap


@pytest.mark.slow
def test_a_curve_with_other_data_differs_and_leaves_the_others_alone(many, runs):
    # positive control: change curve c's losses; only c's posterior moves, bitwise
    fits, _ = many
    other = runs.copy()
    in_c = other["group"] == "c"
    other.loc[in_c, "loss"] = other.loc[in_c, "loss_mean"] * 2.0 ** np.linspace(0, 1, in_c.sum())
    moved, _ = _fit_quietly(other)
    for g in ("a", "b"):
        np.testing.assert_array_equal(
            moved.posterior["alpha"].sel(group=g).values,
            fits.posterior["alpha"].sel(group=g).values,
        )
    before = fits.posterior["alpha"].sel(group="c").values
    after = moved.posterior["alpha"].sel(group="c").values
    assert abs(np.median(after) - np.median(before)) > 0.05


@pytest.mark.slow
def test_the_callers_frame_is_not_modified(many, runs):
    # the fixture's fit_many ran on `runs`; a group column under another name works too
    pd.testing.assert_frame_equal(runs, _curves())
    frame = runs.rename(columns={"group": "arch"})
    copy = frame.copy(deep=True)
    with pytest.raises(PriorError):  # fails after reading and grouping, before sampling
        bs.fit_many(
            frame,
            "power_law",
            group="arch",
            priors={"nope": bs.Prior("Normal", loc=0, scale=1)},
            misfit=False,
        )
    pd.testing.assert_frame_equal(frame, copy)


def test_bad_input_says_what_and_how(runs):
    with pytest.raises(
        DataError,
        match=r"no column 'group' names the curves; columns are .*"
        r"Pass group=<your column>",
    ):
        bs.fit_many(runs.drop(columns="group"), "power_law", misfit=False)
    short = runs[~((runs["group"] == "c") & (runs.index % 20 > 2))]
    with pytest.raises(
        DataError, match="group 'c': law 'power_law' has 4 parameters but the data has only"
    ):
        bs.fit_many(short, "power_law", misfit=False)
    with pytest.raises(
        OptionError, match="chunk_size must be an integer of at least 1; received 0"
    ):
        bs.fit_many(runs, "power_law", chunk_size=0, misfit=False)
    with pytest.raises(
        OptionTypeError, match="client must be a dask.distributed Client; received str"
    ):
        bs.fit_many(runs, "power_law", client="localhost:8786", misfit=False)
    with pytest.raises(PriorError, match="'alpa', which is not a parameter"):
        bs.fit_many(
            runs, "power_law", priors={"alpa": bs.Prior("Normal", loc=0, scale=1)}, misfit=False
        )
    with pytest.raises(bs.OptionError, match="seed must be an integer"):
        bs.fit_many(runs, "power_law", seed=-1, misfit=False)


@pytest.mark.slow
def test_distributed_gives_the_same_draws(many, runs):
    distributed = pytest.importorskip("distributed")
    local, _ = many
    # threads in this process: the workers reuse this process's compiled program
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        remote, _ = _fit_quietly(runs, client=client, chunk_size=2)
    for k in ("E", "alpha", "A", "sigma"):
        np.testing.assert_array_equal(remote.posterior[k].values, local.posterior[k].values)
    np.testing.assert_array_equal(
        remote.tree["sample_stats"]["n_steps"].values, local.tree["sample_stats"]["n_steps"].values
    )


@pytest.mark.slow
def test_distributed_worker_processes_give_the_same_draws(many, runs):
    # separate worker processes (each compiles the program): about 1-2 min on 2 cores
    distributed = pytest.importorskip("distributed")
    local, _ = many
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        remote, _ = _fit_quietly(runs, client=client, chunk_size=2)
    for k in ("E", "alpha", "A", "sigma"):
        np.testing.assert_array_equal(remote.posterior[k].values, local.posterior[k].values)


@pytest.mark.slow
def test_agrees_with_separate_fits_within_monte_carlo_error():
    """Each curve's posterior from fit_many matches bs.fit on that curve alone.

    Both run 4 chains x 500 warm-up + 500 draws. For each of 3 curves x 4 parameters the
    posterior means must agree within 4 combined Monte Carlo standard errors,
    ``|m1 - m2| < 4 sqrt(mcse1^2 + mcse2^2)``, after checking that both bulk ESS exceed 400
    (so that the MCSEs are themselves reliable). Under agreement each comparison fails with
    probability 6e-5, the 12 together with less than 1e-3. Positive control: the same
    comparison across two different curves fails.
    """
    import arviz_stats as azs

    runs = _curves(lengths=(20, 20, 20))
    settings = dict(num_chains=4, num_warmup=500, num_samples=500, seed=0, misfit=False)
    many = bs.fit_many(runs, "power_law", **settings)
    names = ["E", "alpha", "A", "sigma"]

    def mean_mcse(post):
        ess = azs.ess(post[names], method="bulk")
        assert all(float(ess[k]) > 400 for k in names), ess
        mcse = azs.mcse(post[names], method="mean")
        return {k: (float(post[k].mean()), float(mcse[k])) for k in names}

    single = {}
    for g, curve in runs.groupby("group"):
        alone = bs.fit(curve, "power_law", **settings)
        single[g] = mean_mcse(alone.posterior)
        ours = mean_mcse(many.posterior.sel(group=g))
        for k in names:
            (m1, s1), (m2, s2) = ours[k], single[g][k]
            assert abs(m1 - m2) < 4 * np.hypot(s1, s2), (g, k, m1, m2, s1, s2)
    # positive control: curves a (alpha 0.40) and b (0.30) are told apart by the same rule
    (m1, s1), (m2, s2) = single["a"]["alpha"], single["b"]["alpha"]
    assert abs(m1 - m2) > 4 * np.hypot(s1, s2)


def test_ctrl_c_stops_fit_many_after_its_current_compiled_call(runs, monkeypatch):
    # each compiled call (a block of curves) is replaced by a long call that reports progress
    # until the driver stops it: Ctrl-C during the first one raises KeyboardInterrupt and no
    # other call starts (nothing is compiled here)
    import _thread
    import time

    from bayescale.inference import many as m

    calls, stopped = [], []

    def blocks(program, order, batched, extra=(), work=0, tick=None):
        calls.append(program)
        if len(calls) == 1:
            _thread.interrupt_main()
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                tick(0)  # raises once the driver is stopped
                time.sleep(0.01)
        except Exception:
            stopped.append(True)
            raise

    monkeypatch.setattr(m, "_in_blocks", blocks)
    with pytest.raises(KeyboardInterrupt):
        bs.fit_many(runs, "power_law", misfit=False, **FAST)
    assert len(calls) == 1 and stopped == [True]

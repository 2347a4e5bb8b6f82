"""The inference engine's contracts: reproducibility, padding, warnings, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import bayescale as bs
from bayescale.cli import main
from bayescale.errors import find_stack_level
from bayescale.inference.sampling import NutsSettings, sample_nuts, start_from_prior
from bayescale.model.build import bucket_size, build_model, model_inputs

SMALL = dict(num_warmup=500, num_samples=500, num_chains=4)


@pytest.fixture(scope="module")
def runs():
    return bs.simulate("power_law", seed=3)


def _draws(fit):
    return {k: fit.posterior[k].values for k in fit.param_names}


def _same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ reproducibility


def test_progress_bar_does_not_change_the_draws(runs):
    off = bs.fit(runs, "power_law", seed=5, progress_bar=False, misfit=False, **SMALL)
    on = bs.fit(runs, "power_law", seed=5, progress_bar=True, misfit=False, **SMALL)
    assert _same(_draws(off), _draws(on))


def test_a_different_seed_gives_different_draws(runs):
    # default draws: at 4 x 500, r_hat of this curve lands near 1.01 by chance (seeds 5-16:
    # 1.000 to 1.017, before and after the ridge coordinates); at 4 x 1000, 1.003
    a = bs.fit(runs, "power_law", seed=5, progress_bar=False, misfit=False)
    b = bs.fit(runs, "power_law", seed=6, progress_bar=False, misfit=False)
    assert not np.array_equal(a.posterior["alpha"].values, b.posterior["alpha"].values)


def test_library_and_cli_give_the_same_draws(runs, tmp_path):
    csv = tmp_path / "runs.csv"
    runs.to_csv(csv, index=False)
    out = tmp_path / "fit.nc"
    code = main(
        ["fit", str(csv), "--law", "power_law", "--variable", "n_params", "--chains", "4",
         "--warmup", "500", "--samples", "500", "--seed", "7", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    library = bs.fit(runs, "power_law", variable="n_params", seed=7, **SMALL)  # the default
    assert _same(_draws(bs.load_fit(out)), _draws(library))


LAYOUT = """
import json, sys
import bayescale as bs
import jax
runs = bs.simulate("power_law", seed=3)
fit = bs.fit(runs, "power_law", variable="n_params", seed=5, num_warmup=150, num_samples=50,
             num_chains=4, progress_bar=False)
print(json.dumps({"devices": jax.local_device_count(),
                  "draws": {k: fit.posterior[k].values.tolist() for k in fit.param_names}}))
"""

CLI = "import sys; from bayescale.cli import main; sys.exit(main(sys.argv[1:]))"


def _environment(tmp_path, devices=None):
    """This process's environment with ``devices`` host devices (None: the CLI's own choice)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["BAYESCALE_CACHE"] = str(tmp_path / "cache")  # the CLI's compile cache, not ~/.cache
    if devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _in_process_with(devices, tmp_path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LAYOUT)],
        env=_environment(tmp_path, devices),
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_chain_layout_does_not_change_the_draws(runs, tmp_path):
    """The same seed gives the same draws on one host device, two or four, and from the CLI.

    Four chains: in parallel over four devices, two chains per device, or all on one (as the
    library runs in a process without XLA_FLAGS); the CLI sets its own device count.
    """
    layouts = {d: _in_process_with(d, tmp_path) for d in (1, 2, 4)}
    assert [layouts[d]["devices"] for d in (1, 2, 4)] == [1, 2, 4]
    csv, out = tmp_path / "runs.csv", tmp_path / "fit.nc"
    runs.to_csv(csv, index=False)
    subprocess.run(
        [sys.executable, "-c", CLI, "fit", str(csv), "--law", "power_law", "--variable",
         "n_params", "--chains", "4", "--warmup", "150", "--samples", "50", "--seed", "5",
         "--quiet", "--out", str(out)],
        env=_environment(tmp_path), capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    cli = _draws(bs.load_fit(out))
    for d in (1, 2, 4):
        draws = {k: np.asarray(v) for k, v in layouts[d]["draws"].items()}
        assert _same(draws, cli), f"{d} device(s) and the CLI drew differently"


@pytest.mark.slow
def test_ctrl_c_stops_a_cli_fit_between_chunks(runs, tmp_path):
    """SIGINT during sampling stops the fit within a chunk: no output file, a non-zero exit.

    The CLI runs in a pseudo-terminal so that it shows its progress bar: the signal is sent
    once sampling has begun, and the bar's last count shows how far it got.
    """
    import fcntl
    import pty
    import re
    import select
    import signal
    import struct
    import termios
    import time

    csv, out = tmp_path / "runs.csv", tmp_path / "fit.nc"
    runs.to_csv(csv, index=False)
    leader, follower = pty.openpty()
    # 24 rows of 100 columns: tqdm draws nothing on a terminal of width 0 (a new pty's)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "fit", str(csv), "--law", "power_law", "--variable",
         "n_params", "--warmup", "1000000", "--samples", "1000", "--seed", "1", "--out",
         str(out)],
        stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
        env={**_environment(tmp_path), "PYTHONFAULTHANDLER": "1"},
    )  # fmt: skip
    os.close(follower)
    progress = re.compile(r"\| *(\d+)/(\d+) \[")
    text, deadline = "", time.monotonic() + 600

    def read(timeout: float) -> bool:
        nonlocal text
        if not select.select([leader], [], [], timeout)[0]:
            return True
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            return False
        text += chunk.decode(errors="replace")
        return bool(chunk)

    try:
        while not any(int(n) > 0 for n, _ in progress.findall(text)):
            assert proc.poll() is None and time.monotonic() < deadline, text[-2000:]
            read(1.0)
        proc.send_signal(signal.SIGINT)
        # the terminal is read while waiting, so that the fit never blocks on a full terminal
        stop_by = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < stop_by:
            read(0.5)
        if proc.poll() is None:  # say where it hangs: faulthandler prints every thread's stack
            proc.send_signal(signal.SIGABRT)
            stop_by = time.monotonic() + 20
            while proc.poll() is None and time.monotonic() < stop_by:
                read(0.5)
            pytest.fail(f"the fit did not stop within 120 s of SIGINT:\n{text[-8000:]}")
        code = proc.returncode
        while read(0.1):
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    done, total = (int(x) for x in progress.findall(text)[-1])
    assert code != 0
    assert not out.exists()
    assert done < total / 10, f"stopped at {done} of {total} iterations"
    assert "interrupted" in text


# ------------------------------------------------------------------ padding


def test_buckets():
    assert [bucket_size(n) for n in (1, 64, 65, 96, 97, 128, 129, 240, 245, 1000)] == [
        64, 64, 96, 96, 128, 128, 192, 256, 256, 1024,
    ]  # fmt: skip


def test_padding_leaves_the_log_density_unchanged(runs):
    from numpyro.infer.util import log_density

    law = bs.get_law("power_law")
    data = bs.from_frame(runs)
    priors = bs.default_priors(law, data)
    model = build_model(
        law, tuple((k, p.family) for k, p in priors.items()), bs.get_likelihood("student_t")
    )
    params = {"E": 1.5, "A_c": 0.6, "alpha": 0.3, "sigma": 0.02}
    values = []
    for pad in (False, True):
        inputs = model_inputs(law, data, priors, pad=pad)
        assert inputs.log_loss.shape[0] == (bucket_size(data.n_runs) if pad else data.n_runs)
        values.append(float(log_density(model, inputs.args(), {}, params)[0]))
    np.testing.assert_allclose(values[0], values[1], rtol=1e-6)


def test_padding_leaves_the_posterior_unchanged(runs):
    """Padded and unpadded NUTS agree within 4 Monte Carlo standard errors per parameter.

    Error budget: 4 parameters, each |difference| < 4 combined MCSE, a family-wise false-alarm
    rate below 1e-3 if the two posteriors are equal.
    """
    import arviz_stats as azs
    import xarray as xr

    law = bs.get_law("power_law")
    data = bs.from_frame(runs)
    priors = bs.default_priors(law, data)
    model = build_model(
        law, tuple((k, p.family) for k, p in priors.items()), bs.get_likelihood("student_t")
    )
    settings = NutsSettings(num_chains=4, num_warmup=500, num_samples=500)
    start = start_from_prior(law, priors, 4)
    out = {}
    for pad in (False, True):
        inputs = model_inputs(law, data, priors, pad=pad)
        samples, _ = sample_nuts(model, inputs, start, jitter=1.0, settings=settings, seed=1)
        out[pad] = xr.Dataset(
            {k: (("chain", "draw"), samples[k]) for k in ("E", "A", "alpha", "sigma")}
        )
    for k in ("E", "A", "alpha", "sigma"):
        mean = {p: float(out[p][k].mean()) for p in out}
        mcse = {p: float(azs.mcse(out[p][[k]])[k]) for p in out}
        assert abs(mean[True] - mean[False]) < 4 * np.hypot(mcse[True], mcse[False]), k


# ------------------------------------------------------------------ warnings and errors


def test_convergence_warning_points_at_the_callers_line(runs):
    with pytest.warns(bs.ConvergenceWarning) as record:
        bs.fit(runs, "power_law", num_warmup=3, num_samples=8, num_chains=2, seed=0, misfit=False)
    assert {os.path.basename(w.filename) for w in record} == {"test_engine.py"}


def test_extrapolation_warning_points_at_the_callers_line(runs):
    fit = bs.fit(runs, "power_law", method="map", seed=0, misfit=False)
    with pytest.warns(bs.ExtrapolationWarning) as record:
        bs.forecast(fit, {"n_params": [1e15]})
    assert {os.path.basename(w.filename) for w in record} == {"test_engine.py"}


def test_find_stack_level_counts_frames_outside_the_package():
    assert find_stack_level() == 1  # this test's own frame is already outside bayescale


@pytest.mark.parametrize(
    ("call", "kind"),
    [
        (lambda r: bs.fit(r, "chinchila", misfit=False), bs.LawError),
        (lambda r: bs.fit(r, "power_law", method="mcmc", misfit=False), bs.OptionError),
        (lambda r: bs.fit(r, "power_law", likelihood="cauchy", misfit=False), bs.OptionError),
        (lambda r: bs.fit(r, "power_law", seed=-1, misfit=False), bs.OptionError),
        (lambda r: bs.fit(r, "power_law", num_warmup=-5, misfit=False), bs.OptionError),
        (lambda r: bs.fit(r, "power_law", target_accept=1.5, misfit=False), bs.OptionError),
        (lambda r: bs.fit(r, "power_law", init="median", misfit=False), bs.OptionError),
        (lambda r: bs.fit(r, "power_law", nu=-1.0, misfit=False), bs.OptionError),
    ],
)
def test_every_input_problem_is_a_bayescale_error(runs, call, kind):
    with pytest.raises(kind) as info:
        call(runs)
    assert isinstance(info.value, bs.BayescaleError)
    assert isinstance(info.value, (ValueError, TypeError))
    assert "received" in str(info.value) or "Available" in str(info.value)


def test_warm_start_from_a_previous_posterior(runs):
    first = bs.fit(runs, "power_law", seed=0, misfit=False, **SMALL)
    again = bs.fit(runs, "power_law", init=first.draws(), seed=1, misfit=False, **SMALL)
    assert again.settings.init == "warm start"
    assert not again.problems()


# ------------------------------------------------------------------ warm-up


def test_laplace_start_is_the_laplace_approximation_in_the_samplers_coordinates():
    """At a mode, `laplace_start` gives the inverse Hessian of the potential in the sampler's
    coordinates (for a law without a ridge map: numpyro's unconstrained sites, sorted and
    flattened) as the initial inverse mass matrix, its diagonal without a dense mass matrix,
    and one draw of that Gaussian per chain.

    Error budget for the draws: each of the 4 chains' squared Mahalanobis distance is below
    the chi-square quantile 1 - 2.5e-5 (a false alarm rate of 1e-4 in all).
    """
    import jax
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import potential_energy, unconstrain_fn
    from scipy.stats import chi2

    from bayescale.inference.sampling import laplace_fit, laplace_start

    law = bs.get_law("chinchilla")
    data = bs.from_frame(bs.simulate("chinchilla", seed=3))
    priors = bs.default_priors(law, data)
    noise = bs.get_likelihood("student_t")
    model = build_model(law, tuple((k, p.family) for k, p in priors.items()), noise)
    assert model.ridge is None
    inputs = model_inputs(law, data, priors)
    cold = start_from_prior(law, priors, 1)
    lap = laplace_fit(model, inputs, cold, 0, 100)
    assert lap.ok
    mode = {k: lap.mode[k] for k in cold}
    args = inputs.args()
    y, unravel = ravel_pytree(unconstrain_fn(model, args, {}, mode))
    hess = np.asarray(
        jax.hessian(lambda v: potential_energy(model, args, {}, unravel(v)))(y), np.float64
    )
    cov = np.linalg.inv((hess + hess.T) / 2)
    dense = NutsSettings(num_chains=4, dense_mass=True)
    start, metric = laplace_start(model, inputs, mode, dense, seed=0)
    np.testing.assert_allclose(metric, cov, rtol=1e-3, atol=1e-6 * np.abs(cov).max())
    _, diagonal = laplace_start(model, inputs, mode, NutsSettings(dense_mass=False), seed=0)
    np.testing.assert_allclose(diagonal, np.diag(cov), rtol=1e-3)
    assert set(start) == set(mode) and all(v.shape[0] == 4 for v in start.values())
    for c in range(4):
        row = {k: v[c] for k, v in start.items()}
        d = np.asarray(ravel_pytree(unconstrain_fn(model, args, {}, row))[0], np.float64) - y
        assert d @ hess @ d < chi2.ppf(1 - 2.5e-5, y.size), c
    assert len(np.unique(start["alpha"])) == 4

import io
import os

import pytest

from bayescale.cli import _read_csv, build_parser, main


@pytest.fixture
def runs_csv(tmp_path, epoch_240):
    path = tmp_path / "runs.csv"
    frame = epoch_240[["n_params", "compute", "loss"]].rename(
        columns={"n_params": "Model Size", "compute": "Training FLOP"}
    )
    frame.to_csv(path, index=False)
    return path


def test_fit_prints_the_summary_and_saves(runs_csv, tmp_path, capsys):
    out = tmp_path / "fit.nc"
    code = main(
        [
            "fit",
            str(runs_csv),
            "--law",
            "chinchilla",
            "--column",
            'n_params="Model Size"',
            "--column",
            "compute=Training FLOP",
            "--warmup",
            "300",
            "--samples",
            "300",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Posterior summary" in captured.out and "alpha" in captured.out
    assert "misfit_level" in captured.out  # the default model: the law with its misfit
    assert "Diagnostics:" in captured.out
    assert out.is_file()


def test_no_misfit_asks_for_the_exact_law(runs_csv):
    from bayescale.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["fit", str(runs_csv)]).misfit is None  # fit's default: the misfit
    assert parser.parse_args(["fit", str(runs_csv), "--no-misfit"]).misfit is False
    assert parser.parse_args(["fit", str(runs_csv), "--misfit"]).misfit is True


def test_errors_are_one_line_on_stderr(runs_csv, capsys):
    code = main(["fit", str(runs_csv), "--law", "chinchila"])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Did you mean 'chinchilla'" in lines[0]
    assert "Traceback" not in captured.err
    code = main(["fit", str(runs_csv), "--column", "n_params=nope"])
    assert code == 2
    assert "column 'nope' not in data" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path / "demo"), "--warmup", "300", "--samples", "300"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "SYNTHETIC" in captured.out
    assert "Posterior of L(N, D)" in captured.out
    pngs = sorted(p.name for p in (tmp_path / "demo").glob("*.png"))
    assert "fit.png" in pngs


def test_forecast_and_allocate_from_a_saved_fit(sim_fit, tmp_path, capsys):
    path = sim_fit.save(tmp_path / "fit.nc")
    code = main(
        [
            "forecast",
            str(path),
            "--n-params",
            "7e10",
            "--n-tokens",
            "1.4e12",
            "--target",
            "2.0",
            "--plot",
            str(tmp_path / "fc.png"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "prob_below" in captured.out and (tmp_path / "fc.png").is_file()
    assert "decades outside the observed range" in captured.err  # the ExtrapolationWarning
    code = main(
        [
            "allocate",
            str(path),
            "--compute",
            "5.88e23",
            "--compute",
            "1e24",
            "--plot",
            str(tmp_path / "al.png"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "tokens_per_param_median" in captured.out and (tmp_path / "al.png").is_file()
    assert main(["forecast", str(path)]) == 2
    assert "no points to forecast" in capsys.readouterr().err


def test_check_compare_and_breaks(sim_fit, tmp_path, capsys):
    import bayescale as bs
    from bayescale.model.simulation import isoflop_design

    path = sim_fit.save(tmp_path / "chinchilla.nc")
    new = bs.simulate("chinchilla", design=isoflop_design([1e22], sizes_per_budget=4), seed=9)
    new.to_csv(tmp_path / "new.csv", index=False)
    assert main(["check", str(path), str(tmp_path / "new.csv")]) == 0
    out = capsys.readouterr().out
    assert "verdict" in out and "Interval coverage" in out
    other = bs.fit(
        sim_fit.data.table,
        "power_law",
        variable="compute",
        num_warmup=300,
        num_samples=300,
        seed=2,
        misfit=False,
    ).save(tmp_path / "power.nc")
    assert main(["compare", str(path), str(other)]) == 0
    out = capsys.readouterr().out
    assert "chinchilla" in out and "power" in out
    curve = bs.simulate("broken_power_law", variable="data_size", seed=7)
    curve.to_csv(tmp_path / "curve.csv", index=False)
    code = main(
        [
            "breaks",
            str(tmp_path / "curve.csv"),
            "--variable",
            "data_size",
            "--max-breaks",
            "1",
            "--warmup",
            "300",
            "--samples",
            "300",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Evidence by number of breaks" in captured.out


# ----------------------------------------------------------------- for scripts: output, paths


def test_version(capsys):
    import bayescale as bs

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"bayescale {bs.__version__}"


def test_output_paths_are_checked_before_any_work(tmp_path, monkeypatch, capsys):
    import bayescale as bs

    def no_work(*args, **kwargs):
        raise AssertionError("the CLI started working before checking its output paths")

    for name in ("fit", "load_fit", "detect_break", "backtest"):
        monkeypatch.setattr(bs, name, no_work)
    afile = tmp_path / "afile"
    afile.write_text("x")
    runs = tmp_path / "runs.csv"
    bs.simulate("power_law", seed=0).to_csv(runs, index=False)
    bad = str(afile / "fit.nc")  # a path under a file: no folder can be made there
    assert main(["fit", str(runs), "--method", "map", "--out", bad]) == 2
    err = capsys.readouterr().err
    assert f"--out {bad!r}" in err and "is a file, not a folder" in err and ".tmp" not in err
    absent_fit = str(tmp_path / "absent.nc")
    args = ["forecast", absent_fit, "--n-params", "1e9", "--n-tokens", "1e10"]
    assert main([*args, "--plot", str(tmp_path)]) == 2
    assert "is a folder; it needs a file name" in capsys.readouterr().err
    assert main([*args, "--out", bad]) == 2
    assert f"--out {bad!r}" in capsys.readouterr().err
    assert main(["breaks", str(runs), "--variable", "compute", "--plot", bad]) == 2
    assert f"--plot {bad!r}" in capsys.readouterr().err
    assert main(["demo", "--out", str(afile)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_demo_passes_chains_through(tmp_path, monkeypatch):
    from bayescale import demo

    seen = {}

    def fake_run(out, **kwargs):
        seen.update(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(demo, "run", fake_run)
    assert main(["demo", "--out", str(tmp_path / "d"), "--chains", "2", "--quiet"]) == 2
    assert seen["num_chains"] == 2 and seen["progress_bar"] is False


def test_formats_for_scripts_and_sniffed_delimiter(sim_fit, tmp_path, capsys):
    import json

    import pandas as pd

    import bayescale as bs

    # a semicolon file whose column names hold spaces: the delimiter is sniffed, not a space
    runs = bs.simulate("chinchilla", seed=1).rename(columns={"n_params": "Model Size"})
    runs.to_csv(tmp_path / "runs.csv", sep=";", index=False)
    code = main(
        [
            "fit",
            str(tmp_path / "runs.csv"),
            "--column",
            "n_params=Model Size",
            "--method",
            "map",
            "--format",
            "json",
            "--quiet",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""  # quiet: no report, no progress bar
    rows = json.loads(captured.out)["summary"]
    assert [r["parameter"] for r in rows][:5] == ["E", "alpha", "beta", "A", "B"]
    assert {"median", "q5", "q95"} <= set(rows[0])
    # --sep names the delimiter: a wrong one leaves one column, which the fit rejects
    assert main(["fit", str(tmp_path / "runs.csv"), "--method", "map", "--sep", ","]) == 2
    assert "not in data" in capsys.readouterr().err

    path = sim_fit.save(tmp_path / "fit.nc")
    point = ["--n-params", "1e9", "--n-tokens", "2e10"]
    assert main(["forecast", str(path), *point, "--format", "csv"]) == 0
    captured = capsys.readouterr()
    table = pd.read_csv(io.StringIO(captured.out), index_col="point")  # stdout is only the CSV
    assert list(table.index) == [0] and table.loc[0, "q5"] < table.loc[0, "median"]
    assert "Forecast (" not in captured.out
    out = tmp_path / "tables" / "alloc.json"
    assert (
        main(["allocate", str(path), "--compute", "1e22", "--format", "json", "--out", str(out)])
        == 0
    )
    captured = capsys.readouterr()
    assert f"Tables written to {out}" in captured.out
    tables = json.loads(out.read_text())
    assert set(tables) == {"allocation", "exponents"}
    assert tables["allocation"][0]["compute"] == 1e22
    assert not list(out.parent.glob(".*tmp"))  # written atomically, no temporary left
    assert main(["allocate", str(path), "--compute", "1e22", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "Compute-optimal allocation" in captured.out  # the requested tables, as text


# ---------------------------------------------------------------------- issue 28: CLI polish


def test_every_option_has_help_text():
    from bayescale.cli import build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if a.dest == "command").choices
    missing = [
        f"{verb} {action.option_strings[0]}"
        for verb, sub in verbs.items()
        for action in sub._actions
        if action.option_strings and action.dest != "help" and not action.help
    ]
    assert missing == []
    backtest_help = verbs["backtest"].format_help()
    assert "default all three: misfit, exact, huber" in " ".join(backtest_help.split())


def test_a_long_output_name_is_refused_before_the_fit(tmp_path, monkeypatch, capsys):
    import bayescale as bs

    def no_work(*args, **kwargs):
        raise AssertionError("the CLI fitted before checking --out")

    monkeypatch.setattr(bs, "fit", no_work)
    runs = tmp_path / "runs.csv"
    bs.simulate("power_law", seed=0).to_csv(runs, index=False)
    long = str(tmp_path / ("f" * 300 + ".nc"))
    assert main(["fit", str(runs), "--out", long]) == 2
    err = capsys.readouterr().err
    assert "is 303 bytes long; this file system allows at most" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def huber_chinchilla(tmp_path_factory):
    import bayescale as bs

    fit = bs.fit(bs.simulate("chinchilla", seed=1), "chinchilla", method="huber")
    return fit.save(tmp_path_factory.mktemp("cli") / "huber.nc")


def test_a_full_disk_names_the_file(huber_chinchilla, tmp_path, monkeypatch, capsys):
    import errno
    import os

    from bayescale import files

    class FullDisk(io.FileIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real_fdopen = os.fdopen
    monkeypatch.setattr(
        files.os,
        "fdopen",
        lambda fd, mode="r", *a, **k: FullDisk(fd, "wb") if "w" in mode else real_fdopen(fd, mode),
    )
    out = tmp_path / "alloc.json"
    args = ["allocate", str(huber_chinchilla), "--compute", "1e21", "--format", "json"]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"could not write {str(out)!r}: No space left on device" in err
    assert "Free some space" in err and ".bayescale-tmp" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_extrapolation_warnings_speak_the_cli(huber_chinchilla, capsys):
    assert main(["allocate", str(huber_chinchilla), "--compute", "1e20", "--compute", "1e24"]) == 0
    captured = capsys.readouterr()
    assert "budget 2 +2.52" in captured.err and "budget 0" not in captured.err
    assert "warn=False" not in captured.err and "intervals printed include" in captured.err
    assert "\n2 " in captured.out  # the table numbers the budgets alike


def test_design_takes_rank(huber_chinchilla, monkeypatch):
    import bayescale as bs

    seen = {}

    def fake_design(fit, candidates, target, **kwargs):
        seen.update(kwargs)
        raise bs.OptionError("stop here")

    monkeypatch.setattr(bs, "design", fake_design)
    args = ["design", str(huber_chinchilla), "--target-compute", "1e22", "--budget", "1e20"]
    assert main([*args, "--rank", "width"]) == 2
    assert seen["rank"] == "width"


def test_a_grouped_fit_says_on_which_scale_its_population_lies(tmp_path, capsys):
    # issue 28: the printout showed alpha_mu=-1.279, sigma_mu=-5.267 without their scale
    import numpy as np
    import pandas as pd

    import bayescale as bs

    design = pd.DataFrame({"n_params": np.geomspace(1e7, 1e10, 8)})
    frames = [
        bs.simulate("power_law", design=design, seed=g).assign(family=f"f{g}") for g in range(3)
    ]
    pd.concat(frames).to_csv(tmp_path / "runs.csv", index=False)
    args = ["fit", str(tmp_path / "runs.csv"), "--law", "power_law", "--group", "family"]
    code = main([*args, "--pool", "alpha", "--warmup", "100", "--samples", "100", "--no-misfit"])
    out = capsys.readouterr().out
    assert code == 0
    assert "population medians: alpha_mu=" in out and "(mean of log alpha)" in out
    assert "(sd of log alpha)" in out and "per group: E, alpha, A, sigma" in out


def test_a_negative_number_is_read_as_a_number_and_refused(tmp_path, capsys):
    """Before: argparse took -7e10 for an option and said --n-params expected an argument."""
    args = ["forecast", str(tmp_path / "fit.nc"), "--n-params", "-7e10", "--n-tokens", "1e10"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--n-params must be a positive, finite number; received -7e+10" in err
    assert main(["allocate", str(tmp_path / "fit.nc"), "--compute", "-1e24"]) == 2
    assert "--compute must be a positive, finite number; received -1e+24" in capsys.readouterr().err


def test_csv_encoding_and_comments(tmp_path, capsys):
    """Before: a commented or Latin-1 file got the hint "Pass --sep" and could not be read."""
    import bayescale as bs

    runs = bs.simulate("power_law", seed=1)
    commented = tmp_path / "commented.csv"
    commented.write_text("# my sweep, lr 3e-4\n" + runs.to_csv(index=False))
    latin = tmp_path / "latin.csv"
    latin.write_bytes(runs.assign(note="caf\xe9").to_csv(index=False).encode("latin-1"))
    fit = ["fit", "--law", "power_law", "--method", "huber", "--quiet", "--format", "csv"]
    assert main([*fit, str(commented)]) == 2
    assert "pass comment='#' (--comment '#' on the command line)" in capsys.readouterr().err
    assert main([*fit, str(latin)]) == 2
    assert "--encoding on the command line" in capsys.readouterr().err
    # the options reach the one reader (a fit on top would only repeat test_data's checks)
    parser = build_parser()
    for path, option in ((commented, ["--comment", "#"]), (latin, ["--encoding", "latin-1"])):
        args = parser.parse_args(["fit", str(path), *option])
        assert len(_read_csv(args.data, args)) == len(runs)


def test_the_cli_uses_the_jax_cache_the_user_set_or_its_own(monkeypatch, tmp_path):
    import jax

    from bayescale import cli

    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # restored afterwards
    monkeypatch.setenv("BAYESCALE_CACHE", str(tmp_path / "ours"))
    before = jax.config.jax_compilation_cache_dir
    minimum = jax.config.jax_persistent_cache_min_compile_time_secs
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    cli._configure_jax()
    assert jax.config.jax_compilation_cache_dir == before
    assert not (tmp_path / "ours").exists()
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    try:
        cli._configure_jax()
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "ours" / "jax")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", minimum)

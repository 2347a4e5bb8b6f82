import pytest

from bayescale.cli import main


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
    assert "Diagnostics:" in captured.out
    assert out.is_file()


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
    from bayescale.testing import isoflop_design

    path = sim_fit.save(tmp_path / "chinchilla.nc")
    new = bs.simulate("chinchilla", design=isoflop_design([1e22], sizes_per_budget=4), seed=9)
    new.to_csv(tmp_path / "new.csv", index=False)
    assert main(["check", str(path), str(tmp_path / "new.csv")]) == 0
    out = capsys.readouterr().out
    assert "verdict" in out and "Interval coverage" in out
    other = bs.fit(
        sim_fit.data.table, "power_law", variable="compute", num_warmup=300, num_samples=300, seed=2
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

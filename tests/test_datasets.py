"""Tests of bayescale.io.datasets against the shared reference data (no network)."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pooch
import pytest
import requests

from bayescale.errors import DataError
from bayescale.io import datasets
from bayescale.io.datasets import DATASETS, cache_dir, list_datasets, load_dataset


def _reference_dir() -> Path:
    env = os.environ.get("BAYESCALE_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


DATA = _reference_dir()
# BAYESCALE_REQUIRE_DATA=1 (as in CI): missing reference data fails these tests, naming the path
REQUIRE_DATA = os.environ.get("BAYESCALE_REQUIRE_DATA", "0") not in ("", "0")
needs_data = pytest.mark.skipif(
    not (DATA / "chinchilla_epoch" / "svg_extracted_data.csv").is_file() and not REQUIRE_DATA,
    reason=f"reference data not found at {DATA}; set BAYESCALE_DATA to the reference folder",
)

EXPECTED = {
    # name: (rows, columns in order)
    "chinchilla_epoch": (245, ["n_params", "n_tokens", "compute", "loss"]),
    "chinchilla_epoch_240": (240, ["n_params", "n_tokens", "compute", "loss"]),
    "chinchilla_isoflop": (
        123,
        ["n_params", "n_tokens", "compute", "loss", "budget", "outlier", "reason"],
    ),
    "chinchilla_isoflop_clean": (85, ["n_params", "n_tokens", "compute", "loss", "budget"]),
    "datablations": (
        296,
        ["n_params", "n_tokens", "compute", "unique_tokens", "loss", "name"],
    ),
    "datablations_fit182": (
        182,
        ["n_params", "n_tokens", "compute", "unique_tokens", "loss", "name"],
    ),
    "bnsl_4digit": (17, ["data_size", "loss", "split"]),
    "revisiting_lang": (
        712,
        ["data_size", "loss", "split", "group", "domain", "task", "model"],
    ),
}

NUMERIC = {"n_params", "n_tokens", "compute", "unique_tokens", "data_size", "loss"}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network, an empty private cache, no BAYESCALE_DATA unless passed explicitly, and no
    ../shared/data (the working directory is a fresh folder and the package is not a checkout)."""

    def _no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("bayescale.io.datasets tried to use the network")

    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", _no_network)
    monkeypatch.delenv("BAYESCALE_DATA", raising=False)
    monkeypatch.setenv("BAYESCALE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "_checkout_root", lambda: None)


def _serve(monkeypatch: pytest.MonkeyPatch, payload: bytes | Exception, calls: list[str]) -> None:
    """Stand in for the network: pooch's HTTP downloader writes ``payload`` (or raises it)."""

    def _fake(self: object, url: str, output_file: object, *args: object, **kw: object) -> None:
        calls.append(url)
        if isinstance(payload, Exception):
            raise payload
        Path(str(output_file)).write_bytes(payload)

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", _fake)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_registry_names_and_listing() -> None:
    assert set(DATASETS) == set(EXPECTED)
    table = list_datasets()
    assert list(table["name"]) == list(DATASETS)
    for col in ("name", "description", "rows", "citation", "url", "license"):
        assert col in table.columns
    rows = dict(zip(table["name"], table["rows"], strict=True))
    assert rows == {name: exp[0] for name, exp in EXPECTED.items()}
    assert table["citation"].str.len().min() > 20
    assert (
        table.set_index("name").loc["chinchilla_epoch", "url"]
        == "https://raw.githubusercontent.com/epoch-research/analyzing-chinchilla/"
        "92258837425e1b5f2851d624287f0120583a3d0e/data/svg_extracted_data.csv"
    )


@needs_data
@pytest.mark.parametrize("name", list(DATASETS))
def test_registry_checksums_match_reference_files(name: str) -> None:
    info = DATASETS[name]
    assert _sha(DATA / info.folder / info.filename) == info.sha256


def test_chinchilla_checksum_is_the_published_one() -> None:
    assert DATASETS["chinchilla_epoch"].sha256 == (
        "193478df4e90f040016431996c45682659306840ecdadf83cfb9cd5ca0aa1b30"
    )


@needs_data
@pytest.mark.parametrize("name", list(EXPECTED))
def test_load_offline(name: str) -> None:
    rows, columns = EXPECTED[name]
    df = load_dataset(name, data_dir=DATA, download=False)
    assert len(df) == rows
    assert list(df.columns) == columns
    assert isinstance(df.index, pd.RangeIndex)
    for col in NUMERIC & set(df.columns):
        values = df[col].to_numpy()
        assert df[col].dtype == np.float64, col
        assert np.all(np.isfinite(values)), col
        assert np.all(values > 0), col


@needs_data
def test_load_via_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAYESCALE_DATA", str(DATA))
    assert len(load_dataset("bnsl_4digit", download=False)) == 17


@needs_data
def test_returns_new_frame_each_time() -> None:
    a = load_dataset("bnsl_4digit", data_dir=DATA)
    a.loc[0, "loss"] = -1.0
    b = load_dataset("bnsl_4digit", data_dir=DATA)
    assert b.loc[0, "loss"] == pytest.approx(2.13809046)


@needs_data
def test_chinchilla_values() -> None:
    df = load_dataset("chinchilla_epoch", data_dir=DATA)
    raw = pd.read_csv(DATA / "chinchilla_epoch" / "svg_extracted_data.csv")
    np.testing.assert_array_equal(df["n_params"], raw["Model Size"])
    np.testing.assert_array_equal(df["compute"], raw["Training FLOP"])
    np.testing.assert_allclose(df["n_tokens"], raw["Training FLOP"] / (6 * raw["Model Size"]))
    np.testing.assert_allclose(6 * df["n_params"] * df["n_tokens"], df["compute"], rtol=1e-12)


@needs_data
def test_chinchilla_240_drops_five_highest_losses() -> None:
    full = load_dataset("chinchilla_epoch", data_dir=DATA)
    sub = load_dataset("chinchilla_epoch_240", data_dir=DATA)
    top5 = full["loss"].nlargest(5)
    assert sub["loss"].max() < top5.min()
    assert sub["loss"].max() == pytest.approx(full["loss"].nlargest(6).iloc[-1])
    expected = full.drop(index=top5.index).reset_index(drop=True)
    pd.testing.assert_frame_equal(sub, expected)


@needs_data
def test_datablations_units() -> None:
    full = load_dataset("datablations", data_dir=DATA)
    fit = load_dataset("datablations_fit182", data_dir=DATA)
    # fit182 is given in billions upstream; returned in raw units like the full table.
    assert fit["n_params"].min() > 1e6
    assert fit["n_tokens"].min() >= 1e8
    assert set(fit["name"]) <= set(full["name"])
    merged = fit.merge(full.drop_duplicates("name"), on="name", suffixes=("_fit", "_all"))
    for col in ("n_params", "n_tokens", "unique_tokens"):
        np.testing.assert_allclose(merged[f"{col}_fit"], merged[f"{col}_all"], rtol=1e-2)
    np.testing.assert_allclose(full["compute"], 6 * full["n_params"] * full["n_tokens"])
    assert (full["unique_tokens"] <= full["n_tokens"] * (1 + 1e-12)).all()


@needs_data
def test_bnsl_split() -> None:
    df = load_dataset("bnsl_4digit", data_dir=DATA)
    assert list(df["split"]) == ["fit"] * 14 + ["extrapolate"] * 3
    assert df["data_size"].is_monotonic_increasing
    assert df["data_size"].iloc[0] == 160.0
    assert df["data_size"].iloc[-1] == 928.0


@needs_data
def test_revisiting_lang_dedup_and_groups() -> None:
    df = load_dataset("revisiting_lang", data_dir=DATA)
    raw = pd.read_csv(DATA / "revisiting_lang" / "benchmark.lang.csv")
    assert len(raw) == 1399
    assert len(raw) - len(df) == 687
    assert df["group"].nunique() == 20
    assert not df.duplicated().any()
    assert not df.duplicated(["group", "data_size"]).any()
    assert set(df["split"]) == {"fit", "extrapolate"}
    assert (df["group"] == df["domain"] + "/" + df["task"] + "/" + df["model"]).all()
    # Model names that look like numbers stay text.
    assert "LM/val_loss/1.68e+07" in set(df["group"])
    assert "NMT/log_perplexity/6 Enc, 6 Dec" in set(df["group"])
    n_fit = (raw.drop_duplicates()["Training"] == 1).sum()
    assert (df["split"] == "fit").sum() == n_fit


@needs_data
def test_corrupted_copy_raises_checksum_error(tmp_path: Path) -> None:
    src = DATA / "chinchilla_epoch" / "svg_extracted_data.csv"
    bad_dir = tmp_path / "bad"
    (bad_dir / "chinchilla_epoch").mkdir(parents=True)
    bad = bad_dir / "chinchilla_epoch" / "svg_extracted_data.csv"
    bad.write_bytes(src.read_bytes().replace(b"5.005581996196243", b"5.005581996196244"))
    with pytest.raises(DataError) as excinfo:
        load_dataset("chinchilla_epoch", data_dir=bad_dir)
    message = str(excinfo.value)
    assert "Checksum mismatch" in message
    assert DATASETS["chinchilla_epoch"].sha256 in message
    assert _sha(bad) in message
    assert str(bad) in message
    assert bad.exists()  # a user's file is never deleted


def test_missing_file_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        load_dataset("chinchilla_epoch", data_dir=tmp_path / "empty", download=False)
    message = str(excinfo.value)
    assert "chinchilla_epoch/svg_extracted_data.csv" in message
    assert "BAYESCALE_DATA" in message
    assert "data_dir" in message
    assert str(tmp_path / "empty") in message
    assert str(cache_dir()) in message
    assert DATASETS["chinchilla_epoch"].url in message
    assert isinstance(excinfo.value, ValueError)


def test_missing_file_without_url_never_downloads(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="datablations/val_losses_all.csv") as excinfo:
        load_dataset("datablations", data_dir=tmp_path, download=True)
    assert "BAYESCALE_DATA" in str(excinfo.value)


def test_offline_download_failure_is_a_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve(monkeypatch, requests.ConnectionError("network is unreachable"), [])
    with pytest.raises(DataError) as excinfo:
        load_dataset("chinchilla_epoch", data_dir=tmp_path)
    message = str(excinfo.value)
    assert "network is unreachable" in message
    assert "BAYESCALE_DATA" in message
    assert DATASETS["chinchilla_epoch"].url in message
    assert not any(p.is_file() for p in cache_dir().rglob("*"))  # no partial file left


@needs_data
def test_download_into_cache_with_fake_downloader(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = (DATA / "chinchilla_epoch" / "svg_extracted_data.csv").read_bytes()
    calls: list[str] = []
    _serve(monkeypatch, payload, calls)
    df = load_dataset("chinchilla_epoch_240")
    assert len(df) == 240
    assert calls == [DATASETS["chinchilla_epoch"].url]
    cached = cache_dir() / "chinchilla_epoch" / "svg_extracted_data.csv"
    assert cached.read_bytes() == payload
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]
    # Second load comes from the cache, without a download.
    assert len(load_dataset("chinchilla_epoch", download=False)) == 245
    assert len(calls) == 1


def test_download_with_wrong_checksum_is_discarded(monkeypatch: pytest.MonkeyPatch) -> None:
    _serve(monkeypatch, b"not,the,file\n", [])
    with pytest.raises(DataError, match="sha256"):
        load_dataset("revisiting_lang")
    assert not any(cache_dir().rglob("*.csv"))
    assert not any(p.is_file() for p in cache_dir().rglob("*"))


@needs_data
def test_search_order_data_dir_before_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A corrupted copy in data_dir is found (and rejected) before the good one in the env folder.
    bad_dir = tmp_path / "bad"
    shutil.copytree(DATA / "bnsl_4digit", bad_dir / "bnsl_4digit")
    target = bad_dir / "bnsl_4digit" / "four_digit_addition.csv"
    target.chmod(0o644)
    target.write_bytes(target.read_bytes() + b"\n")
    monkeypatch.setenv("BAYESCALE_DATA", str(DATA))
    with pytest.raises(DataError, match="Checksum mismatch"):
        load_dataset("bnsl_4digit", data_dir=bad_dir)
    assert len(load_dataset("bnsl_4digit", data_dir=tmp_path / "nothing")) == 17


def test_cache_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BAYESCALE_CACHE", str(tmp_path / "c1"))
    assert cache_dir() == tmp_path / "c1"
    monkeypatch.delenv("BAYESCALE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "bayescale"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "bayescale"


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("chinchila_epoch", "chinchilla_epoch"),
        ("datablation", "datablations"),
        ("bnsl4digit", "bnsl_4digit"),
        ("revisiting-lang", "revisiting_lang"),
    ],
)
def test_unknown_name_suggests(typo: str, suggestion: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        load_dataset(typo)
    message = str(excinfo.value)
    assert f"Did you mean {suggestion!r}?" in message
    for name in DATASETS:
        assert name in message


def test_module_does_not_import_jax() -> None:
    source = Path(datasets.__file__).read_text()
    assert "import jax" not in source
    assert "numpyro" not in source


def _reference_layout(root: Path) -> Path:
    """A checkout's layout under ``root``: ``repo/`` beside ``shared/data/chinchilla_epoch/``."""
    target = root / "shared" / "data" / "chinchilla_epoch"
    target.mkdir(parents=True)
    shutil.copy2(DATA / "chinchilla_epoch" / "svg_extracted_data.csv", target)
    (root / "repo" / "notebooks").mkdir(parents=True)
    return root / "repo"


@needs_data
def test_finds_shared_data_beside_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # run from a checkout's root, BAYESCALE_DATA unset and no network: ../shared/data is found
    repo = _reference_layout(tmp_path / "work")
    monkeypatch.chdir(repo)
    assert len(load_dataset("chinchilla_epoch_240", download=False)) == 240


@needs_data
def test_finds_shared_data_beside_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a notebook runs in notebooks/, whose parent is the checkout, not the folder beside it
    repo = _reference_layout(tmp_path / "work")
    monkeypatch.chdir(repo / "notebooks")
    with pytest.raises(DataError):
        load_dataset("chinchilla_epoch", download=False)
    monkeypatch.setattr(datasets, "_checkout_root", lambda: repo)
    assert len(load_dataset("chinchilla_epoch", download=False)) == 245


@needs_data
def test_env_var_replaces_the_shared_data_guess(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an explicit BAYESCALE_DATA is the user's choice: a wrong one is not papered over
    repo = _reference_layout(tmp_path / "work")
    monkeypatch.chdir(repo)
    monkeypatch.setenv("BAYESCALE_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match="BAYESCALE_DATA"):
        load_dataset("chinchilla_epoch", download=False)


def test_not_found_names_every_place_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    repo = tmp_path / "work" / "repo"
    (repo / "notebooks").mkdir(parents=True)
    monkeypatch.chdir(repo / "notebooks")
    monkeypatch.setattr(datasets, "_checkout_root", lambda: repo)
    with pytest.raises(DataError) as info:
        load_dataset("bnsl_4digit")
    message = str(info.value)
    shared = tmp_path / "work" / "shared" / "data" / "bnsl_4digit" / "four_digit_addition.csv"
    assert f"../shared/data from the repository: {shared}" in message
    assert f"../shared/data from the working directory: {repo / 'shared'}" in message
    assert f"cache: {tmp_path / 'cache'}" in message
    assert "put the reference data folder at ../shared/data" in message


@pytest.mark.slow  # two pytest subprocesses, each importing JAX
def test_missing_data_skips_in_one_line_before_any_fit(tmp_path: Path) -> None:
    """A data test in a checkout without ../shared/data skips with a one-line reason.

    The test run by the subprocess needs the session's NUTS fit of the Epoch runs; it must be
    skipped before that fit (seconds, not a minute) and say in one line what is missing and how
    to get it. With BAYESCALE_REQUIRE_DATA=1 (as in CI) the same test fails instead.
    """
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "BAYESCALE_DATA": str(tmp_path / "nonexistent"),
        "BAYESCALE_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(root),
        # any download attempt fails at once instead of waiting on the network
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    env.pop("BAYESCALE_REQUIRE_DATA", None)
    test = "tests/test_forecast.py::test_epoch_interval_contains_epochs_point_value"
    command = [sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider", "-rs", test]
    run = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    assert run.returncode == 0 and len(lines) == 1, run.stdout[-2000:]
    assert len(lines[0]) < 300, lines[0]
    assert "reference data not found" in lines[0] and "BAYESCALE_DATA" in lines[0]
    assert "Download" not in run.stdout  # the tests never reach for the network

    env["BAYESCALE_REQUIRE_DATA"] = "1"
    run = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1 and "BAYESCALE_REQUIRE_DATA is set" in run.stdout

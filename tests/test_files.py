"""Atomic writes: the umask's permissions, and a failed write that leaves the old file alone."""

from __future__ import annotations

import errno
import io
import json
import os
import stat
from pathlib import Path

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pooch
import pytest
import xarray as xr

import bayescale as bs
from bayescale import files
from bayescale.demo import save_figure
from bayescale.files import atomic_write, file_mode
from bayescale.io import datasets
from bayescale.io.datasets import DATASETS, cache_dir, load_dataset


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield 0o640
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_file_mode_follows_the_umask(umask_027):
    assert file_mode() == umask_027
    os.umask(0o002)
    assert file_mode() == 0o664


def test_a_new_file_gets_the_umask_mode_and_an_overwritten_one_keeps_its_own(tmp_path, umask_027):
    path = tmp_path / "out.bin"
    atomic_write(path, b"first")
    assert _mode(path) == umask_027  # mkstemp alone gives 0o600
    path.chmod(0o604)  # issue 28: an existing file's mode was replaced by the umask's
    atomic_write(path, b"second")
    assert path.read_bytes() == b"second"
    assert _mode(path) == 0o604
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_saved_fit_figure_and_download_get_the_umask_mode(
    tmp_path, umask_027, monkeypatch, shared_data
):
    fit = bs.fit(bs.simulate("power_law", seed=2), "power_law", method="huber")
    assert _mode(fit.save(tmp_path / "fit.nc")) == umask_027
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    assert _mode(save_figure(fig, tmp_path / "fig.png")) == umask_027
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"

    payload = (shared_data / "chinchilla_epoch" / "svg_extracted_data.csv").read_bytes()
    monkeypatch.setenv("BAYESCALE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BAYESCALE_DATA", raising=False)
    # no ../shared/data beside the working directory or the checkout: the loader downloads
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "_checkout_root", lambda: None)

    def serve(self, url, output_file, *args, **kwargs):  # pooch's downloader, off the network
        Path(str(output_file)).write_bytes(payload)

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", serve)
    assert DATASETS["chinchilla_epoch"].url
    load_dataset("chinchilla_epoch", data_dir=tmp_path / "empty")
    cached = cache_dir() / "chinchilla_epoch" / "svg_extracted_data.csv"
    assert _mode(cached) == umask_027


def test_disk_full_while_saving_is_an_os_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    fit = bs.fit(bs.simulate("power_law", seed=2), "power_law", method="huber")
    path = fit.save(tmp_path / "fit.nc")
    before = path.read_bytes()

    class FullDisk(io.FileIO):
        def write(self, data):  # half the bytes land, then the disk is full
            super().write(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real_fdopen = os.fdopen
    monkeypatch.setattr(
        files.os,
        "fdopen",
        lambda fd, mode="r", *a, **k: FullDisk(fd, "wb") if "w" in mode else real_fdopen(fd, mode),
    )
    with pytest.raises(
        OSError, match=r"could not write .*fit\.nc.*the previous file is unchanged"
    ) as info:
        fit.save(path)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.nc"]  # no temporary left
    monkeypatch.undo()
    assert bs.load_fit(path).tree.identical(fit.tree)


# ------------------------------------------------------------------ a law registered anew


@pytest.fixture
def custom_law_fit(tmp_path):
    """A MAP fit of a custom power law saved to disk; the law is unregistered afterwards."""
    name = "test_files_custom_law"
    params = bs.get_law("power_law").params  # E, alpha, A: the built-in law under a new name

    def law(p, logx):
        return jnp.logaddexp(jnp.log(p["E"]), jnp.log(p["A"]) - p["alpha"] * logx["n_params"])

    try:
        bs.register_law(name, law, variables=("n_params",), params=params)
        runs = bs.simulate("power_law", seed=2)
        fit = bs.fit(runs, name, method="map", seed=0, misfit=False)
        yield name, law, params, runs, fit, fit.save(tmp_path / "custom.nc")
    finally:
        bs.LAWS.pop(name, None)


def test_a_law_changed_only_on_later_runs_away_from_the_data_or_the_medians_is_refused(
    custom_law_fit,
):
    # issue 28: the fingerprint covered the first 16 runs at the posterior medians only
    name, law, params, runs, fit, path = custom_law_fit
    assert bs.load_fit(path).law.fn is law  # the same law loads
    later = float(np.log(runs["n_params"].iloc[:16].max()))
    assert (np.log(runs["n_params"]) > later).sum() >= 10  # runs beyond the old fingerprint
    beyond = float(np.log(runs["n_params"].max() * 10))  # a decade past the largest run
    median_alpha = float(np.median(fit.posterior["alpha"].values))
    changes = {
        "later runs": lambda p, logx: jnp.where(logx["n_params"] > later, 0.05, 0.0),
        "beyond the data": lambda p, logx: jnp.where(logx["n_params"] > beyond, 0.3, 0.0),
        "away from the medians": lambda p, logx: jnp.where(
            jnp.abs(p["alpha"] - median_alpha) > 1e-9, 0.05, 0.0
        ),
    }
    for where, change in changes.items():

        def other(p, logx, change=change):
            return law(p, logx) + change(p, logx)

        bs.register_law(name, other, variables=("n_params",), params=params, overwrite=True)
        with pytest.raises(bs.LawError, match=r"computes something else: at n_params=") as info:
            bs.load_fit(path)
        assert str(path) in str(info.value), where
    bs.register_law(name, law, variables=("n_params",), params=params, overwrite=True)
    assert bs.load_fit(path).law.fn is law


def _without_fingerprint(path: Path, out: Path) -> Path:
    """The saved fit as an earlier version wrote it: no law declaration or fingerprint."""
    with xr.open_datatree(path, engine="h5netcdf") as handle:
        tree = handle.load()
    for key in ("law_declaration", "law_fingerprint"):
        del tree.attrs[key]
    tree.to_netcdf(out, engine="h5netcdf")
    return out


def test_an_older_file_of_a_custom_law_warns_that_its_law_cannot_be_checked(
    custom_law_fit, tmp_path
):
    name, law, params, runs, fit, path = custom_law_fit
    old = _without_fingerprint(path, tmp_path / "old.nc")
    with pytest.warns(bs.PlausibilityWarning, match=r"cannot be checked.*Save the loaded fit"):
        loaded = bs.load_fit(old)
    # saving it again records the law's values: the file then loads without a warning
    resaved = loaded.save(tmp_path / "resaved.nc")
    assert "points" in json.loads(bs.load_fit(resaved).tree.attrs["law_fingerprint"])
    # bayescale's own laws, as shipped, need no check
    builtin = bs.fit(runs, "power_law", method="huber").save(tmp_path / "builtin.nc")
    bs.load_fit(_without_fingerprint(builtin, tmp_path / "builtin_old.nc"))  # no warning


# ---------------------------------------------------------------- incomplete or corrupted


def _rewrite(path: Path, out: Path, edit) -> Path:
    with xr.open_datatree(path, engine="h5netcdf") as handle:
        tree = handle.load()
    edited = edit(tree)
    tree = edited if isinstance(edited, xr.DataTree) else tree
    tree.to_netcdf(out, engine="h5netcdf")
    return out


@pytest.fixture(scope="module")
def huber_file(tmp_path_factory):
    fit = bs.fit(bs.simulate("power_law", seed=2), "power_law", method="huber")
    return fit.save(tmp_path_factory.mktemp("huber") / "fit.nc")


def _drop_posterior(tree):
    return xr.DataTree.from_dict(
        {f"/{k}": v.to_dataset() for k, v in tree.children.items() if k != "posterior"}
        | {"/": xr.Dataset(attrs=tree.attrs)}
    )


def _settings_edit(change):
    """An edit of the settings attribute's JSON (``change`` mutates the decoded dict)."""

    def edit(tree):
        raw = json.loads(tree.attrs["bayescale_settings"])
        change(raw)
        tree.attrs["bayescale_settings"] = json.dumps(raw)

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_drop_posterior, r"incomplete bayescale fit: it lacks the group\(s\) 'posterior'"),
        (
            lambda t: t.attrs.__setitem__("bayescale_settings", '{"law": "po'),
            r"attribute 'bayescale_settings' is corrupted .*Save the fit again",
        ),
        (
            _settings_edit(lambda s: s.__setitem__("priors", [1, 2])),
            r"setting 'priors' is corrupted .*Save the fit again",
        ),
        (
            lambda t: t.attrs.__setitem__("law_fingerprint", "[1, 2"),
            r"attribute 'law_fingerprint' is corrupted",
        ),
        (_settings_edit(lambda s: s.pop("centre")), r"lacks the setting\(s\) 'centre'"),
        (_settings_edit(lambda s: s.pop("law")), r"lacks the setting\(s\) 'law'"),
        (_settings_edit(lambda s: s.__setitem__("nu", "four")), r"setting 'nu' is corrupted"),
        (
            _settings_edit(lambda s: s.__setitem__("version", 99)),
            r"schema version 99; this bayescale reads versions up to 1. Upgrade",
        ),
        (
            _settings_edit(lambda s: s.__setitem__("colour", "red")),
            r"unknown setting\(s\) \['colour'\]",
        ),
    ],
    ids=[
        "no posterior",
        "bad JSON",
        "bad priors",
        "bad fingerprint",
        "no centre",
        "no law",
        "bad nu",
        "newer schema",
        "unknown setting",
    ],  # fmt: skip
)
def test_an_incomplete_or_corrupted_file_is_a_bayescale_error_naming_it(
    huber_file, tmp_path, edit, message
):
    # issue 28: a raw JSONDecodeError, a KeyError or "(no 'law' attribute)" for a posterior
    bad = _rewrite(huber_file, tmp_path / "bad.nc", edit)
    with pytest.raises(bs.BayescaleError, match=message) as info:
        bs.load_fit(bad)
    assert str(bad) in str(info.value)


LEGACY = Path(__file__).parent / "data" / "legacy"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.attrs.__setitem__("priors", '{"alpha": {"fam'),
            r"attribute 'priors' is corrupted .*Save the fit again",
        ),
        (lambda t: t.attrs.pop("centre"), r"lacks the attribute\(s\) 'centre'"),
        (lambda t: t.attrs.pop("law"), r"lacks the attribute\(s\) 'law'"),
        (lambda t: t.attrs.__setitem__("nu", "four"), r"attribute 'nu' is corrupted"),
    ],
    ids=["bad JSON", "no centre", "no law", "bad nu"],
)
def test_a_corrupted_file_of_the_earlier_layout_is_a_bayescale_error_naming_it(
    tmp_path, edit, message
):
    """The same errors for a file with one attribute per setting (written by main f804d87)."""
    bad = _rewrite(LEGACY / "map_misfit.nc", tmp_path / "bad.nc", edit)
    with pytest.raises(bs.BayescaleError, match=message) as info:
        bs.load_fit(bad)
    assert str(bad) in str(info.value)


def test_load_of_a_netcdf_that_is_no_fit_or_no_path(tmp_path):
    other = tmp_path / "other.nc"
    xr.Dataset({"x": ("i", [1.0, 2.0])}).to_netcdf(other, engine="h5netcdf")
    with pytest.raises(bs.BayescaleError, match=r"not a bayescale fit"):
        bs.load_fit(other)
    with pytest.raises(bs.BayescaleError, match=r"a folder, not a file"):
        bs.load_fit(tmp_path)
    for nothing in ("", None):
        with pytest.raises(bs.BayescaleError, match=r"needs the path of a saved fit"):
            bs.load_fit(nothing)


# ------------------------------------------------------------------------------- saving


@pytest.fixture(scope="module")
def huber_fit():
    return bs.fit(bs.simulate("power_law", seed=2), "power_law", method="huber")


def test_save_to_a_folder_below_a_file_or_nothing_says_what_is_wrong(huber_fit, tmp_path):
    # issue 28: these named the temporary file or gave the wrong advice
    (tmp_path / "folder").mkdir()
    with pytest.raises(
        bs.OptionError,
        match=r"'.*folder' is a folder; it needs a file name, such as '.*folder/fit.nc'",
    ):
        huber_fit.save(tmp_path / "folder")
    (tmp_path / "file").write_text("x")
    with pytest.raises(bs.OptionError, match=r"'.*file' is a file, not a folder") as info:
        huber_fit.save(tmp_path / "file" / "sub" / "fit.nc")
    assert ".bayescale-tmp" not in str(info.value)
    with pytest.raises(bs.OptionError, match=r"path is empty; received ''\. Pass a file path"):
        huber_fit.save("")
    with pytest.raises(bs.OptionTypeError, match=r"must be a file path .*received None"):
        huber_fit.save(None)
    long = "f" * 300 + ".nc"
    with pytest.raises(bs.OptionError, match=r"is 303 bytes long; this file system allows at most"):
        huber_fit.save(tmp_path / long)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]


def test_save_in_a_folder_without_permission_names_the_file_and_the_fix(
    huber_fit, tmp_path, monkeypatch
):
    # root may write anywhere: the refusal of the folder is simulated at the system call
    real_open = os.open

    def refuse(path, flags, *args):
        if flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(files.os, "open", refuse)
    with pytest.raises(OSError, match=r"cannot write Fit.save's path '.*fit\.nc'.*fix its permi"):
        huber_fit.save(tmp_path / "fit.nc")
    with pytest.raises(OSError, match=r"could not write '.*out\.bin'.*fix its permissions") as info:
        atomic_write(tmp_path / "out.bin", b"x")
    assert info.value.errno == errno.EACCES and ".bayescale-tmp" not in str(info.value)


def test_save_through_a_symlink_writes_its_target(huber_fit, tmp_path):
    target = tmp_path / "store" / "fit.nc"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "latest.nc"
    link.symlink_to(target)
    huber_fit.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)  # the link stays
    assert bs.load_fit(target).tree.identical(huber_fit.tree)


def test_a_killed_save_leaves_a_temporary_that_the_next_save_removes(huber_fit, tmp_path):
    # a writer killed by SIGKILL or SIGTERM runs no clean-up: its temporary stays behind
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **_OUT)
    dead = int(child.stdout)  # a process of this host that no longer runs
    stale = tmp_path / f"{files.TEMP_PREFIX}{files._HOST}-{dead}-0123abcd-fit.nc.nc"
    stale.write_bytes(b"x" * 1000)
    live = tmp_path / f"{files.TEMP_PREFIX}{files._HOST}-{os.getpid()}-0123abcd-other.nc"
    live.write_bytes(b"y")  # a save in progress in a running process: kept
    unrelated = tmp_path / ".fit.nc.abc123.nc.tmp"
    unrelated.write_bytes(b"z")  # not ours by name: kept
    huber_fit.save(tmp_path / "fit.nc")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, unrelated.name, "fit.nc"]
    )


_OUT = dict(capture_output=True, text=True, check=True)


def test_a_missing_label_and_a_slash_in_a_column_name_survive_a_save(tmp_path):
    # issue 28: NaN in a string column came back as 'nan'; a '/' failed after the whole fit
    runs = bs.simulate("power_law", seed=2)
    runs["tokens/param"] = 20.0
    runs["name"] = [f"run{i}" for i in range(len(runs))]
    runs.loc[3, "name"] = np.nan
    fit = bs.fit(runs, "power_law", method="huber")
    loaded = bs.load_fit(fit.save(tmp_path / "fit.nc"))
    assert loaded.tree.identical(fit.tree)
    table = loaded.data.table
    assert "tokens/param" in table.columns and (table["tokens/param"] == 20.0).all()
    assert table["name"].isna().tolist() == [i == 3 for i in range(len(runs))]
    assert table.loc[4, "name"] == "run4"

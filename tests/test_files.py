"""Atomic writes: the umask's permissions, and a failed write that leaves the old file alone."""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

import matplotlib.pyplot as plt
import pooch
import pytest

import bayescale as bs
from bayescale import files
from bayescale.demo import save_figure
from bayescale.files import atomic_write, file_mode
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


def test_new_and_overwritten_files_get_the_umask_mode(tmp_path, umask_027):
    path = tmp_path / "out.bin"
    atomic_write(path, b"first")
    assert _mode(path) == umask_027  # mkstemp alone gives 0o600
    path.chmod(0o644)
    atomic_write(path, b"second")
    assert path.read_bytes() == b"second"
    assert _mode(path) == umask_027
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

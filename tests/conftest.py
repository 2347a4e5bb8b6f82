"""Shared fixtures. Four host devices so that four chains run in parallel, as the CLI does."""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import bayescale as bs  # noqa: E402

SHARED_DATA = Path(
    os.environ.get("BAYESCALE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)
#: set (to anything but 0) to make missing reference data an error instead of a skip (CI sets it)
REQUIRE_DATA = os.environ.get("BAYESCALE_REQUIRE_DATA", "0") not in ("", "0")


def missing_data(reason: str) -> None:
    """Skip the test for want of reference data, or fail it under BAYESCALE_REQUIRE_DATA=1."""
    if REQUIRE_DATA:
        pytest.fail(f"{reason} (BAYESCALE_REQUIRE_DATA is set, so missing data is an error)")
    pytest.skip(f"{reason}; set BAYESCALE_DATA to the reference data folder to run it")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The reference data folder (../shared/data or $BAYESCALE_DATA), for tests that need several
    of its datasets (the notebooks; some datasets have no download URL)."""
    if not (SHARED_DATA / "chinchilla_epoch").is_dir():
        missing_data(f"reference data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def reference_dataset():
    """``reference_dataset(name)``: a registered dataset through the loader.

    The loader looks in the reference folder, ``$BAYESCALE_DATA`` and the cache, then downloads
    (checksum verified) the datasets that have a URL; when the data cannot be had the test is
    skipped with the loader's reason (an error under ``BAYESCALE_REQUIRE_DATA=1``).
    """
    from bayescale.errors import DataError
    from bayescale.io.datasets import load_dataset

    def load(name: str) -> pd.DataFrame:
        try:
            return load_dataset(name, data_dir=SHARED_DATA if SHARED_DATA.is_dir() else None)
        except DataError as exc:
            missing_data(f"reference dataset {name!r} unavailable: {exc}")
            raise  # unreachable: missing_data skips or fails

    return load


@pytest.fixture(scope="session")
def epoch_240(reference_dataset) -> pd.DataFrame:
    """Epoch's 240 Chinchilla rows (the 5 highest losses dropped)."""
    return reference_dataset("chinchilla_epoch_240")


@pytest.fixture(scope="session")
def epoch_fit(epoch_240: pd.DataFrame) -> bs.Fit:
    """The default NUTS posterior of the Chinchilla law on the 240 Epoch rows."""
    return bs.fit(epoch_240, "chinchilla", seed=0)


@pytest.fixture(scope="session")
def sim_fit() -> bs.Fit:
    """A small, fast NUTS fit of the Chinchilla law to a simulated ladder (plumbing tests)."""
    runs = bs.simulate("chinchilla", seed=1)
    return bs.fit(runs, "chinchilla", num_warmup=500, num_samples=500, seed=1)

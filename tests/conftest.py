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


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The reference data folder (../shared/data or $BAYESCALE_DATA)."""
    if not (SHARED_DATA / "chinchilla_epoch").is_dir():
        pytest.fail(f"reference data not found at {SHARED_DATA}; set BAYESCALE_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def epoch_240(shared_data: Path) -> pd.DataFrame:
    """Epoch's 240 Chinchilla rows (the 5 highest losses dropped)."""
    from bayescale.datasets import load_dataset

    return load_dataset("chinchilla_epoch_240", data_dir=shared_data)


@pytest.fixture(scope="session")
def epoch_fit(epoch_240: pd.DataFrame) -> bs.Fit:
    """The default NUTS posterior of the Chinchilla law on the 240 Epoch rows."""
    return bs.fit(epoch_240, "chinchilla", seed=0)


@pytest.fixture(scope="session")
def sim_fit() -> bs.Fit:
    """A small, fast NUTS fit of the Chinchilla law to a simulated ladder (plumbing tests)."""
    runs = bs.simulate("chinchilla", seed=1)
    return bs.fit(runs, "chinchilla", num_warmup=500, num_samples=500, seed=1)

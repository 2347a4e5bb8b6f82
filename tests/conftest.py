"""Shared fixtures. Four host devices so that four chains run in parallel, as the CLI does."""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("MPLBACKEND", "Agg")
# One persistent XLA compilation cache for the whole run: both xdist workers, the default and
# the slow stages, and the subprocesses (CLI runs, notebook kernels) compile the same programs,
# and compiling is most of a short test's time on two cores. A cached executable is the one the
# compiler would build, so the draws do not change. Set before JAX is imported (it reads these).
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "jax"
    ),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import bayescale as bs  # noqa: E402

SHARED_DATA = Path(
    os.environ.get("BAYESCALE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)
#: set (to anything but 0) to make missing reference data an error instead of a skip (CI sets it)
REQUIRE_DATA = os.environ.get("BAYESCALE_REQUIRE_DATA", "0") not in ("", "0")
#: the fixtures that read reference data; a test that uses one (directly or through another
#: fixture) is skipped before any of its fixtures is set up when the data are missing
DATA_FIXTURES = frozenset(
    {"shared_data", "reference_dataset", "epoch_240", "epoch_fit", "epoch_default_fit"}
)
#: the file every data fixture needs at the least (the Epoch Chinchilla runs)
CHINCHILLA = Path("chinchilla_epoch") / "svg_extracted_data.csv"
HOW_TO_GET = (
    "set BAYESCALE_DATA to the reference data folder (see CONTRIBUTING.md) "
    "or put it at ../shared/data"
)


def missing_data(reason: str) -> None:
    """Skip the test for want of reference data, or fail it under BAYESCALE_REQUIRE_DATA=1.

    The reason is one line: what is missing and how to get it.
    """
    if REQUIRE_DATA:
        pytest.fail(f"{reason} (BAYESCALE_REQUIRE_DATA is set, so missing data is an error)")
    pytest.skip(f"{reason}; {HOW_TO_GET}")


def _data_dirs() -> list[Path]:
    """The folders the tests read reference data from: the reference folder, then the cache.

    The tests never download: a machine without network would wait on a timeout per dataset.
    """
    from bayescale.io.datasets import cache_dir

    return [SHARED_DATA, cache_dir()]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip (or fail) a test that needs reference data before any of its fixtures is built.

    ``item.fixturenames`` is the closure of every fixture the test uses, so a test whose
    expensive fixture (a NUTS fit) needs the data is skipped without fitting anything.
    """
    if DATA_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())):
        return
    if not any((folder / CHINCHILLA).is_file() for folder in _data_dirs()):
        missing_data(f"reference data not found ({SHARED_DATA / CHINCHILLA} is missing)")


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

    The loader looks in the reference folder, ``$BAYESCALE_DATA`` and the download cache; the
    tests never download. When the dataset is in none of them the test is skipped with a one-line
    reason (an error under ``BAYESCALE_REQUIRE_DATA=1``).
    """
    from bayescale.errors import DataError
    from bayescale.io.datasets import DATASETS, load_dataset

    def load(name: str) -> pd.DataFrame:
        try:
            return load_dataset(
                name, data_dir=SHARED_DATA if SHARED_DATA.is_dir() else None, download=False
            )
        except DataError:
            missing_data(f"reference dataset {name!r} ({DATASETS[name].relpath}) not found")
            raise  # unreachable: missing_data skips or fails

    return load


@pytest.fixture(scope="session")
def epoch_240(reference_dataset) -> pd.DataFrame:
    """Epoch's 240 Chinchilla rows (the 5 highest losses dropped)."""
    return reference_dataset("chinchilla_epoch_240")


@pytest.fixture(scope="session")
def epoch_fit(epoch_240: pd.DataFrame) -> bs.Fit:
    """The exact Chinchilla law's NUTS posterior on the 240 Epoch rows (the literature's model)."""
    return bs.fit(epoch_240, "chinchilla", seed=0, misfit=False)


@pytest.fixture(scope="session")
def epoch_default_fit(epoch_240: pd.DataFrame) -> bs.Fit:
    """The default fit (the law with its misfit) of the 240 Epoch rows."""
    return bs.fit(epoch_240, "chinchilla", seed=0)


@pytest.fixture(scope="session")
def sim_fit() -> bs.Fit:
    """A small, fast NUTS fit of the Chinchilla law to a simulated ladder (plumbing tests)."""
    runs = bs.simulate("chinchilla", seed=1)
    return bs.fit(runs, "chinchilla", num_warmup=500, num_samples=500, seed=1, misfit=False)


@pytest.fixture(scope="session")
def model_at_start():
    """Factory: ``(model, args, start)`` of a law's numpyro model on runs, at the prior start.

    For tests of the sampler's coordinates: the model with its default priors and the
    Student-t likelihood, its positional arguments, and one start from the priors.
    """
    import numpy as np

    from bayescale.inference.sampling import start_from_prior
    from bayescale.io.data import from_frame
    from bayescale.model.build import build_model, model_inputs
    from bayescale.model.priors import default_priors

    def make(runs: pd.DataFrame, law: bs.Law) -> tuple:
        data = from_frame(runs)
        priors = default_priors(law, data)
        families = tuple((k, p.family) for k, p in priors.items())
        model = build_model(law, families, bs.get_likelihood("student_t"))
        inputs = model_inputs(law, data, priors)
        start = {k: np.asarray(v)[0] for k, v in start_from_prior(law, priors, 1).items()}
        return model, inputs.args(), start

    return make

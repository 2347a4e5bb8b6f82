"""Registry and loader for public neural-scaling-law datasets.

Every dataset is a small CSV file published with a paper.  The files are **not** shipped with
``bayescale`` (most carry no redistribution licence); :func:`load_dataset` finds them on disk, or
downloads the ones that have a stable public URL, verifies their SHA-256 checksum and returns a
tidy :class:`pandas.DataFrame` with canonical column names.

Canonical columns
-----------------
``n_params``
    Model size N (parameters).
``n_tokens``
    Training tokens D.
``compute``
    Training compute C (FLOP).
``unique_tokens``
    Unique training tokens U_D (data-constrained datasets only).
``data_size``
    The single scaling variable of one-variable learning curves (training-set size, seen
    examples).  Single-variable laws are fitted against whichever column the user names.
``loss``
    The measured loss / metric (lower is better).
``split``
    ``"fit"`` or ``"extrapolate"`` where the source defines a held-out extrapolation set.
``group``
    Curve identifier when a file holds several independent curves.

All numeric columns are ``float64``.  Extra source columns that are useful (e.g. run ``name``,
``domain``) are kept under their own names, after the canonical ones.

Where files are looked for
--------------------------
The local layout mirrors the upstream reference-data folder: ``<dir>/<folder>/<file>``, e.g.
``<dir>/chinchilla_epoch/svg_extracted_data.csv``.  ``<dir>`` is tried, in order:

1. the ``data_dir`` argument of :func:`load_dataset`;
2. the environment variable ``BAYESCALE_DATA``; when it is unset, ``../shared/data`` relative to
   the current working directory, then ``../shared/data`` relative to the repository root when
   ``bayescale`` is imported from a checkout (the layout of a clone beside its reference data, so
   that tests and notebooks work offline without configuration);
3. the cache folder (:func:`cache_dir`): ``$BAYESCALE_CACHE``, else
   ``$XDG_CACHE_HOME/bayescale``, else ``~/.cache/bayescale``.

If the file is found nowhere and ``download=True`` and the dataset has a download URL, the file is
downloaded into the cache folder with `pooch` (atomically, checksum verified before it is moved
into place).
The checksum of the file actually read is verified on every load.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from bayescale.errors import DataError
from bayescale.files import file_mode

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "cache_dir",
    "list_datasets",
    "load_dataset",
]

#: Environment variable naming a folder laid out as ``<folder>/<file>``.
ENV_DATA = "BAYESCALE_DATA"
#: Environment variable overriding the cache folder.
ENV_CACHE = "BAYESCALE_CACHE"

_DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 16

_CANONICAL_ORDER = (
    "n_params",
    "n_tokens",
    "compute",
    "unique_tokens",
    "data_size",
    "loss",
    "split",
    "group",
)


# --------------------------------------------------------------------------------------------
# Parsers: raw CSV frame -> canonical frame
# --------------------------------------------------------------------------------------------


def _require(raw: pd.DataFrame, columns: tuple[str, ...], path: Path) -> None:
    """Raise a DataError if ``raw`` lacks any of ``columns``."""
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise DataError(
            f"{path}: expected columns {list(columns)}, missing {missing} "
            f"(found {list(raw.columns)})."
        )


def _f64(values: Any) -> np.ndarray:
    """Return ``values`` as a fresh float64 numpy array."""
    return np.asarray(values, dtype=np.float64).copy()


def _parse_chinchilla(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path)
    _require(raw, ("Model Size", "Training FLOP", "loss"), path)
    n = _f64(raw["Model Size"])
    c = _f64(raw["Training FLOP"])
    return pd.DataFrame(
        {"n_params": n, "n_tokens": c / (6.0 * n), "compute": c, "loss": _f64(raw["loss"])}
    )


def _parse_chinchilla_240(path: Path) -> pd.DataFrame:
    df = _parse_chinchilla(path)
    # Epoch AI (Besiroglu et al. 2024) fit on the 240 runs left after dropping the 5 runs with
    # the highest loss.  No ties at the cut (5th: 3.4470, 6th: 3.4059).
    drop = df["loss"].nlargest(5).index
    return df.drop(index=drop).reset_index(drop=True)


def _datablations_frame(
    raw: pd.DataFrame, cols: tuple[str, str, str, str], scale: float
) -> pd.DataFrame:
    n = _f64(raw[cols[0]]) * scale
    d = _f64(raw[cols[1]]) * scale
    u = _f64(raw[cols[2]]) * scale
    return pd.DataFrame(
        {
            "n_params": n,
            "n_tokens": d,
            "compute": 6.0 * n * d,
            "unique_tokens": u,
            "loss": _f64(raw[cols[3]]),
            "name": raw["name"].astype(str).to_numpy(),
        }
    )


def _parse_datablations_all(path: Path) -> pd.DataFrame:
    cols = ("params", "tokens", "unique_tokens", "val_loss")
    raw = pd.read_csv(path, dtype={"name": str})
    _require(raw, ("name",) + cols, path)
    return _datablations_frame(raw, cols, 1.0)


def _parse_datablations_fit182(path: Path) -> pd.DataFrame:
    cols = ("params_B", "tokens_B", "unique_tokens_B", "val_loss")
    raw = pd.read_csv(path, dtype={"name": str})
    _require(raw, ("name",) + cols, path)
    return _datablations_frame(raw, cols, 1e9)


def _parse_bnsl_4digit(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, dtype={"split": str})
    _require(raw, ("train_dataset_size", "test_cross_entropy", "split"), path)
    return pd.DataFrame(
        {
            "data_size": _f64(raw["train_dataset_size"]),
            "loss": _f64(raw["test_cross_entropy"]),
            "split": raw["split"].astype(str).to_numpy(),
        }
    )


def _parse_chinchilla_isoflop(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, dtype={"reason": str})
    _require(raw, ("tokens", "params", "budget", "loss", "outlier"), path)
    n, d = _f64(raw["params"]), _f64(raw["tokens"])
    flagged = raw["outlier"].astype(str).str.lower().isin(("true", "1")).to_numpy()
    return pd.DataFrame(
        {
            "n_params": n,
            "n_tokens": d,
            "compute": 6.0 * n * d,  # equals the IsoFLOP level to 1e-15 in this file
            "loss": _f64(raw["loss"]),
            "budget": _f64(raw["budget"]),
            "outlier": flagged,
            "reason": raw["reason"].fillna("").astype(str).to_numpy(),
        }
    )


def _parse_chinchilla_isoflop_clean(path: Path) -> pd.DataFrame:
    df = _parse_chinchilla_isoflop(path)
    return df[~df["outlier"]].drop(columns=["outlier", "reason"]).reset_index(drop=True)


def _parse_revisiting_lang(path: Path) -> pd.DataFrame:
    text_cols = {"Domain": str, "Task": str, "Model": str}
    raw = pd.read_csv(path, dtype=text_cols)
    _require(raw, ("Domain", "Task", "Model", "Seen Examples", "Loss", "Training"), path)
    # The upstream file repeats every language-modelling (LM) curve four times: 687 rows are
    # exact duplicates of another row.  They carry no information and would overweight the LM
    # curves, so they are dropped (1399 -> 712 rows); no (curve, x) pair has conflicting losses.
    raw = raw.drop_duplicates(ignore_index=True)
    domain = raw["Domain"].astype(str)
    task = raw["Task"].astype(str)
    model = raw["Model"].astype(str)
    training = _f64(raw["Training"])
    return pd.DataFrame(
        {
            "data_size": _f64(raw["Seen Examples"]),
            "loss": _f64(raw["Loss"]),
            "split": np.where(training == 1.0, "fit", "extrapolate"),
            "group": (domain + "/" + task + "/" + model).to_numpy(),
            "domain": domain.to_numpy(),
            "task": task.to_numpy(),
            "model": model.to_numpy(),
        }
    )


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """Description of one registered dataset.

    Attributes
    ----------
    name : str
        Registry name passed to :func:`load_dataset`.
    folder : str
        Sub-folder of a data directory that holds the file.
    filename : str
        File name inside ``folder``.
    sha256 : str
        Expected SHA-256 (hex) of the file's bytes.
    rows : int
        Number of rows :func:`load_dataset` returns.
    description : str
        One-line description, including the canonical columns returned.
    citation : str
        Paper(s) to cite when reporting results on the data.
    url : str or None
        Direct download URL of the exact bytes, or ``None`` when the file is a tabulation with
        no byte-identical upstream copy (then it must be provided locally).
    source : str
        Where the data come from upstream (repository, path, commit) -- informational.
    license : str
        Licence / redistribution note.
    """

    name: str
    folder: str
    filename: str
    sha256: str
    rows: int
    description: str
    citation: str
    url: str | None
    source: str
    license: str
    parser: Callable[[Path], pd.DataFrame]

    @property
    def relpath(self) -> str:
        """str: Path of the file relative to a data directory (``folder/filename``)."""
        return f"{self.folder}/{self.filename}"


_CHINCHILLA_SHA = "193478df4e90f040016431996c45682659306840ecdadf83cfb9cd5ca0aa1b30"
_CHINCHILLA_URL = (
    "https://raw.githubusercontent.com/epoch-research/analyzing-chinchilla/"
    "92258837425e1b5f2851d624287f0120583a3d0e/data/svg_extracted_data.csv"
)
_CHINCHILLA_CITE = (
    "Hoffmann et al. 2022, 'Training Compute-Optimal Large Language Models' (arXiv:2203.15556); "
    "Besiroglu et al. 2024, 'Chinchilla Scaling: A replication attempt' (arXiv:2404.10102)"
)
_CHINCHILLA_SOURCE = (
    "github.com/epoch-research/analyzing-chinchilla, data/svg_extracted_data.csv "
    "@ 92258837425e1b5f2851d624287f0120583a3d0e (Epoch AI's SVG extraction of Fig. 4)"
)
_CHINCHILLA_LICENSE = (
    "Upstream repository has no licence file; not redistributed. Cite Epoch AI and Hoffmann et al."
)

# The datablations repository (https://github.com/huggingface/datablations) holds no CSV with
# these names: the two tables are tabulations of the paper's final validation losses.  The exact
# upstream file path is unverified, so no download URL is given; provide the files locally.
_ISOFLOP_SOURCE = (
    "github.com/Open-Athena/scaling-law-analysis @ 3e0656e, "
    "data/isoflops/transform/isoflops.csv (rows of source epochai_chinchilla)"
)
_ISOFLOP_LICENSE = "Derived from Epoch AI's extraction; not redistributed. Cite Hoffmann et al."

_DATABLATIONS_CITE = (
    "Muennighoff et al. 2023, 'Scaling Data-Constrained Language Models' "
    "(NeurIPS 2023, arXiv:2305.16264)"
)
_DATABLATIONS_SOURCE = (
    "https://github.com/huggingface/datablations (tabulated final validation losses; "
    "exact upstream file path unverified)"
)
_DATABLATIONS_LICENSE = (
    "Repository is Apache-2.0; this tabulation is not redistributed. Cite Muennighoff et al."
)

# Revisiting neural scaling laws: the upstream file (google-research/google-research,
# revisiting_neural_scaling_laws/data/benchmark.lang.csv) has the same size (82,032 bytes) and
# content as the reference copy; the pinned commit below is the one indexed at the time of writing.
_REVISITING_URL = (
    "https://raw.githubusercontent.com/google-research/google-research/"
    "9853680c781781bd8d3de20aa61c7373ce059913/"
    "revisiting_neural_scaling_laws/data/benchmark.lang.csv"
)

_REGISTRY: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="chinchilla_epoch",
            folder="chinchilla_epoch",
            filename="svg_extracted_data.csv",
            sha256=_CHINCHILLA_SHA,
            rows=245,
            description=(
                "Chinchilla training runs (Epoch AI reconstruction of Hoffmann et al. Fig. 4): "
                "n_params, n_tokens = C/(6N), compute, final training loss; all 245 runs."
            ),
            citation=_CHINCHILLA_CITE,
            url=_CHINCHILLA_URL,
            source=_CHINCHILLA_SOURCE,
            license=_CHINCHILLA_LICENSE,
            parser=_parse_chinchilla,
        ),
        DatasetInfo(
            name="chinchilla_epoch_240",
            folder="chinchilla_epoch",
            filename="svg_extracted_data.csv",
            sha256=_CHINCHILLA_SHA,
            rows=240,
            description=(
                "Same file as 'chinchilla_epoch' minus the 5 highest-loss runs, i.e. the 240 "
                "points Epoch AI (Besiroglu et al. 2024) fit on."
            ),
            citation=_CHINCHILLA_CITE,
            url=_CHINCHILLA_URL,
            source=_CHINCHILLA_SOURCE,
            license=_CHINCHILLA_LICENSE,
            parser=_parse_chinchilla_240,
        ),
        DatasetInfo(
            name="chinchilla_isoflop",
            folder="chinchilla_isoflop",
            filename="isoflops.csv",
            sha256="07022b2f279ee147ce890bfa35f5f627e421ee3d226413f7bb66480d16d8eb2a",
            rows=123,
            description=(
                "Chinchilla IsoFLOP profiles (Hoffmann et al. Fig. 3, Epoch AI extraction, "
                "curated by Open-Athena): n_params, n_tokens, compute = 6ND, loss, budget (the "
                "IsoFLOP level, 9 levels 6e18 to 3e21), outlier/reason (the curators' flags)."
            ),
            citation=_CHINCHILLA_CITE,
            url=None,
            source=_ISOFLOP_SOURCE,
            license=_ISOFLOP_LICENSE,
            parser=_parse_chinchilla_isoflop,
        ),
        DatasetInfo(
            name="chinchilla_isoflop_clean",
            folder="chinchilla_isoflop",
            filename="isoflops.csv",
            sha256="07022b2f279ee147ce890bfa35f5f627e421ee3d226413f7bb66480d16d8eb2a",
            rows=85,
            description=(
                "The 85 unflagged rows of 'chinchilla_isoflop' (off-centre and near-duplicate "
                "points dropped, as the curators advise for fits)."
            ),
            citation=_CHINCHILLA_CITE,
            url=None,
            source=_ISOFLOP_SOURCE,
            license=_ISOFLOP_LICENSE,
            parser=_parse_chinchilla_isoflop_clean,
        ),
        DatasetInfo(
            name="datablations",
            folder="datablations",
            filename="val_losses_all.csv",
            sha256="ef14e83f2203dae8ace381169af746e934a03600e881aa7710582025999ea570",
            rows=296,
            description=(
                "Data-constrained LM runs with repeated data: n_params, n_tokens, unique_tokens, "
                "compute = 6ND, final validation loss, run name; all 296 runs incl. seed repeats."
            ),
            citation=_DATABLATIONS_CITE,
            url=None,
            source=_DATABLATIONS_SOURCE,
            license=_DATABLATIONS_LICENSE,
            parser=_parse_datablations_all,
        ),
        DatasetInfo(
            name="datablations_fit182",
            folder="datablations",
            filename="val_losses_fit182.csv",
            sha256="9e4822c1d49260f8bad311a361ec0d183ca1028ede6f21d36c933a59ab746279",
            rows=182,
            description=(
                "The 182 datablations runs used for the paper's data-constrained law fit "
                "(source in billions, returned in raw units); same columns as 'datablations'."
            ),
            citation=_DATABLATIONS_CITE,
            url=None,
            source=_DATABLATIONS_SOURCE,
            license=_DATABLATIONS_LICENSE,
            parser=_parse_datablations_fit182,
        ),
        DatasetInfo(
            name="bnsl_4digit",
            folder="bnsl_4digit",
            filename="four_digit_addition.csv",
            sha256="04ec5a62a2e041da94a1cb671ea483051aaf5a435b666a57fce07469618bd431",
            rows=17,
            description=(
                "4-digit addition: test cross-entropy (loss) vs training-set size (data_size); "
                "split = fit (first 14) / extrapolate (last 3)."
            ),
            citation=(
                "Caballero et al. 2022, 'Broken Neural Scaling Laws' (ICLR 2023, arXiv:2210.14891)"
            ),
            # Upstream has no CSV: the 17 points are inline arrays in the reproduction script.
            url=None,
            source=(
                "github.com/ethancaballero/broken_neural_scaling_laws, "
                "fit_bnsl_and_extrapolate__4_digit_addition__dataset_size_x-axis.py "
                "(x, y arrays; split_point = 14)"
            ),
            license="Upstream repository licence applies; not redistributed. Cite Caballero et al.",
            parser=_parse_bnsl_4digit,
        ),
        DatasetInfo(
            name="revisiting_lang",
            folder="revisiting_lang",
            filename="benchmark.lang.csv",
            sha256="63c346db00a66b692e1ea9a0f71a2f2b267e55f74be5b863a92e199dffbf0983",
            rows=712,
            description=(
                "Language part of the 'Revisiting Neural Scaling Laws' benchmark: 20 learning "
                "curves (group = Domain/Task/Model), data_size = seen examples, loss, "
                "split = fit/extrapolate; 687 exact-duplicate rows of the 1399 dropped."
            ),
            citation=(
                "Alabdulmohsin, Neyshabur & Zhai 2022, 'Revisiting Neural Scaling Laws in "
                "Language and Vision' (NeurIPS 2022, arXiv:2209.06640)"
            ),
            url=_REVISITING_URL,
            source=(
                "github.com/google-research/google-research, "
                "revisiting_neural_scaling_laws/data/benchmark.lang.csv"
            ),
            license="google-research repository is Apache-2.0. Cite Alabdulmohsin et al.",
            parser=_parse_revisiting_lang,
        ),
    )
}

#: Read-only mapping ``name -> DatasetInfo`` of all registered datasets.
DATASETS: Mapping[str, DatasetInfo] = MappingProxyType(_REGISTRY)


# --------------------------------------------------------------------------------------------
# Locations, checksums, download
# --------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Return the folder downloads are cached in (it is not created).

    Returns
    -------
    pathlib.Path
        ``$BAYESCALE_CACHE`` if set, else ``$XDG_CACHE_HOME/bayescale`` if ``XDG_CACHE_HOME`` is
        set, else ``~/.cache/bayescale``.
    """
    override = os.environ.get(ENV_CACHE)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "bayescale"
    return Path.home() / ".cache" / "bayescale"


def _checkout_root() -> Path | None:
    """Return the repository root when ``bayescale`` is imported from a checkout, else None."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / ".git").exists():
        return root
    return None


def _search_dirs(data_dir: str | os.PathLike[str] | None) -> list[tuple[str, Path]]:
    """Return ``(label, directory)`` pairs in lookup order."""
    dirs: list[tuple[str, Path]] = []
    if data_dir is not None:
        dirs.append(("data_dir argument", Path(data_dir).expanduser()))
    env = os.environ.get(ENV_DATA)
    if env:
        dirs.append((f"${ENV_DATA}", Path(env).expanduser()))
    else:
        dirs.append(("../shared/data from the working directory", _shared_beside(Path.cwd())))
        root = _checkout_root()
        if root is not None:
            dirs.append(("../shared/data from the repository", _shared_beside(root)))
    dirs.append(("cache", cache_dir()))
    unique: dict[Path, str] = {}
    for label, folder in dirs:
        unique.setdefault(folder, label)
    return [(label, folder) for folder, label in unique.items()]


def _shared_beside(folder: Path) -> Path:
    """``<folder>/../shared/data``, the reference-data layout of a checkout, resolved."""
    return (folder.parent / "shared" / "data").resolve()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(info: DatasetInfo, path: Path) -> None:
    """Raise a DataError if ``path``'s SHA-256 differs from the registry's."""
    got = _sha256(path)
    if got != info.sha256:
        raise DataError(
            f"Checksum mismatch for dataset {info.name!r} file {path}: "
            f"expected sha256 {info.sha256}, got {got}. The file is corrupted or is a different "
            f"version; replace it with the original ({info.url or info.source})."
        )


def _download(info: DatasetInfo, url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` with pooch: atomic, checksum verified before the file appears.

    pooch (the download-and-cache library of scipy.datasets, scikit-image and xarray's
    tutorial data) writes to a temporary file beside ``dest``, checks its SHA-256 and only then
    moves it into place; a mismatch deletes it. Its INFO log lines are silenced for the call
    (the library never prints).

    Raises
    ------
    OSError, ValueError
        On network/file-system failure or checksum mismatch (the caller converts them).
    """
    try:
        import pooch
    except ImportError:  # pragma: no cover - pooch is a dependency
        raise DataError(
            "downloading needs the 'pooch' package, which is not installed: pip install pooch"
        ) from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")
    try:
        pooch.retrieve(
            url,
            known_hash=f"sha256:{info.sha256}",
            fname=dest.name,
            path=dest.parent,
            downloader=pooch.HTTPDownloader(timeout=_DOWNLOAD_TIMEOUT_S, progressbar=False),
        )
        os.chmod(dest, file_mode())  # pooch's temporary file is 0600; give what the umask gives
    finally:
        logger.setLevel(level)


def _locate(info: DatasetInfo, data_dir: str | os.PathLike[str] | None, download: bool) -> Path:
    """Find (or download) the file of ``info`` and return its path (checksum not yet verified)."""
    searched = _search_dirs(data_dir)
    for _label, folder in searched:
        candidate = folder / info.folder / info.filename
        if candidate.is_file():
            return candidate

    cache_target = cache_dir() / info.folder / info.filename
    looked = "; ".join(f"{label}: {folder / info.relpath}" for label, folder in searched)
    fix = (
        f"To fix: set {ENV_DATA} to a folder containing '{info.relpath}', put the reference "
        f"data folder at ../shared/data beside the repository, or pass "
        f"data_dir=<folder containing '{info.relpath}'>"
    )
    if info.url is None:
        why = (
            f"No download URL is registered for it (source: {info.source}); "
            f"it must be provided locally."
        )
    elif not download:
        why = f"download=False, so it was not fetched from {info.url}."
        fix += ", or call with download=True"
    else:
        try:
            _download(info, info.url, cache_target)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            why = f"Downloading it from {info.url} to {cache_target} failed: {exc}."
            fix += " (or download the URL above to that path yourself)"
        else:
            return cache_target
    raise DataError(
        f"Dataset {info.name!r}: file '{info.relpath}' not found. Looked in {looked}. {why} {fix}."
    )


def _get_info(name: str) -> DatasetInfo:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        names = sorted(_REGISTRY)
        guess = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
        hint = f" Did you mean {guess[0]!r}?" if guess else ""
        raise DataError(
            f"Unknown dataset {name!r}.{hint} Available datasets: {', '.join(names)}."
        ) from None


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def list_datasets() -> pd.DataFrame:
    """List the registered datasets.

    Returns
    -------
    pandas.DataFrame
        One row per dataset with columns ``name``, ``description``, ``rows`` (rows returned by
        :func:`load_dataset`), ``citation``, ``url`` (``None`` if the file must be provided
        locally), ``license`` (licence / redistribution note), ``file`` (path relative to a data
        folder) and ``sha256``.

    Examples
    --------
    >>> from bayescale.io.datasets import list_datasets
    >>> "chinchilla_epoch" in set(list_datasets()["name"])
    True
    """
    records = [
        {
            "name": info.name,
            "description": info.description,
            "rows": info.rows,
            "citation": info.citation,
            "url": info.url,
            "license": info.license,
            "file": info.relpath,
            "sha256": info.sha256,
        }
        for info in _REGISTRY.values()
    ]
    table = pd.DataFrame.from_records(records)
    # Keep None (not NaN) for datasets without a download URL.
    table["url"] = pd.Series([info.url for info in _REGISTRY.values()], dtype=object)
    return table


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> pd.DataFrame:
    """Load a registered dataset as a new frame with canonical column names.

    Parameters
    ----------
    name : str
        Registry name; see :func:`list_datasets`.  ``"chinchilla_epoch"`` returns all 245 runs
        and ``"chinchilla_epoch_240"`` the 240 runs Epoch AI fit on (5 highest-loss runs
        dropped).
    data_dir : str or os.PathLike, optional
        Folder laid out as ``<folder>/<file>`` (e.g. ``chinchilla_epoch/svg_extracted_data.csv``),
        searched first.  Then ``$BAYESCALE_DATA`` (when unset: ``../shared/data`` beside the
        working directory and beside the repository of a checkout), then the cache folder
        (:func:`cache_dir`).
    download : bool, default True
        If the file is found nowhere and the dataset has a download URL, download it into the
        cache folder.  Nothing is downloaded when the file is found locally.

    Returns
    -------
    pandas.DataFrame
        A new frame (safe to modify) with a fresh ``RangeIndex``.  Canonical columns, where the
        dataset has them: ``n_params``, ``n_tokens``, ``compute``, ``unique_tokens``,
        ``data_size``, ``loss`` (all float64), ``split``, ``group``; followed by kept source
        columns (``name`` for datablations; ``domain``, ``task``, ``model`` for revisiting_lang).

    Raises
    ------
    ValueError
        If ``name`` is not registered (the message lists the names and suggests the closest).
    bayescale.errors.DataError
        If the file cannot be found or downloaded, or its SHA-256 does not match the registry.

    Examples
    --------
    >>> from bayescale.io.datasets import load_dataset
    >>> df = load_dataset("chinchilla_epoch_240", download=False)  # doctest: +SKIP
    >>> len(df)  # doctest: +SKIP
    240
    """
    info = _get_info(name)
    path = _locate(info, data_dir, download)
    _verify(info, path)
    frame = info.parser(path)
    ordered = [c for c in _CANONICAL_ORDER if c in frame.columns]
    ordered += [c for c in frame.columns if c not in ordered]
    return frame.loc[:, ordered].reset_index(drop=True).copy()

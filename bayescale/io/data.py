"""Training-run tables: validation and the canonical `ScalingData` container.

Canonical columns
-----------------
``n_params``       N, the number of model parameters.
``n_tokens``       D, the number of training tokens (derived as C / (6 N) when absent).
``compute``        C, training compute in FLOP (derived as 6 N D when absent).
``loss``           the measured loss (or bounded metric) of the run; required.
``unique_tokens``  U, the number of unique tokens (data-constrained law).
``group``          an optional label that splits the table into separate curves.

Any other numeric column (for example ``data_size``) may serve as the scaling variable of a
single-variable law.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bayescale.errors import DataError, PlausibilityWarning, warn

__all__ = [
    "CANONICAL",
    "FLOPS_PER_PARAM_TOKEN",
    "COMPUTE_FACTOR",
    "LARGEST_LOSS",
    "SMALLEST_N_PARAMS",
    "warn_implausible",
    "ScalingData",
    "check_positive",
    "derive_inputs",
    "format_rows",
    "from_frame",
]

CANONICAL = ("n_params", "n_tokens", "compute", "loss", "unique_tokens", "group")
FLOPS_PER_PARAM_TOKEN = 6.0

#: largest n_params that reads as a count in billions or millions (no trained LM is this small)
SMALLEST_N_PARAMS = 1e3
#: losses all above this are perplexities, not cross-entropies: uniform guessing over a
#: vocabulary of V tokens scores ln V nats (log2 V bits), below 20 for any V under e^20 = 5e8
#: (2^20 = 1e6 in bits), larger than any tokenizer's vocabulary
LARGEST_LOSS = 20.0
#: compute given next to N and D more than this factor from C = 6 N D is another quantity
COMPUTE_FACTOR = 10.0


def format_rows(labels: Sequence[object], limit: int = 8) -> str:
    """Row labels for a message: the first ``limit``, then how many more."""
    shown = ", ".join(str(x) for x in list(labels)[:limit])
    more = len(labels) - limit
    return shown + (f", ... ({more} more)" if more > 0 else "")


def _bad_rows(frame: pd.DataFrame, column: str) -> list[object]:
    values = frame[column].to_numpy(dtype=float)
    return list(frame.index[~(np.isfinite(values) & (values > 0))])


def check_positive(frame: pd.DataFrame, names: Sequence[str], where: str = "") -> None:
    """Raise a `DataError` naming the rows where a column of ``names`` is not positive and finite.

    ``where`` says which table it is (for example ``" in `at`"``) in the message.
    """
    for name in names:
        bad = _bad_rows(frame, name)
        if bad:
            raise DataError(
                f"{name!r}{where} has {len(bad)} non-positive or non-finite values "
                f"(rows {format_rows(bad)}). Drop them or pass dropna=True."
            )


def derive_inputs(frame: pd.DataFrame) -> pd.DataFrame:
    """Fill the derivable inputs of ``frame`` in place, by C = 6 N D, and return it.

    ``n_tokens`` = C / (6 N) when absent, else ``n_params`` = C / (6 D) when absent; then
    ``compute`` = 6 N D when absent.
    """
    k = FLOPS_PER_PARAM_TOKEN
    cols = set(frame.columns)
    if "n_tokens" not in cols and {"compute", "n_params"} <= cols:
        frame["n_tokens"] = frame["compute"] / (k * frame["n_params"])
    elif "n_params" not in cols and {"compute", "n_tokens"} <= cols:
        frame["n_params"] = frame["compute"] / (k * frame["n_tokens"])
    if "compute" not in frame.columns and {"n_params", "n_tokens"} <= set(frame.columns):
        frame["compute"] = k * frame["n_params"] * frame["n_tokens"]
    return frame


def warn_implausible(frame: pd.DataFrame) -> None:
    """Warn (`PlausibilityWarning`) about valid runs that are probably not what was meant.

    On the columns as given (before `derive_inputs`): ``n_params`` all below
    `SMALLEST_N_PARAMS` next to ``n_tokens`` or ``compute`` (a count in billions: 7 for 7e9;
    a one-variable sweep of toy sizes is not flagged), ``loss`` all above `LARGEST_LOSS`
    (perplexity passed as loss), ``compute`` given with ``n_params`` and ``n_tokens`` but
    more than `COMPUTE_FACTOR` from C = 6 N D, and ``unique_tokens`` above ``n_tokens``.
    """
    if len(frame) == 0:
        return
    cols = set(frame.columns)
    found = []
    llm = bool(cols & {"n_tokens", "compute"})  # not a one-variable sweep of toy sizes
    if llm and "n_params" in cols and frame["n_params"].max() < SMALLEST_N_PARAMS:
        found.append(
            f"'n_params' is at most {frame['n_params'].max():g}: it looks like a count in "
            "billions or millions, but bayescale expects the number of parameters (7e10 for "
            "a 70B model). Multiply the column by 1e9 (or 1e6)"
        )
    if "loss" in cols and frame["loss"].min() > LARGEST_LOSS:
        found.append(
            f"every 'loss' is above {LARGEST_LOSS:g} (smallest {frame['loss'].min():.4g}): "
            "that is more than uniform guessing over any vocabulary costs, so it looks like "
            "perplexity. Pass its log, loss=np.log(perplexity)"
        )
    if {"n_params", "n_tokens", "compute"} <= cols:
        ratio = frame["compute"] / (FLOPS_PER_PARAM_TOKEN * frame["n_params"] * frame["n_tokens"])
        off = list(frame.index[(ratio > COMPUTE_FACTOR) | (ratio < 1 / COMPUTE_FACTOR)])
        if off:
            found.append(
                f"'compute' is more than {COMPUTE_FACTOR:g}x away from 6 N D in {len(off)} of "
                f"{len(frame)} runs (rows {format_rows(off)}; C / 6ND = "
                f"{float(ratio.loc[off[0]]):.3g} in the first): check the units (FLOP, not "
                "PF-days) or drop the compute column to derive it"
            )
    if {"unique_tokens", "n_tokens"} <= cols:
        over = list(frame.index[frame["unique_tokens"] > frame["n_tokens"]])
        if over:
            found.append(
                f"'unique_tokens' exceeds 'n_tokens' in {len(over)} runs (rows "
                f"{format_rows(over)}): a run cannot see more unique tokens than it trains on; "
                "the data-constrained law uses min(U, D). Check the columns"
            )
    if found:
        warn("the runs look implausible: " + "; ".join(found) + ".", PlausibilityWarning)


@dataclass(frozen=True)
class ScalingData:
    """A validated, private copy of a table of training runs.

    Attributes
    ----------
    table : pandas.DataFrame
        The runs with canonical column names (a copy: the caller's frame is never touched).
    source : str
        Where the table came from (a path, or ``"DataFrame"``).
    """

    table: pd.DataFrame
    source: str = "DataFrame"

    @property
    def n_runs(self) -> int:
        """Number of runs (rows)."""
        return len(self.table)

    @property
    def loss(self) -> np.ndarray:
        """The observed losses as float64."""
        return self.table["loss"].to_numpy(dtype=np.float64)

    def column(self, name: str) -> np.ndarray:
        """Return column ``name`` as a float64 array, with a clear error when absent."""
        if name not in self.table.columns:
            hint = f"Name it with columns={{{name!r}: '<your column>'}}"
            if name == "n_tokens":
                hint += ", or name compute= and n_params= to derive D = C / (6 N)"
            raise DataError(
                f"column {name!r} not in data; columns are {list(self.table.columns)}.\n  {hint}."
            )
        return self.table[name].to_numpy(dtype=np.float64)

    def require(
        self, variables: Sequence[str], n_parameters: int, law: str, *, vary: bool = True
    ) -> None:
        """Check that the data can identify a law over ``variables`` with ``n_parameters``.

        With ``vary=False`` (runs to check or predict, not to fit) only the presence and
        positivity of the variables are checked.

        Raises
        ------
        DataError
            If a variable is missing, non-numeric, non-positive or constant, or if there are
            fewer runs than parameters.
        """
        for name in variables:
            values = self.column(name)
            check_positive(self.table, (name,))
            if not vary:
                continue
            if np.unique(values).size < 2:
                raise DataError(
                    f"law {law!r} needs {name!r} to vary, but every run has {name}="
                    f"{values[0]:g}. Add runs at other values of {name!r}, or use a law over a "
                    "variable that varies (for example law='power_law', variable=...)."
                )
        if vary and self.n_runs <= n_parameters:
            raise DataError(
                f"law {law!r} has {n_parameters} parameters but the data has only "
                f"{self.n_runs} runs. Add runs (at least {n_parameters + 1}), or choose a law "
                "with fewer parameters."
            )

    def require_one_curve(self, what: str, fix: str) -> None:
        """Raise a `DataError` when a ``group`` column holds several curves.

        The message says ``what`` (is done to one curve) and how to ``fix`` it.
        """
        if "group" in self.table.columns and self.table["group"].nunique() > 1:
            groups = sorted(self.table["group"].unique())
            raise DataError(
                f"the data has {len(groups)} groups ({', '.join(groups[:5])}...); {what}. {fix}"
            )

    def __repr__(self) -> str:
        cols = ", ".join(c for c in self.table.columns)
        return f"ScalingData({self.n_runs} runs; columns: {cols}; source: {self.source})"


def _read(data: pd.DataFrame | str | os.PathLike[str]) -> tuple[pd.DataFrame, str]:
    if isinstance(data, pd.DataFrame):
        return data.copy(deep=True), "DataFrame"
    if isinstance(data, ScalingData):
        return data.table.copy(deep=True), data.source
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.is_file():
            raise DataError(f"no such file: {str(path)!r}. Pass a CSV path or a DataFrame.")
        try:
            return pd.read_csv(path), str(path)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
            raise DataError(f"could not read {str(path)!r} as CSV: {exc}") from exc
    raise DataError(
        f"data must be a pandas DataFrame or a CSV path; received {type(data).__name__}."
    )


def _check_mapping(columns: Mapping[str, str] | None) -> dict[str, str]:
    """The ``columns=`` mapping, validated (see `from_frame`)."""
    if columns is None:
        return {}
    if not isinstance(columns, Mapping):
        raise DataError(
            f"columns must be a mapping of canonical name -> your column name; received "
            f"{type(columns).__name__}: {columns!r}. For example columns={{'n_params': 'N'}}."
        )
    mapping = dict(columns)
    for canon, user in mapping.items():
        if not isinstance(canon, str) or not isinstance(user, str):
            raise DataError(
                f"columns= maps names to names; received {canon!r}: {user!r}. For example "
                "columns={'n_params': 'Model Size'}."
            )
        if canon not in CANONICAL:
            near = difflib.get_close_matches(canon, CANONICAL, n=1, cutoff=0.75)
            if near:
                raise DataError(
                    f"columns= key {canon!r} is not a canonical name; they are "
                    f"{list(CANONICAL)}. Did you mean {near[0]!r}? (Other keys name the "
                    "scaling variable of a one-variable law, such as 'data_size'.)"
                )
    targets: dict[str, list[str]] = {}
    for canon, user in mapping.items():
        targets.setdefault(user, []).append(canon)
    shared = {user: names for user, names in targets.items() if len(names) > 1}
    if shared:
        user, names = next(iter(shared.items()))
        raise DataError(
            f"columns= maps {names} all to column {user!r}; each canonical name needs its "
            "own column. Map one of them, and derive the other (for example n_tokens from "
            "compute and n_params) or add a column for it."
        )
    return mapping


def from_frame(
    data: pd.DataFrame | ScalingData | str | os.PathLike[str],
    *,
    columns: Mapping[str, str] | None = None,
    dropna: bool = False,
) -> ScalingData:
    """Validate a table of training runs and return a `ScalingData`.

    Parameters
    ----------
    data : DataFrame, ScalingData or path
        The runs, one per row. A path is read as CSV.
    columns : mapping, optional
        Canonical name -> the user's column, for example
        ``{"n_params": "Model Size", "compute": "Training FLOP"}``. Keys are the canonical
        names (`CANONICAL`) or the name of a one-variable law's scaling variable (such as
        ``data_size``); a key that looks like a misspelt canonical name (``n_param``) is an
        error, and so are two keys mapped to one column. A mapped name wins over a column
        of the same name: with ``columns={"loss": "val_loss"}`` a ``loss`` column is ignored.
    dropna : bool, default False
        Drop runs whose canonical numeric values are missing, non-finite or non-positive
        instead of raising.

    Returns
    -------
    ScalingData
        A private copy with canonical column names; ``n_tokens`` = C / (6 N) is derived when
        tokens are absent, and ``compute`` = 6 N D when compute is absent.

    Raises
    ------
    DataError
        If ``loss`` is missing, a named column is absent, ``columns`` is not a mapping of
        names or has a misspelt key or two keys for one column, or values are non-numeric,
        non-finite or non-positive.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"N": [1e8, 1e9], "D": [2e9, 2e10], "loss": [3.1, 2.6]})
    >>> from_frame(frame, columns={"n_params": "N", "n_tokens": "D"}).n_runs
    2
    """
    frame, source = _read(data)
    mapping = _check_mapping(columns)
    missing = [user for user in mapping.values() if user not in frame.columns]
    if missing:
        raise DataError(
            f"column {missing[0]!r} not in data; columns are {list(frame.columns)}.\n"
            "  Fix the columns= mapping (canonical name -> your column name)."
        )
    # the mapping says which column to use: a column already named like a mapped name is
    # stale (a train 'loss' next to columns={'loss': 'val_loss'}) and is left out
    stale = [c for c in mapping if c in frame.columns and c not in mapping.values()]
    frame = frame.drop(columns=stale).rename(
        columns={user: canon for canon, user in mapping.items()}
    )
    if "loss" not in frame.columns:
        raise DataError(
            f"column 'loss' not in data; columns are {list(frame.columns)}.\n"
            "  Name it with columns={'loss': '<your loss column>'}."
        )
    numeric = [c for c in CANONICAL if c in frame.columns and c != "group"]
    numeric += [c for c in mapping if c not in CANONICAL and c in frame.columns]
    for name in numeric:
        converted = pd.to_numeric(frame[name], errors="coerce")
        text = frame.index[converted.isna() & frame[name].notna()]
        if len(text):
            raise DataError(
                f"{name!r} has {len(text)} non-numeric values (rows {format_rows(list(text))}), "
                f"for example {frame.loc[text[0], name]!r}. Clean the column or drop those rows."
            )
        frame[name] = converted.astype(np.float64)
    values = frame[numeric].to_numpy(dtype=np.float64)
    valid = np.all(np.isfinite(values) & (values > 0), axis=1)
    if dropna:  # by position: repeated index labels must not drop valid runs
        frame = frame[valid]
    else:
        check_positive(frame, numeric)
    warn_implausible(frame)
    derive_inputs(frame)
    if "group" in frame.columns:
        frame["group"] = frame["group"].astype(str)
    if len(frame) == 0:
        raise DataError("the data has no runs left. Pass a table with at least one valid row.")
    return ScalingData(table=frame, source=source)

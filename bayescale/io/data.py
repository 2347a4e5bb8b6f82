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
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayescale import options as opt
from bayescale.errors import DataError, OptionError, OptionTypeError, PlausibilityWarning, warn

__all__ = [
    "CANONICAL",
    "FLOPS_PER_PARAM_TOKEN",
    "COMPUTE_FACTOR",
    "LARGEST",
    "LARGEST_LOSS",
    "SMALLEST_N_PARAMS",
    "warn_implausible",
    "ScalingData",
    "check_positive",
    "derive_inputs",
    "format_rows",
    "from_frame",
    "read_csv",
    "read_points",
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
#: sizes beyond any trained run, by a wide margin (about 1000 times the largest published
#: models, datasets and training budgets): a value above these is a unit or a typing slip
LARGEST = {"n_params": 1e15, "n_tokens": 1e17, "unique_tokens": 1e17, "compute": 1e30}


def format_rows(labels: Sequence[object], limit: int = 8) -> str:
    """Row labels for a message: the first ``limit``, then how many more."""
    shown = ", ".join(str(x) for x in list(labels)[:limit])
    more = len(labels) - limit
    return shown + (f", ... ({more} more)" if more > 0 else "")


def _bad_rows(frame: pd.DataFrame, column: str) -> list[object]:
    values = frame[column].to_numpy(dtype=float)
    return list(frame.index[~(np.isfinite(values) & (values > 0))])


def check_positive(
    frame: pd.DataFrame,
    names: Sequence[str],
    where: str = "",
    fix: str = "Drop them or pass dropna=True.",
) -> None:
    """Raise a `DataError` naming the rows where a column of ``names`` is not positive and finite.

    ``where`` says which table it is (for example ``" in `at`"``) in the message, ``fix``
    what to do.
    """
    for name in names:
        bad = _bad_rows(frame, name)
        if bad:
            raise DataError(
                f"{name!r}{where} has {len(bad)} non-positive or non-finite values "
                f"(rows {format_rows(bad)}). {fix}"
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
    for name, top in LARGEST.items():
        if name in cols:
            huge = list(frame.index[frame[name] > top])
            if huge:
                found.append(
                    f"{name!r} is above {top:g} in {len(huge)} runs (rows {format_rows(huge)}; "
                    f"largest {frame[name].max():.3g}), far beyond any trained model: check "
                    "the units and the column"
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


def read_csv(
    path: str | os.PathLike[str],
    *,
    sep: str | None = ",",
    encoding: str | None = None,
    comment: str | None = None,
) -> pd.DataFrame:
    """Read a CSV file of runs or points, with an error that says how to read it.

    Parameters
    ----------
    path : str or path
        The file.
    sep : str or None, default ","
        The delimiter; None sniffs it among ``, ; tab |`` from the first lines (never a
        space, which column names such as ``Model Size`` contain; one column falls back to
        ``,``).
    encoding : str, optional
        The file's text encoding (default UTF-8), for example ``"latin-1"``.
    comment : str, optional
        A character that starts a comment: the rest of its line is ignored (``"#"``).

    Raises
    ------
    DataError
        If the file is missing, cannot be decoded in ``encoding`` or cannot be parsed; the
        message says which of ``encoding=``, ``comment=`` or ``sep=`` to pass (and their
        command-line forms ``--encoding``, ``--comment``, ``--sep``).
    OptionTypeError, OptionError
        If ``sep``, ``encoding`` or ``comment`` is not a string, or ``comment`` is not one
        character.
    """
    import csv

    file = Path(path)
    if not file.is_file():
        raise DataError(f"no such file: {str(path)!r}. Pass the path of a CSV file or a DataFrame.")
    for name, value in (("encoding", encoding), ("comment", comment), ("sep", sep)):
        if value is not None and not isinstance(value, str):
            raise OptionTypeError(
                f"{name} must be a string or None; received {type(value).__name__}: {value!r}."
            )
    if comment is not None and len(comment) != 1:
        raise OptionError(f"comment must be one character, such as '#'; received {comment!r}.")
    try:
        with open(file, encoding=encoding or "utf-8", newline="") as fh:
            sample = fh.read(64 * 1024)
    except (UnicodeDecodeError, LookupError) as exc:
        raise DataError(_decode_hint(str(path), encoding, exc)) from None
    lines = sample.splitlines()
    if sep is None:
        kept = [ln for ln in lines if not (comment and ln.lstrip().startswith(comment))]
        try:
            sep = csv.Sniffer().sniff("\n".join(kept), delimiters=",;\t|").delimiter
        except csv.Error:
            sep = ","
    try:
        return pd.read_csv(file, sep=sep, encoding=encoding, comment=comment)
    except UnicodeDecodeError as exc:  # past the sample
        raise DataError(_decode_hint(str(path), encoding, exc)) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        commented = [n + 1 for n, ln in enumerate(lines[:200]) if ln.lstrip().startswith("#")]
        if comment is None and commented:
            fix = (
                f"lines {format_rows(commented, 3)} start with '#': pass comment='#' "
                "(--comment '#' on the command line) to skip comment lines"
            )
        else:
            fix = (
                f"check the delimiter (read with {sep!r}): pass sep= (--sep on the command "
                "line), for example ';' or a tab"
            )
        raise DataError(
            f"could not read {str(path)!r} as CSV ({str(exc).strip()}); {fix}."
        ) from None


def _decode_hint(path: str, encoding: str | None, exc: Exception) -> str:
    if isinstance(exc, LookupError):
        return f"unknown encoding {encoding!r} for {path!r}. Pass a codec name such as 'latin-1'."
    return (
        f"could not read {path!r} as {encoding or 'UTF-8'} text ({exc}). The file is in another "
        "encoding: pass encoding='latin-1' (or cp1252, utf-16...; --encoding on the command "
        "line), or save the file as UTF-8."
    )


def _as_frame(
    data: Any, where: str, encoding: str | None = None, comment: str | None = None
) -> tuple[pd.DataFrame, str]:
    """A private copy of a table given as a DataFrame, `ScalingData`, mapping or CSV path."""
    if isinstance(data, pd.DataFrame):
        return data.copy(deep=True), "DataFrame"
    if isinstance(data, ScalingData):
        return data.table.copy(deep=True), data.source
    if isinstance(data, (str, os.PathLike)):
        return read_csv(data, encoding=encoding, comment=comment), str(data)
    if isinstance(data, Mapping):
        try:
            arrays = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v)) for v in data.values()))
        except ValueError:
            shapes = {k: np.shape(v) for k, v in data.items()}
            raise DataError(
                f"the arrays of {where} do not broadcast together; shapes {shapes}. Pass "
                "arrays of one length (or scalars)."
            ) from None
        if arrays and arrays[0].ndim != 1:
            raise DataError(
                f"{where} must hold scalars or 1-D arrays; received shape {arrays[0].shape}."
            )
        return pd.DataFrame(dict(zip(data.keys(), arrays, strict=True))), "mapping"
    raise DataError(
        f"{where} must be a DataFrame or a mapping of arrays (n_params=..., n_tokens=...), or "
        f"the path of a CSV file; received {type(data).__name__}."
    )


def _unique_columns(frame: pd.DataFrame, where: str) -> None:
    dup = list(dict.fromkeys(frame.columns[frame.columns.duplicated()]))
    if dup:
        raise DataError(
            f"{where} has more than one column named {format_rows(dup)}: which one is meant "
            f"is ambiguous. Rename or drop the copies; columns are {list(frame.columns)}."
        )


def _to_numbers(frame: pd.DataFrame, names: Sequence[str], where: str) -> None:
    """Convert the columns ``names`` of ``frame`` to float64, refusing what is not a number.

    Booleans (True would read as 1.0), dates and durations (they would read as nanoseconds)
    and text are refused with the rows and an example.
    """
    for name in dict.fromkeys(names):
        col = frame[name]
        if pd.api.types.is_bool_dtype(col) or (
            col.dtype == object and col.map(lambda v: isinstance(v, (bool, np.bool_))).any()
        ):
            raise DataError(
                f"{name!r}{where} holds True/False values, which are not measurements (True "
                "would be read as 1). Pass the numeric column, or map it with columns=."
            )
        if (
            isinstance(col.dtype, pd.DatetimeTZDtype)
            or pd.api.types.is_datetime64_any_dtype(col)
            or pd.api.types.is_timedelta64_dtype(col)
        ):
            raise DataError(
                f"{name!r}{where} holds dates or durations ({col.dtype}), which would be read "
                "as nanoseconds. Pass the numeric column (for example the parameter count), "
                "or map the right one with columns=."
            )
        converted = pd.to_numeric(col, errors="coerce")
        text = frame.index[converted.isna() & col.notna()]
        if len(text):
            example = frame.loc[text[0], name]
            hint = "Clean the column or drop those rows."
            if isinstance(example, str) and example.lstrip().startswith("#"):
                hint = "They look like comment lines: pass comment='#' to skip them."
            raise DataError(
                f"{name!r}{where} has {len(text)} non-numeric values (rows "
                f"{format_rows(list(text))}), for example {example!r}. {hint}"
            )
        frame[name] = converted.astype(np.float64)


def read_points(at: Any, variables: Sequence[str], *, where: str = "`at`") -> pd.DataFrame:
    """Validate a table of points (runs without a loss) at which a law is evaluated.

    The same parser as `from_frame`, without the loss: ``at`` is a DataFrame, a mapping of
    scalars or 1-D arrays (broadcast together), a `ScalingData` or a CSV path. The inputs
    among ``variables``, ``n_params``, ``n_tokens`` and ``compute`` must be positive and
    finite; the missing ones of N, D and C are derived by C = 6 N D. Other columns are kept.

    Returns
    -------
    pandas.DataFrame
        A private copy, indexed ``0..n-1`` (index name ``point``).

    Raises
    ------
    DataError
        If ``at`` is not a table, is empty, has repeated column names, non-numeric,
        non-positive or non-finite inputs, or lacks a variable the law needs.
    """
    phrase = f" in {where}"
    frame, _ = _as_frame(at, where)
    frame = frame.reset_index(drop=True)
    _unique_columns(frame, where)
    if len(frame) == 0:
        raise DataError(f"{where} has no points. Pass at least one row.")
    numeric = [c for c in (*variables, "n_params", "n_tokens", "compute") if c in frame]
    _to_numbers(frame, numeric, phrase)
    check_positive(frame, numeric, phrase, fix="Points need positive, finite inputs.")
    derive_inputs(frame)
    missing = [v for v in variables if v not in frame.columns]
    if missing:
        hint = {
            "n_tokens": " Pass n_tokens, or compute to derive D = C / (6 N).",
            "n_params": " Pass n_params, or compute and n_tokens to derive N = C / (6 D).",
            "unique_tokens": " Pass unique_tokens (unique_tokens=n_tokens: no repetition).",
        }.get(missing[0], f" Pass {missing[0]}=<values>.")
        raise DataError(
            f"column {missing[0]!r} not in {where}; it needs {list(variables)} and {where} "
            f"has {list(frame.columns)}.{hint}"
        )
    check_positive(
        frame,
        [c for c in ("n_params", "n_tokens", "compute") if c in frame],
        phrase,
        fix="Inputs this large overflow: check the units.",
    )
    frame.index.name = "point"
    return frame


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
    data: pd.DataFrame | ScalingData | Mapping[str, Any] | str | os.PathLike[str],
    *,
    columns: Mapping[str, str] | None = None,
    dropna: bool = False,
    encoding: str | None = None,
    comment: str | None = None,
) -> ScalingData:
    """Validate a table of training runs and return a `ScalingData`.

    The one parser of the package's tables: every verb that takes runs (and, through
    `read_points`, points) reads them here.

    Parameters
    ----------
    data : DataFrame, ScalingData, mapping of arrays or path
        The runs, one per row. A path is read as CSV (comma-separated).
    columns : mapping, optional
        Canonical name -> the user's column, for example
        ``{"n_params": "Model Size", "compute": "Training FLOP"}``. Keys are the canonical
        names (`CANONICAL`) or the name of a one-variable law's scaling variable (such as
        ``data_size``); a key that looks like a misspelt canonical name (``n_param``) is an
        error, and so are two keys mapped to one column. A mapped name wins over a column
        of the same name: with ``columns={"loss": "val_loss"}`` a ``loss`` column is ignored.
    dropna : bool, default False
        Drop runs whose canonical numeric values are missing, non-finite or non-positive
        (and runs without a group label) instead of raising. A group that loses every run
        is named in a `PlausibilityWarning`.
    encoding : str, optional
        Text encoding of a CSV path (default UTF-8), for example ``"latin-1"``.
    comment : str, optional
        Comment character of a CSV path: the rest of a line after it is ignored (``"#"``).

    Returns
    -------
    ScalingData
        A private copy with canonical column names; ``n_tokens`` = C / (6 N) is derived when
        tokens are absent, and ``compute`` = 6 N D when compute is absent. Group labels are
        strings.

    Raises
    ------
    DataError
        If ``loss`` is missing, a named column is absent, ``columns`` is not a mapping of
        names or has a misspelt key or two keys for one column, two columns share a name,
        values are booleans, dates, text, non-finite or non-positive, group labels are
        missing or two labels read alike (``1`` and ``"1"``), or the file cannot be read.
    OptionTypeError
        If ``dropna`` is not a bool.

    Warns
    -----
    PlausibilityWarning
        For runs that are valid but probably not what was meant: exact duplicate rows,
        sizes beyond any trained model, perplexity passed as loss, and the other checks of
        `warn_implausible`.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"N": [1e8, 1e9], "D": [2e9, 2e10], "loss": [3.1, 2.6]})
    >>> from_frame(frame, columns={"n_params": "N", "n_tokens": "D"}).n_runs
    2
    """
    dropna = opt.flag(dropna, "dropna")
    frame, source = _as_frame(data, "data", encoding, comment)
    _unique_columns(frame, "the data")
    mapping = _check_mapping(columns)
    missing = [user for user in mapping.values() if user not in frame.columns]
    if missing:
        raise DataError(
            f"column {missing[0]!r} not in data; columns are {list(frame.columns)}.\n"
            "  Fix the columns= mapping (canonical name -> your column name)."
            + _comment_hint(frame)
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
            "  Name it with columns={'loss': '<your loss column>'}." + _comment_hint(frame)
        )
    numeric = [c for c in CANONICAL if c in frame.columns and c != "group"]
    numeric += [c for c in mapping if c not in CANONICAL and c in frame.columns]
    _to_numbers(frame, numeric, "")
    values = frame[numeric].to_numpy(dtype=np.float64)
    valid = np.all(np.isfinite(values) & (values > 0), axis=1)
    groups_before = None
    if "group" in frame.columns:
        unlabelled = frame["group"].isna().to_numpy()
        if dropna:
            groups_before = frame.loc[~unlabelled, "group"]
            valid &= ~unlabelled
        elif unlabelled.any():
            rows = list(frame.index[unlabelled])
            raise DataError(
                f"'group' has {len(rows)} missing labels (rows {format_rows(rows)}): every run "
                "needs the name of its curve. Fill them in, drop those rows, or pass "
                "dropna=True to drop them."
            )
    if dropna:  # by position: repeated index labels must not drop valid runs
        frame = frame[valid]
    else:
        check_positive(frame, numeric)
    if "group" in frame.columns:
        _check_labels(frame["group"])
        lost = []
        if groups_before is not None:
            left = set(frame["group"])
            lost = [str(g) for g in pd.unique(groups_before) if g not in left]
        if lost:
            warn(
                f"dropna=True dropped every run of group(s) {format_rows(lost)}: they have no "
                "valid run left, so they are not fitted. Check their rows, or pass "
                "dropna=False to see which values are invalid.",
                PlausibilityWarning,
            )
        frame["group"] = frame["group"].astype(str)
    _warn_duplicates(frame)
    warn_implausible(frame)
    derive_inputs(frame)
    if len(frame) == 0:
        raise DataError("the data has no runs left. Pass a table with at least one valid row.")
    check_positive(
        frame,
        [c for c in ("n_params", "n_tokens", "compute") if c in frame],
        fix="Values this large overflow when derived by C = 6 N D: check the units.",
    )
    return ScalingData(table=frame, source=source)


def _comment_hint(frame: pd.DataFrame) -> str:
    """A hint when the header was read from a comment line (a CSV that starts with '#')."""
    if any(str(c).lstrip().startswith("#") for c in frame.columns):
        return (
            "\n  The header looks like a comment line: if the file starts with '#' lines, pass "
            "comment='#' (--comment '#' on the command line) to skip them."
        )
    return ""


def _label_kind(value: object) -> str:
    """What a group label is, coarsely: NumPy's and Python's integers are one kind."""
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, numbers.Integral):
        return "int"
    if isinstance(value, numbers.Real):
        return "float"
    return type(value).__name__


def _check_labels(raw: pd.Series) -> None:
    """Refuse group labels that are different values but read alike as strings (1 and "1")."""
    if not pd.api.types.infer_dtype(raw, skipna=True).startswith("mixed"):
        return  # labels of one kind cannot read alike
    text = raw.astype(str)
    # the values of one label, coarsely typed: only a rare mixed column pays for this
    kinds = pd.DataFrame({"label": text, "kind": raw.map(_label_kind)})
    mixed = kinds.groupby("label")["kind"].nunique()
    mixed = list(mixed.index[mixed > 1])
    if mixed:
        rows = kinds.index[kinds["label"] == mixed[0]]
        distinct = dict.fromkeys(f"{v!r} ({type(v).__name__})" for v in raw.loc[rows])
        shown = ", ".join(list(distinct)[:4])
        raise DataError(
            f"group labels {shown} (rows {format_rows(list(rows))}) are different values that "
            f"read alike as the label {mixed[0]!r}, so their runs would be merged into one "
            "curve. Make the column one type: frame['group'] = frame['group'].astype(str) to "
            "merge them, or rename one of them to keep them apart."
        )


def _warn_duplicates(frame: pd.DataFrame) -> None:
    """Warn about runs that repeat an earlier row in every column (a copied row)."""
    # row hashes first (three times faster than DataFrame.duplicated on large tables), then
    # the exact comparison on the few rows whose hashes repeat
    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    ordered = np.sort(hashes)
    if not np.any(ordered[1:] == ordered[:-1]):
        return
    suspects = frame[pd.Series(hashes).duplicated(keep=False).to_numpy()]
    repeated = suspects.duplicated(keep="first").to_numpy()
    if not repeated.any():
        return
    rows = list(suspects.index[repeated])
    first = list(suspects.index[suspects.duplicated(keep=False).to_numpy() & ~repeated])
    warn(
        f"{len(rows)} runs repeat an earlier row exactly, in every column (rows "
        f"{format_rows(rows)} repeat rows {format_rows(first)}): each copy "
        "counts as another measurement and narrows the fit. If they are copies, drop them "
        "with frame.drop_duplicates(); if they are repeated runs, add a column that tells "
        "them apart (a seed).",
        PlausibilityWarning,
    )

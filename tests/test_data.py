import warnings

import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale.errors import DataError
from bayescale.io.data import read_csv, read_points


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Model Size": [1e8, 2e8, 4e8, 8e8, 1.6e9, 3.2e9, 6.4e9],
            "Training FLOP": [1e19, 3e19, 4e19, 2e20, 1.6e20, 9e20, 6.4e20],
            "loss": [3.3, 3.1, 2.9, 2.8, 2.7, 2.6, 2.55],
        }
    )


def test_mapping_derives_tokens_and_leaves_the_caller_frame_alone():
    frame = _frame()
    before = frame.copy(deep=True)
    data = bs.from_frame(frame, columns={"n_params": "Model Size", "compute": "Training FLOP"})
    pd.testing.assert_frame_equal(frame, before)
    np.testing.assert_allclose(
        data.column("n_tokens"), frame["Training FLOP"] / (6 * frame["Model Size"])
    )
    assert data.n_runs == 7


def test_missing_column_lists_what_exists():
    with pytest.raises(
        DataError, match=r"(?s)column 'tokens' not in data; columns are \['Model Size'"
    ):
        bs.from_frame(_frame(), columns={"n_tokens": "tokens"})
    with pytest.raises(
        DataError,
        match=r"(?s)column 'n_tokens' not in data.*Training FLOP.*"
        r"derive D = C / \(6 N\)",
    ):
        bs.fit(_frame().rename(columns={"Model Size": "n_params"}), "chinchilla", misfit=False)


def test_non_positive_and_non_finite_values_name_the_rows():
    frame = _frame().rename(columns={"Model Size": "n_params", "Training FLOP": "compute"})
    frame.loc[2, "loss"] = -1.0
    frame.loc[4, "loss"] = np.inf
    with pytest.raises(
        DataError,
        match=r"'loss' has 2 non-positive or non-finite values "
        r"\(rows 2, 4\)\. Drop them or pass dropna=True",
    ):
        bs.from_frame(frame)
    assert bs.from_frame(frame, dropna=True).n_runs == 5


def test_non_numeric_values_are_named():
    frame = _frame().rename(columns={"Model Size": "n_params", "Training FLOP": "compute"})
    frame["loss"] = frame["loss"].astype(object)
    frame.loc[3, "loss"] = "n/a"
    with pytest.raises(DataError, match=r"'loss' has 1 non-numeric values \(rows 3\).*'n/a'"):
        bs.from_frame(frame)


def test_too_few_runs_and_constant_variable():
    frame = _frame().rename(columns={"Model Size": "n_params", "Training FLOP": "compute"})
    with pytest.raises(
        DataError,
        match=r"law 'chinchilla' has 5 parameters but the data has "
        r"only 4 runs",
    ):
        bs.fit(frame.iloc[:4], "chinchilla", method="huber")
    const = frame.assign(n_params=1e9)
    with pytest.raises(DataError, match=r"law 'chinchilla' needs 'n_params' to vary"):
        bs.fit(const, "chinchilla", method="huber")


def test_csv_path_and_bad_type(tmp_path):
    path = tmp_path / "runs.csv"
    _frame().to_csv(path, index=False)
    data = bs.from_frame(path, columns={"n_params": "Model Size", "compute": "Training FLOP"})
    assert data.source == str(path)
    with pytest.raises(DataError, match="no such file"):
        bs.from_frame(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="received list"):
        bs.from_frame([1, 2, 3])  # type: ignore[arg-type]


def test_loss_column_is_required():
    with pytest.raises(DataError, match=r"(?s)column 'loss' not in data.*columns=\{'loss'"):
        bs.from_frame(pd.DataFrame({"n_params": [1.0, 2.0]}))


def test_dropna_with_repeated_index_labels_keeps_the_valid_runs():
    # issue 12: dropping by label removed every row sharing the label of a bad row
    frame = pd.DataFrame(
        {"n_params": [1e8, 2e8, 4e8, 8e8], "n_tokens": [2e9, 4e9, 8e9, -1.0], "loss": [3.0] * 4},
        index=[0, 0, 0, 0],
    )
    data = bs.from_frame(frame, dropna=True)
    assert data.n_runs == 3
    assert list(data.table["n_params"]) == [1e8, 2e8, 4e8]
    assert frame.shape == (4, 3)  # the caller's frame is untouched


def test_a_mapped_name_wins_over_a_stale_column_of_that_name():
    # issue: both 'loss' and columns={'loss': 'val_loss'} crashed inside pandas
    frame = _frame().rename(columns={"Model Size": "n_params", "Training FLOP": "compute"})
    frame["val_loss"] = frame["loss"] + 0.1
    before = frame.copy(deep=True)
    data = bs.from_frame(frame, columns={"loss": "val_loss"})
    np.testing.assert_allclose(data.loss, before["val_loss"])
    assert list(data.table.columns).count("loss") == 1
    stale = frame.assign(N=frame["n_params"] * 2)
    data = bs.from_frame(stale, columns={"n_params": "N", "loss": "val_loss"})
    np.testing.assert_allclose(data.column("n_params"), stale["N"])
    pd.testing.assert_frame_equal(frame, before)


def test_bad_column_mappings_are_named():
    with pytest.raises(DataError, match=r"key 'n_param' is not a canonical name.*'n_params'"):
        bs.from_frame(_frame(), columns={"n_param": "Model Size", "compute": "Training FLOP"})
    with pytest.raises(DataError, match=r"maps \['n_params', 'n_tokens'\] all to column 'Model"):
        bs.from_frame(_frame(), columns={"n_params": "Model Size", "n_tokens": "Model Size"})
    with pytest.raises(DataError, match=r"columns must be a mapping"):
        bs.from_frame(_frame(), columns=["Model Size"])  # type: ignore[arg-type]
    sweep = pd.DataFrame({"Examples": [1e3, 1e4, 1e5], "loss": [0.5, 0.4, 0.3]})
    assert bs.from_frame(sweep, columns={"data_size": "Examples"}).column("data_size")[0] == 1e3


def _runs(**columns) -> pd.DataFrame:
    base = {
        "n_params": [1e8, 4e8, 1.6e9, 6.4e9],
        "n_tokens": [2e9, 8e9, 3.2e10, 1.28e11],
        "loss": [3.2, 2.9, 2.6, 2.4],
    }
    return pd.DataFrame({**base, **columns})


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (_runs(n_params=[0.1, 0.4, 1.6, 6.4]), r"'n_params' is at most 6\.4: .*billions"),
        (_runs(loss=np.exp([3.2, 2.9, 2.6, 2.4]) * 10), r"every 'loss' is above 20.*perplexity"),
        (
            _runs(compute=[1.2e18, 1.92e19, 3.072e20, 4.9152e24]),
            r"'compute' is more than 10x away from 6 N D in 1 of 4 runs \(rows 3; C / 6ND = 1e\+03",
        ),
        (_runs(unique_tokens=[1e9, 1e10, 1e10, 1e10]), r"'unique_tokens' exceeds 'n_tokens' in 1"),
    ],
)
def test_implausible_runs_warn(frame, message):
    with pytest.warns(bs.PlausibilityWarning, match=message) as record:
        bs.from_frame(frame)
    assert record[0].filename == __file__


def test_plausible_runs_and_the_packages_data_do_not_warn(shared_data):
    from bayescale.io.datasets import list_datasets, load_dataset

    frames = [_runs(compute=6 * _runs()["n_params"] * _runs()["n_tokens"] * 3)]
    frames += [bs.simulate(law, seed=0) for law in bs.LAWS]
    names = list_datasets()
    names = list(names["name"]) if isinstance(names, pd.DataFrame) else list(names)
    frames += [load_dataset(name, data_dir=shared_data) for name in names]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for frame in frames:
            for _, group in frame.groupby("group") if "group" in frame else [(None, frame)]:
                bs.from_frame(group)


def test_a_sweep_of_toy_sizes_is_not_taken_for_billions():
    sweep = pd.DataFrame({"n_params": [100.0, 300.0, 900.0], "loss": [0.5, 0.4, 0.3]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bs.from_frame(sweep)


# ------------------------------------------------------------------------- hostile inputs


def test_booleans_and_dates_are_not_measurements():
    """Before: a bool loss column was fitted as 1.0, and dates became nanoseconds."""
    with pytest.raises(DataError, match=r"'loss' holds True/False values.*read as 1"):
        bs.from_frame(_runs(loss=[True, False, True, True]))
    with pytest.raises(DataError, match=r"'loss' holds True/False values"):
        bs.from_frame(_runs(loss=pd.Series([3.0, True, 2.6, 2.4], dtype=object)))
    dates = pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"])
    with pytest.raises(DataError, match=r"'n_params' holds dates or durations .*nanoseconds"):
        bs.from_frame(_runs(n_params=dates))
    with pytest.raises(DataError, match=r"'n_tokens' in `at` holds dates or durations"):
        read_points({"n_params": 1e9, "n_tokens": dates[:1]}, ("n_params", "n_tokens"))


def test_repeated_column_names_are_named():
    """Before: two columns of one name raised a TypeError from inside pandas."""
    frame = pd.DataFrame([[1e8, 2e9, 3.0, 3.1]], columns=["n_params", "n_tokens", "loss", "loss"])
    with pytest.raises(DataError, match=r"more than one column named loss.*Rename or drop"):
        bs.from_frame(frame)


def test_sizes_beyond_any_trained_model_warn_and_overflow_is_refused():
    """Before: a run with 1e300 tokens passed without a word."""
    with pytest.warns(
        bs.PlausibilityWarning, match=r"'n_tokens' is above 1e\+17 in 1 runs \(rows 3"
    ):
        bs.from_frame(_runs(n_tokens=[2e9, 8e9, 3.2e10, 1e20]))
    with pytest.warns(bs.PlausibilityWarning, match=r"'n_tokens' is above"):
        with pytest.raises(DataError, match=r"'compute' has 1 non-positive or non-finite .*rows 3"):
            bs.from_frame(_runs(n_tokens=[2e9, 8e9, 3.2e10, 1e300]))  # 6 N D overflows


def test_exact_duplicate_rows_warn_naming_them():
    """Before: a copied row was fitted as a second measurement without a word."""
    frame = pd.concat([_runs(), _runs().iloc[[1, 3]]], ignore_index=True)
    with pytest.warns(bs.PlausibilityWarning, match=r"2 runs repeat .*rows 4, 5 repeat rows 1, 3"):
        data = bs.from_frame(frame)
    assert data.n_runs == 6  # kept: repeated runs may be real
    with warnings.catch_warnings():  # a column that tells repeats apart: no warning
        warnings.simplefilter("error")
        bs.from_frame(frame.assign(seed=range(6)))


def test_group_labels_that_read_alike_are_refused():
    """Before: labels 1 and '1' were merged into one curve."""
    frame = _runs(group=pd.Series([1, "1", 2, 2], dtype=object))
    with pytest.raises(DataError, match=r"labels 1 \(int\), '1' \(str\) \(rows 0, 1\).*astype"):
        bs.from_frame(frame)
    assert bs.from_frame(_runs(group=["1", "1", "2", "2"])).table["group"].tolist()[0] == "1"


def test_missing_group_labels_are_named_or_dropped():
    """Before: a NaN group label crashed with a NumPy reduction error."""
    frame = _runs(group=["a", np.nan, "b", "b"])
    with pytest.raises(DataError, match=r"'group' has 1 missing labels \(rows 1\).*dropna=True"):
        bs.from_frame(frame)
    data = bs.from_frame(frame, dropna=True)
    assert data.table["group"].tolist() == ["a", "b", "b"]


def test_dropna_names_a_group_it_empties():
    """Before: fit_many(dropna=True) dropped a whole curve without saying so."""
    frame = _runs(group=["a", "a", "b", "b"], loss=[3.2, 2.9, np.nan, -1.0])
    with pytest.warns(bs.PlausibilityWarning, match=r"dropped every run of group\(s\) b"):
        data = bs.from_frame(frame, dropna=True)
    assert set(data.table["group"]) == {"a"}


def test_csv_with_comments_or_another_encoding(tmp_path):
    """Before: both got a misleading 'pass --sep' hint and there was no way to read them."""
    commented = tmp_path / "commented.csv"
    commented.write_text("# runs of my sweep\n# lr 3e-4, batch 256\n" + _runs().to_csv(index=False))
    with pytest.raises(DataError, match=r"comment='#' \(--comment '#' on the command line\)"):
        bs.from_frame(commented)
    assert bs.from_frame(commented, comment="#").n_runs == 4
    commented.write_text("# runs of my sweep\n" + _runs().to_csv(index=False))  # parses
    with pytest.raises(DataError, match=r"header looks like a comment line: .*comment='#'"):
        bs.from_frame(commented)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(_runs(note=["caf\xe9"] * 4).to_csv(index=False).encode("latin-1"))
    with pytest.raises(DataError, match=r"as UTF-8 text .*pass encoding='latin-1'"):
        bs.from_frame(latin)
    assert bs.from_frame(latin, encoding="latin-1").table["note"][0] == "caf\xe9"
    with pytest.raises(DataError, match=r"unknown encoding 'latin-9000'"):
        bs.from_frame(latin, encoding="latin-9000")


def test_a_csv_that_does_not_parse_names_the_delimiter(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("n_params;n_tokens;loss\n1e8;2e9;3.2\n1e9;2e10;2.8;7;8\n")
    with pytest.raises(DataError, match=r"check the delimiter \(read with ';'\): pass sep="):
        read_csv(bad, sep=";")


def test_points_share_the_runs_parser():
    """forecast, stacked_predictive and design read their points with `read_points`."""
    points = read_points({"n_params": [1e9, 2e9], "compute": 1.2e20}, ("n_params", "n_tokens"))
    np.testing.assert_allclose(points["n_tokens"], 1.2e20 / (6 * np.array([1e9, 2e9])))
    assert points.index.name == "point"
    with pytest.raises(DataError, match=r"'n_params' in candidates has 1 non-numeric values"):
        read_points(
            pd.DataFrame({"n_params": ["x"], "n_tokens": [1e9]}), ("n_params",), where="candidates"
        )

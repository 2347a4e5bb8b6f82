import warnings

import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale.errors import DataError


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
        bs.fit(_frame().rename(columns={"Model Size": "n_params"}), "chinchilla")


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

"""The backtest's split: what ``holdout`` may be, and what a split too small to fit says.

The backtest's fits and scores are tested with the misfit model (`tests/test_misfit.py`).
"""

from __future__ import annotations

import pytest

import bayescale as bs


@pytest.fixture(scope="module")
def ladder():
    """Nine IsoFLOP budgets (the level column), eight sizes each."""
    runs = bs.simulate("chinchilla", seed=4)
    return runs.assign(budget=runs["compute"])


@pytest.mark.parametrize(
    ("holdout", "error", "message"),
    [
        # before: -1 fitted the lowest level and scored the rest, without a word
        (-1, bs.OptionError, r"holdout must be a positive number of levels .*received -1"),
        # before: 0 said it "leaves 0 runs to fit", the opposite of what happened
        (0, bs.OptionError, r"holdout must be a positive number of levels .*received 0, which"),
        (9, bs.OptionError, r"fewer than the 9 levels of 'budget' .*between 1 and 8"),
        (2.5, bs.OptionError, r"holdout must be a fraction strictly between 0 and 1 .*2\.5"),
        (0.0, bs.OptionError, r"holdout must be a fraction strictly between 0 and 1"),
        (True, bs.OptionTypeError, r"holdout must be a fraction in \(0, 1\), .*received bool"),
        ([1], bs.OptionTypeError, r"received list"),
    ],
)
def test_holdout_is_checked_before_fitting(ladder, holdout, error, message):
    with pytest.raises(error, match=message):
        bs.backtest(ladder, holdout=holdout, models=("huber",))


def test_a_training_split_too_small_to_fit_says_it_is_the_training_split(ladder):
    """Before: 7 runs were reported as "5 runs" with no word that 5 was the training split."""
    runs = ladder.iloc[[0, 8, 16, 24, 32, 40, 48]]  # 7 runs at 7 budgets
    with pytest.raises(
        bs.DataError,
        match=r"training split: 5 of the 7 runs \(holdout=2 holds out the other 2\)\. "
        r"Fitting them: law 'chinchilla' has 5 parameters but the data has only 5 runs",
    ):
        bs.backtest(runs, holdout=2, models=("huber",))

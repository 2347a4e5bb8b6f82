"""`batch_diagnostics` gives arviz-stats' r_hat and ESS, computed over a batch at once."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bayescale.errors import OptionError
from bayescale.inference.diagnostics import batch_diagnostics


def _chains(seed: int, n_batch: int, n_chain: int, n_draw: int) -> np.ndarray:
    """AR(1) chains with per-row autocorrelation (negative to near 1) and chain offsets."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_batch, n_chain, n_draw), np.float32)
    for b in range(n_batch):
        phi = rng.uniform(-0.5, 0.99)
        noise = rng.standard_normal((n_chain, n_draw))
        y = np.zeros((n_chain, n_draw))
        for t in range(1, n_draw):
            y[:, t] = phi * y[:, t - 1] + noise[:, t]
        out[b] = y + rng.normal(size=(n_chain, 1)) * rng.uniform(0.0, 2.0)
    return out


def _arviz(values: np.ndarray) -> dict[str, np.ndarray]:
    import arviz_stats as azs
    import xarray as xr

    data = xr.Dataset({"v": (("row", "chain", "draw"), values)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "r_hat": azs.rhat(data)["v"].values,
            "ess_bulk": azs.ess(data, method="bulk")["v"].values,
            "ess_tail": azs.ess(data, method="tail")["v"].values,
        }


@pytest.mark.parametrize(("n_chain", "n_draw"), [(4, 500), (2, 7), (1, 100), (3, 51)])
def test_batch_diagnostics_match_arviz_stats(n_chain, n_draw):
    values = _chains(7, 24, n_chain, n_draw)
    values[1] = 1.0  # constant: ESS = size, r_hat NaN
    values[2, :, ::2] = 0.0  # ties
    values[3] = np.round(values[3])  # many ties
    values[4, 0, 0] = np.nan  # a NaN draw: NaN everywhere
    got = batch_diagnostics(values)
    want = _arviz(values)
    for name in ("r_hat", "ess_bulk", "ess_tail"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, equal_nan=True, err_msg=name)


def test_batch_diagnostics_do_not_modify_their_input_and_name_a_bad_shape():
    values = _chains(3, 2, 4, 50)
    before = values.copy()
    batch_diagnostics(values)
    np.testing.assert_array_equal(values, before)
    with pytest.raises(OptionError, match=r"\(batch, chain, draw\).*\(4, 50\)"):
        batch_diagnostics(values[0])
    with pytest.raises(OptionError, match="tail_prob"):
        batch_diagnostics(values, tail_prob=1.5)


def test_batch_diagnostics_of_a_large_batch_are_those_of_its_rows():
    """A batch above one chunk (its rows' chunks run on threads): each row's numbers are the
    numbers of that row alone."""
    values = _chains(11, 600, 4, 60)
    values[5] = 1.0
    values[300, 1, 2] = np.nan
    whole = batch_diagnostics(values)
    for rows in (slice(0, 100), slice(100, 299), slice(299, 600)):
        part = batch_diagnostics(values[rows])
        for name, got in part.items():
            np.testing.assert_array_equal(whole[name][rows], got, err_msg=name)

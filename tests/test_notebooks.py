"""Execute the research notebooks (fast mode) and pin their key numbers.

Each notebook ends with a ``key_numbers`` dict; the test appends one cell that prints it as JSON,
so a notebook cannot drift silently. Ranges are those of the issues (Epoch's published values
with their uncertainty), not the values the notebooks happened to produce.
"""

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def run_notebook(name: str, shared_data: Path, tmp_path: Path) -> dict:
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    book.cells.append(nbformat.v4.new_code_cell("import json; print(json.dumps(key_numbers))"))
    env_before = dict(os.environ)
    os.environ.update(BAYESCALE_FAST="1", BAYESCALE_DATA=str(shared_data), MPLBACKEND="Agg")
    try:
        NotebookClient(
            book,
            timeout=1200,  # per cell: notebook 05 fits 20 curves three ways in one cell
            kernel_name="python3",
            resources={"metadata": {"path": str(tmp_path)}},
        ).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    out = book.cells[-1].outputs
    text = "".join(o.get("text", "") for o in out if o.get("output_type") == "stream")
    return json.loads(text.strip().splitlines()[-1])


def test_quickstart(shared_data, tmp_path):
    k = run_notebook("01_quickstart", shared_data, tmp_path)
    assert k["max_r_hat"] <= 1.01
    assert 1.769 < k["E_median"] < 1.871  # Epoch's 95% bootstrap interval
    assert 0.47 < k["a_median"] < 0.55  # forecasting issue: Epoch a = 0.513 (SE 0.020)
    assert 15 < k["tokens_per_param_median"] < 40  # Epoch: median 25.7 over draws
    assert k["loss_70b_q5"] < 1.97 < k["loss_70b_q95"]  # Epoch's point value at 70B/1.4T


def test_extrapolation_risk(shared_data, tmp_path):
    k = run_notebook("02_extrapolation_risk", shared_data, tmp_path)
    assert k["epoch_heldout_runs"] == 80
    # the notebook's two claims about this backtest: median forecasts accurate to ~1% (< 2%),
    # and 90% intervals that under-cover the held-out runs (the law's misfit exceeds the noise)
    assert k["epoch_median_abs_rel_error"] < 0.02
    assert k["epoch_heldout_coverage_90"] < 0.9
    assert k["lang_curves"] == 3
    assert k["lang_median_rel_error"] < 0.1
    assert k["horizon_compute"] > 0
    # the same backtest with the law's misfit modelled (issue 9): it must cover more of the
    # held-out runs than the exact law does (measured 0.84 against 0.51 with 1000 draws)
    assert k["epoch_misfit_coverage_90"] > k["epoch_backtest_exact_coverage_90"]


def test_checking_new_runs(shared_data, tmp_path):
    k = run_notebook("03_checking_new_runs", shared_data, tmp_path)
    # 5 healthy runs simulated from the law: each is "as predicted" with probability 0.9, so
    # all 5 pass with probability 0.59 and at least 3 with probability 0.99 (error budget 1%)
    assert k["sim_healthy_as_predicted"] >= 3
    assert k["sim_broken_verdict"] == "worse than predicted"  # shifted by 5 predictive sds
    assert k["updated_runs"] == 240


def test_scaling_breaks(shared_data, tmp_path):
    k = run_notebook("04_scaling_breaks", shared_data, tmp_path)
    assert k["bnsl_n_breaks"] >= 1
    assert k["bnsl_broken_covers_held_out"] and not k["bnsl_power_law_covers_held_out"]
    assert k["sim_n_breaks"] >= 1
    assert k["sim_location_q5"] < k["sim_true_location"] < k["sim_location_q95"]


def test_experiment_design(shared_data, tmp_path):
    k = run_notebook("06_experiment_design", shared_data, tmp_path)
    # the design spends no more than the next IsoFLOP level ...
    assert k["flops_design"] <= k["flops_isoflop"] * (1 + 1e-9)
    # ... and both narrow the forecast at 100x the largest run, with the truth inside
    assert k["width_design"] < 0.75 * k["width_now"] and k["width_isoflop"] < k["width_now"]
    assert k["design_covers_truth"] and k["isoflop_covers_truth"]
    # the notebook's claim on this ladder: about as narrow as the IsoFLOP level for the same
    # FLOPs (one realisation; measured 0.099 against 0.101 in the full run, 0.096 against 0.117
    # in fast mode): within 15%
    assert k["width_design"] < 1.15 * k["width_isoflop"]
    # the design's expected width is within 30% of the width the refit obtained (one outcome)
    assert 0.7 < k["width_design"] / k["predicted_width_design"] < 1.3
    assert k["min_ess_of_picks"] > 50


def test_many_curves(shared_data, tmp_path):
    k = run_notebook("05_many_curves", shared_data, tmp_path)
    assert k["curves"] == 20 and k["held_out_rows"] == 342
    # every fit of the comparison converges (4 x 1000 + 1000 draws, in fast mode too)
    for pooling in ("none", "partial"):
        assert k[f"{pooling}_divergences"] == 0 and k[f"{pooling}_max_r_hat"] <= 1.01
    # the notebook's claims (issue 10): partial pooling's median error is no worse than the
    # per-curve fits' (10% slack for Monte Carlo error; measured 0.0066
    # against 0.0080) and its 90% intervals are closer to nominal (measured 0.85-0.87 against
    # 0.82). At 50% the notebook claims no gain (both 0.25-0.31; the per-curve figure
    # moved that much with starting points or machine: the exact law's misfit, issue 9), so
    # nothing is asserted there. One curve
    # through all 20 is far worse than either.
    assert k["partial_rel_error"] <= 1.1 * k["none_rel_error"]
    assert abs(k["partial_coverage_90"] - 0.9) <= abs(k["none_coverage_90"] - 0.9)
    assert k["complete_rel_error"] > 2 * max(k["partial_rel_error"], k["none_rel_error"])

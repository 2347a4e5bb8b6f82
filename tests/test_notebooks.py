"""The research notebooks: committed executed with their figures, and re-executed (fast mode).

The fast tests read the committed ``.ipynb`` files: every code cell ran, every cell that draws
holds its figure, and no saved output shows a progress widget or a ConvergenceWarning.

The slow tests execute each notebook in fast mode and pin its key numbers. Each notebook ends
with a ``key_numbers`` dict; the test appends one cell that prints it as JSON, so a notebook
cannot drift silently. Ranges are those of the issues (Epoch's published values with their
uncertainty), not the values the notebooks happened to produce.
"""

import json
import os
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
COMMITTED = sorted(NOTEBOOKS.glob("*.ipynb"))
#: a cell that draws: a bayescale plot, or a matplotlib figure made in the cell
DRAWS = re.compile(r"\bplots\.plot_\w+\(|\bplt\.(subplots|figure)\(")

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]
slow = pytest.mark.slow


def _code_cells(path: Path) -> list[dict]:
    book = json.loads(path.read_text(encoding="utf-8"))
    return [c for c in book["cells"] if c["cell_type"] == "code"]


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_notebooks_are_committed():
    assert [p.stem[:2] for p in COMMITTED] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_committed_executed_with_every_figure(path):
    cells = _code_cells(path)
    not_run = [i for i, c in enumerate(cells) if c.get("execution_count") is None]
    assert not not_run, f"{path.name}: code cells {not_run} were not executed"
    drawing = [(i, c) for i, c in enumerate(cells) if DRAWS.search(_source(c))]
    assert drawing, f"{path.name} draws nothing: the pattern of a plot cell is out of date"
    blank = [
        i
        for i, c in drawing
        if not any("image/png" in o.get("data", {}) for o in c.get("outputs", []))
    ]
    assert not blank, f"{path.name}: plot cells {blank} (code cell index) hold no figure"


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_committed_outputs_are_clean(path):
    book = json.loads(path.read_text(encoding="utf-8"))
    assert "widgets" not in book["metadata"], f"{path.name} stores widget state"
    for i, cell in enumerate(_code_cells(path)):
        for out in cell.get("outputs", []):
            assert "application/vnd.jupyter.widget-view+json" not in out.get("data", {}), (
                f"{path.name}: code cell {i} shows a progress widget; pass progress_bar=False"
            )
            text = json.dumps(out)
            assert "ConvergenceWarning" not in text, (
                f"{path.name}: code cell {i} shows a ConvergenceWarning; fix the fit's settings"
            )
            assert out.get("output_type") != "error", f"{path.name}: code cell {i} failed"


def run_notebook(name: str, shared_data: Path, tmp_path: Path) -> dict:
    from nbclient import NotebookClient

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


@slow
def test_quickstart(shared_data, tmp_path):
    k = run_notebook("01_quickstart", shared_data, tmp_path)
    assert k["max_r_hat"] <= 1.01
    assert 1.769 < k["E_median"] < 1.871  # Epoch's 95% bootstrap interval
    assert 0.47 < k["a_median"] < 0.55  # forecasting issue: Epoch a = 0.513 (SE 0.020)
    assert 15 < k["tokens_per_param_median"] < 40  # Epoch: median 25.7 over draws
    assert k["loss_70b_q5"] < 1.97 < k["loss_70b_q95"]  # Epoch's point value at 70B/1.4T


@slow
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


@slow
def test_checking_new_runs(shared_data, tmp_path):
    k = run_notebook("03_checking_new_runs", shared_data, tmp_path)
    # 5 healthy runs simulated from the law: each is "as predicted" with probability 0.9, so
    # all 5 pass with probability 0.59 and at least 3 with probability 0.99 (error budget 1%)
    assert k["sim_healthy_as_predicted"] >= 3
    assert k["sim_broken_verdict"] == "worse than predicted"  # shifted by 5 predictive sds
    assert k["updated_runs"] == 240


@slow
def test_scaling_breaks(shared_data, tmp_path):
    k = run_notebook("04_scaling_breaks", shared_data, tmp_path)
    assert k["bnsl_n_breaks"] >= 1
    assert k["bnsl_broken_covers_held_out"] and not k["bnsl_power_law_covers_held_out"]
    assert k["sim_n_breaks"] >= 1
    assert k["sim_location_q5"] < k["sim_true_location"] < k["sim_location_q95"]


@slow
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


@slow
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

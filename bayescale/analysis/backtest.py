"""Backtests: fit on the cheaper runs, forecast the expensive ones, count coverage.

``backtest(data, law, holdout=...) -> Backtest`` is the user's own calibration check of
extrapolation. It splits the runs in compute order (by a quantile, by named budget levels, or by
the data's own ``split`` column), fits each model on the cheaper part, forecasts the rest, and
scores the forecasts: the coverage of the 50/80/90% predictive intervals against nominal,
overall and by extrapolation distance (decades beyond the largest fitted value of the ordering
variable), and the median relative error of the predictive median. Models: the law with its
misfit (``"misfit"``), the exact law (``"exact"``) and the literature's Huber point fit
(``"huber"``, which has no intervals). Data with a ``group`` column is backtested per group
(curve) and pooled.
"""

from __future__ import annotations

import html
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayescale import options as opt
from bayescale.analysis.common import quantile_name, validate_levels
from bayescale.analysis.forecast import forecast
from bayescale.errors import ConvergenceWarning, DataError, OptionError, OptionTypeError
from bayescale.inference.fit import MCMC_METHODS, Fit, fit
from bayescale.io.data import ScalingData, from_frame
from bayescale.model.laws import Law, get_law
from bayescale.model.misfit import Misfit

__all__ = ["Backtest", "MODELS", "DISTANCE_BINS", "backtest"]

MODELS = ("misfit", "exact", "huber")
#: edges (decades beyond the fitted range) of the distance bins
DISTANCE_BINS = (0.0, 0.25, 0.5, 1.0, np.inf)


@dataclass(frozen=True)
class Backtest:
    """Scores of forecasts of held-out runs.

    Attributes
    ----------
    runs : pandas.DataFrame
        One row per (model, held-out run): ``model``, ``group``, the run's inputs, ``loss``,
        ``median``, interval bounds ``q<lo>``/``q<hi>`` per level, ``inside_<level>`` flags,
        ``rel_error`` ((median - loss) / loss) and ``distance`` (decades beyond the largest
        fitted value of the ordering variable).
    fits : pandas.DataFrame
        One row per (model, group): runs fitted and held out, divergences, the largest r_hat
        and the fit's problems.
    levels : tuple of float
        The interval levels scored.
    variable : str
        The ordering variable.
    """

    runs: pd.DataFrame
    fits: pd.DataFrame
    levels: tuple[float, ...]
    variable: str

    def summary(self) -> pd.DataFrame:
        """One row per model: coverage per level (pooled by run), median abs. relative error, n."""
        rows = {}
        for model, part in self.runs.groupby("model", sort=False):
            row: dict[str, Any] = {}
            for level in self.levels:
                row[f"coverage_{level * 100:g}"] = part[f"inside_{level * 100:g}"].mean()
            row["median_abs_rel_error"] = float(part["rel_error"].abs().median())
            row["n"] = len(part)
            fits = self.fits[self.fits["model"] == model]
            row["divergences"] = int(fits["divergences"].sum())
            row["max_r_hat"] = float(fits["max_r_hat"].max())
            rows[model] = row
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index.name = "model"
        return table

    def by_distance(self) -> pd.DataFrame:
        """Coverage per level and model in bins of extrapolation distance (decades)."""
        bins = pd.cut(self.runs["distance"], DISTANCE_BINS, right=False, include_lowest=True)
        cols = [f"inside_{lv * 100:g}" for lv in self.levels]
        groups = self.runs.groupby(["model", bins], observed=True)
        table = groups[cols].mean()
        table.columns = [c.replace("inside", "coverage") for c in cols]
        table["n"] = groups.size()
        return table

    def __repr__(self) -> str:
        lines = [f"Backtest({len(self.runs)} forecasts of held-out runs, by {self.variable})"]
        for model, row in self.summary().iterrows():
            cov = ", ".join(f"{lv:.0%}: {row[f'coverage_{lv * 100:g}']:.2f}" for lv in self.levels)
            lines.append(
                f"  {model:<7} coverage {cov}; median |rel. error| "
                f"{row['median_abs_rel_error']:.4f}; divergences {int(row['divergences'])}"
            )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(repr(self))}</pre>" + self.summary().to_html(
            float_format=lambda x: f"{x:.4g}"
        )


def backtest(
    data: pd.DataFrame | ScalingData,
    law: str | Law = "chinchilla",
    *,
    holdout: float | int | str = 1 / 3,
    budget_column: str = "budget",
    by: str | None = None,
    models: Sequence[str] = MODELS,
    levels: Sequence[float] = opt.LEVELS,
    variable: str | None = None,
    likelihood: str = "contaminated_t",
    misfit: Misfit | bool | None = None,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    seed: int = 0,
    columns: Mapping[str, str] | None = None,
    progress_bar: bool | None = None,
    levels_column: str | None = None,
) -> Backtest:
    """Backtest extrapolation: fit on the cheaper runs, forecast and score the rest.

    Parameters
    ----------
    data : DataFrame or ScalingData
        The runs (never modified). With a ``group`` column, each group (curve) is backtested
        on its own and the scores are pooled.
    law : str or Law, default "chinchilla"
        The law to fit.
    holdout : float, int or "split", default 1/3
        A fraction in (0, 1): hold out the runs above the ``1 - holdout`` quantile of ``by``.
        An integer k: hold out the runs of the top k values of ``budget_column`` (for example
        the IsoFLOP budget). ``"split"``: the data's ``split`` column (``fit`` /
        ``extrapolate``).
    budget_column : str, default "budget"
        The column whose top values an integer ``holdout`` holds out.
    by : str, optional
        The ordering variable; default ``compute`` when the data has it, else the law's one
        variable.
    models : sequence of {"misfit", "exact", "huber"}
        The models to score (see the module notes).
    levels : sequence of float, default (0.5, 0.8, 0.9, 0.99)
        Central predictive interval levels to count.
    variable : str, optional
        Scaling variable of one-variable laws.
    likelihood : str, default "contaminated_t"
        The run noise of the NUTS fits, as in `bayescale.inference.fit`.
    misfit : Misfit or bool, optional
        The settings of the ``"misfit"`` model (default ``bayescale.Misfit()``), for example
        ``bs.Misfit(p_exact=0.5)`` to backtest the exact-law-or-misfit mixture. As in
        `bayescale.fit`, True means ``bayescale.Misfit()``; False leaves the ``"misfit"``
        model out of ``models``.
    num_warmup, num_samples, seed
        NUTS settings of every fit.
    columns : mapping, optional
        Canonical name -> your column name.
    progress_bar : bool, optional
        As in `bayescale.inference.fit`.
    levels_column : str, optional
        Deprecated name of ``budget_column`` (``levels`` means interval probabilities).

    Returns
    -------
    Backtest

    Raises
    ------
    OptionError
        For an unknown model or an invalid ``holdout``.
    DataError
        If a split leaves no run to fit or none to score.
    """
    if levels_column is not None:  # budget_column has a default: the old name wins when given
        budget_column = opt.renamed(
            None, levels_column, verb="backtest", old="levels_column", new="budget_column",
            why="the column is now budget_column (levels means interval probabilities)",
        )  # fmt: skip
    levels_ = validate_levels(levels, 0.9)
    holdout = _check_holdout(holdout)
    seed = opt.seed(seed)
    num_warmup = opt.count(num_warmup, "num_warmup", minimum=0)
    num_samples = opt.count(num_samples, "num_samples")
    progress_bar = opt.optional_flag(progress_bar, "progress_bar")
    if misfit is not None and not isinstance(misfit, (Misfit, bool)):
        raise OptionTypeError(
            f"misfit must be a bayescale.Misfit, True, False or None; received "
            f"{type(misfit).__name__}: {misfit!r}. For example misfit=bs.Misfit(p_exact=0.5)."
        )
    misfit_given = misfit
    if misfit is False:
        models = [m for m in models if m != "misfit"]
    misfit = misfit if isinstance(misfit, Misfit) else Misfit()
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise OptionError(f"unknown models {unknown}; choose from {list(MODELS)}.")
    if not models:
        why = "misfit=False leaves models empty" if misfit_given is False else "models is empty"
        raise OptionError(
            f"no model to backtest ({why}); choose from {list(MODELS)}, for example "
            "models=('exact',)."
        )
    scaling = from_frame(data, columns=columns)
    law_ = get_law(law, variable=variable)
    table = scaling.table
    by_ = by or ("compute" if "compute" in table else law_.variables[0])
    scaling.column(by_)
    groups = table["group"] if "group" in table else pd.Series("all", index=table.index)
    run_rows, fit_rows = [], []
    for group, part in table.groupby(groups, sort=True):
        train, held = _split(part, holdout, by_, budget_column)
        if len(held) == 0 or len(train) == 0:
            raise DataError(
                f"the holdout {holdout!r} leaves {len(train)} runs to fit and {len(held)} to "
                f"score in group {group!r}; choose a split with runs on both sides."
            )
        top = float(np.log10(train[by_].max()))
        distance = np.maximum(np.log10(held[by_].to_numpy(np.float64)) - top, 0.0)
        drop = [c for c in ("group", "split") if c in part]
        for model in models:
            try:
                result, problems = _fit_model(
                    train.drop(columns=drop),
                    law_,
                    model,
                    likelihood,
                    misfit,
                    num_warmup,
                    num_samples,
                    seed,
                    progress_bar,
                )
            except DataError as exc:
                where = "" if group == "all" and "group" not in table else f" of group {group!r}"
                raise DataError(
                    f"the backtest fits the training split: {len(train)} of the {len(part)} "
                    f"runs{where} (holdout={holdout!r} holds out the other {len(held)}). "
                    f"Fitting them: {exc} Hold out fewer runs, or add cheaper ones."
                ) from exc
            fit_rows.append(_fit_row(result, model, group, len(train), len(held), problems))
            run_rows.append(_score(result, held, model, group, distance, levels_))
    runs = pd.concat(run_rows, ignore_index=True)
    return Backtest(runs, pd.DataFrame(fit_rows), levels_, by_)


def _split(
    part: pd.DataFrame, holdout: float | int | str, by: str, column: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    if isinstance(holdout, str):
        if holdout != "split" or "split" not in part:
            raise OptionError(
                f"holdout={holdout!r} needs a 'split' column with values 'fit' and "
                "'extrapolate'; pass a fraction (for example 1/3) or a number of budgets."
            )
        mask = part["split"].astype(str) != "fit"
    elif isinstance(holdout, int):
        if column not in part:
            raise OptionError(
                f"holdout={holdout} holds out the top values of {column!r}, which the "
                f"data lacks (columns: {list(part.columns)}); pass budget_column=<column>."
            )
        values = np.sort(part[column].unique())
        if holdout >= len(values):
            raise OptionError(
                f"holdout must be fewer than the {len(values)} values of {column!r} "
                f"(held out from the top); received {holdout}, which leaves none to fit. Pass "
                f"holdout between 1 and {len(values) - 1}, or a fraction such as holdout=1/3."
            )
        mask = part[column].isin(values[-holdout:])
    else:
        cut = part[by].quantile(1 - holdout)
        mask = part[by] > cut
    return part[~mask], part[mask]


def _check_holdout(holdout: Any) -> float | int | str:
    """``holdout`` checked: a fraction in (0, 1), a positive number of top budgets, or "split"."""
    fix = (
        "Pass a fraction of the runs in (0, 1) (holdout=1/3 holds out the top third), a "
        "number of top budgets to hold out (holdout=2), or holdout='split'."
    )
    if isinstance(holdout, str):
        return holdout
    if isinstance(holdout, (bool, np.bool_)) or not isinstance(holdout, numbers.Real):
        raise OptionTypeError(
            f"holdout must be a fraction in (0, 1), a number of budgets or 'split'; received "
            f"{type(holdout).__name__}: {holdout!r}. {fix}"
        )
    if isinstance(holdout, numbers.Integral):
        if holdout < 1:
            raise OptionError(
                f"holdout must be a positive number of budgets (an integer holdout counts the "
                f"top budgets held out); received {holdout!r}, which holds out none. {fix}"
            )
        return int(holdout)
    if not 0 < float(holdout) < 1:
        raise OptionError(
            f"holdout must be a fraction strictly between 0 and 1 (a float holdout is the share "
            f"of runs held out); received {holdout!r}. {fix}"
        )
    return float(holdout)


def _fit_model(
    train: pd.DataFrame,
    law: Law,
    model: str,
    likelihood: str,
    misfit: Misfit,
    num_warmup: int,
    num_samples: int,
    seed: int,
    progress_bar: bool | None,
) -> tuple[Fit, str]:
    """The fit of one model; convergence problems are recorded, not raised as warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        if model == "huber":
            result = fit(train, law, method="huber", seed=seed)
        else:
            result = fit(
                train,
                law,
                misfit=misfit if model == "misfit" else False,
                likelihood=likelihood,
                num_warmup=num_warmup,
                num_samples=num_samples,
                seed=seed,
                progress_bar=progress_bar,
            )
    problems = " ".join(str(w.message) for w in caught if w.category is ConvergenceWarning)
    return result, problems


def _fit_row(
    result: Fit, model: str, group: Any, n_fit: int, n_held: int, problems: str
) -> dict[str, Any]:
    stats = result.tree.children.get("sample_stats")
    divergences = int(stats["diverging"].values.sum()) if stats is not None else 0
    r_hat = np.nan
    if result.method in MCMC_METHODS:
        r_hat = float(result.summary()["r_hat"].max())
    return {
        "model": model,
        "group": group,
        "n_fit": n_fit,
        "n_held_out": n_held,
        "divergences": divergences,
        "max_r_hat": r_hat,
        "problems": problems,
    }


def _score(
    result: Fit,
    held: pd.DataFrame,
    model: str,
    group: Any,
    distance: np.ndarray,
    levels: tuple[float, ...],
) -> pd.DataFrame:
    inputs = list(result.law.variables)
    kind = "mean" if result.method == "huber" else "predictive"
    fc = forecast(result, held[inputs], kind=kind, seed=0, warn=False)
    draws = fc.draws["loss"].values.reshape(-1, len(held)).astype(np.float64)
    loss = held["loss"].to_numpy(np.float64)
    out = held[inputs].reset_index(drop=True).copy()
    out.insert(0, "group", group)
    out.insert(0, "model", model)
    out["loss"] = loss
    out["median"] = np.median(draws, axis=0)
    for level in levels:
        lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
        out[quantile_name((1 - level) / 2)] = lo
        out[quantile_name((1 + level) / 2)] = hi
        inside = (loss >= lo) & (loss <= hi)
        out[f"inside_{level * 100:g}"] = inside if kind == "predictive" else np.nan
    out["rel_error"] = (out["median"] - loss) / loss
    out["distance"] = distance
    return out

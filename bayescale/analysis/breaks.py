"""Break detection: how many breaks a scaling curve has, where, and how the exponent changes.

``detect_break(data, variable=...) -> BreakReport`` fits a power law with a floor and broken
power laws with one and two breaks (Caballero et al. 2023), scores them by PSIS-LOO and by
leave-future-out (`bayescale.compare`), and reports the number of breaks the evidence supports,
the posterior of each break location and of the exponents on either side.

References
----------
Caballero, Gupta, Rish and Krueger (2023), "Broken Neural Scaling Laws", ICLR,
arXiv:2210.14891.
"""

from __future__ import annotations

import html
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayescale import options as opt
from bayescale import streams
from bayescale.analysis.compare import (
    COMPARE_METHODS,
    density_problems,
    lfo_cutoffs,
    lfo_scores,
    loo_scores,
)
from bayescale.analysis.predict import predictive
from bayescale.errors import (
    ConvergenceWarning,
    DataError,
    LawError,
    OptionError,
    OptionTypeError,
    warn,
)
from bayescale.inference.diagnostics import convergence_problems
from bayescale.inference.driver import progress_bar as make_progress_bar
from bayescale.inference.driver import progress_default
from bayescale.inference.fit import Fit, fit
from bayescale.io.data import ScalingData, from_frame
from bayescale.model.build import OBS
from bayescale.model.laws import Law, get_law
from bayescale.model.misfit import Misfit
from bayescale.model.priors import Prior

__all__ = ["BreakReport", "BreakScreen", "detect_break"]


@dataclass(frozen=True)
class BreakReport:
    """Evidence for breaks in a scaling curve and the posterior of their locations.

    Attributes
    ----------
    n_breaks : int
        The number of breaks the evidence supports (0, 1 or 2), by the stated ``rule``.
    locations : pandas.DataFrame
        One row per break of the selected model (``break 1``, ...): ``median``, ``q5`` and
        ``q95`` of its location in the variable's units; ``exponent_before`` and
        ``exponent_after`` (posterior medians of the local power-law exponent on either side:
        ``c0 + c1 + ... + c_{i-1}`` and ``... + c_i``) with their ``_q5`` and ``_q95``. Empty
        when ``n_breaks`` is 0.
    comparison : pandas.DataFrame
        One row per number of breaks (index ``breaks``): LOO and LFO elpd, their differences to
        the best model with standard errors, diagnostics and ``selected`` (see `summary`).
    fits : mapping of int to Fit
        The fits, by number of breaks (0 is the power law).
    variable : str
        The scaling variable.
    rule : str
        The decision rule, in words, with its thresholds.
    """

    n_breaks: int
    locations: pd.DataFrame
    comparison: pd.DataFrame
    fits: Mapping[int, Fit]
    variable: str
    rule: str

    @property
    def fit(self) -> Fit:
        """The fit of the selected model."""
        return self.fits[self.n_breaks]

    def summary(self) -> pd.DataFrame:
        """The comparison table, one row per number of breaks.

        Columns: ``law``, ``n_params`` (with the noise scale); ``elpd_loo``, ``se_loo``,
        ``elpd_diff_loo`` (best LOO elpd minus this one), ``dse_loo``,
        ``elpd_loo_worst_chain``, ``p_loo``, ``max_pareto_k``, ``n_refits`` and
        ``warning_loo`` (True when the chains disagree about the per-run densities or runs
        keep a high Pareto k); the same for LFO (``elpd_lfo``, ``se_lfo``, ``elpd_diff_lfo``,
        ``dse_lfo``, ``elpd_lfo_worst_chain``, ``n_lfo`` runs scored, ``warning_lfo``); then
        ``problems`` (every diagnostic, in words) and ``selected``.
        """
        return self.comparison.copy()

    def problems(self) -> list[str]:
        """Diagnostic problems of the fits and estimates, one sentence each."""
        out = []
        for k, row in self.comparison.iterrows():
            if row["problems"]:
                out.append(f"{k} breaks: {row['problems']}")
        return out

    def curves(
        self,
        *,
        breaks: Sequence[int] | None = None,
        num: int = 200,
        ci_prob: float = 0.9,
        kind: str = "mean",
        seed: int = 0,
    ) -> pd.DataFrame:
        """Posterior bands of the fitted curves on a grid of the variable, for plotting.

        Parameters
        ----------
        breaks : sequence of int, optional
            Which models; default the power law and the selected broken law (the one-break
            law when no break is selected).
        num : int, default 200
            Grid points, log-spaced over the observed range.
        ci_prob : float, default 0.9
            Mass of the equal-tailed band.
        kind : {"mean", "predictive"}, default "mean"
            Band of the law's loss, or of a new run's loss (law and noise).
        seed : int, default 0
            Seed of the noise draws for ``kind="predictive"``.

        Returns
        -------
        DataFrame
            Long format: ``breaks``, the variable, ``median``, ``lower`` and ``upper``.
        """
        if kind not in ("mean", "predictive"):
            raise OptionError(f"unknown kind {kind!r}. Available: mean, predictive.")
        if breaks is None:
            breaks = (0, max(self.n_breaks, 1))
        x = self.fits[0].data.column(self.variable)
        grid = np.geomspace(x.min(), x.max(), num)
        points = ScalingData(pd.DataFrame({self.variable: grid, "loss": 1.0}))
        rng = streams.rng(seed, "break_predictive")
        lo, hi = (1 - ci_prob) / 2, (1 + ci_prob) / 2
        frames = []
        for k in breaks:
            fit = self.fits[k]
            pred = predictive(fit, points, rng=streams.rng(seed, "check_misfit"))
            mu = pred.sample(rng) if kind == "predictive" else pred.loc
            q = np.exp(np.quantile(mu, [0.5, lo, hi], axis=0))
            frames.append(
                pd.DataFrame(
                    {
                        "breaks": k,
                        self.variable: grid,
                        "median": q[0],
                        "lower": q[1],
                        "upper": q[2],
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)

    def __repr__(self) -> str:
        table = self.comparison
        lines = [
            f"BreakReport(variable={self.variable!r}, n_breaks={self.n_breaks}, "
            f"runs={self.fits[0].data.n_runs})"
        ]
        for k, row in table.iterrows():
            lines.append(
                f"  {k} breaks: LOO elpd {row['elpd_loo']:.1f} (diff {row['elpd_diff_loo']:.1f}"
                f" +- {row['dse_loo']:.1f}), LFO elpd {row['elpd_lfo']:.1f} (diff "
                f"{row['elpd_diff_lfo']:.1f} +- {row['dse_lfo']:.1f})"
                + ("  <- selected" if row["selected"] else "")
            )
        for name, row in self.locations.iterrows():
            lines.append(
                f"  {name}: {self.variable} = {row['median']:.4g} (90%: {row['q5']:.4g} to "
                f"{row['q95']:.4g}); exponent {row['exponent_before']:.3g} -> "
                f"{row['exponent_after']:.3g}"
            )
        problems = self.problems()
        lines.append("  WARNING: " + " ".join(problems) if problems else "  diagnostics: ok")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return (
            f"<pre>{html.escape(repr(self))}</pre>"
            + self.comparison.to_html(float_format=lambda x: f"{x:.4g}")
            + self.locations.to_html(float_format=lambda x: f"{x:.4g}")
        )


@dataclass(frozen=True)
class BreakScreen:
    """Break detection over many curves (``detect_break(..., group=...)``).

    Attributes
    ----------
    reports : mapping of str to BreakReport
        One report per curve, by its label (sorted).
    variable : str
        The scaling variable.
    group : str
        The column that named the curves.
    """

    reports: Mapping[str, BreakReport]
    variable: str
    group: str

    @property
    def groups(self) -> tuple[str, ...]:
        """The curves' labels."""
        return tuple(self.reports)

    def __getitem__(self, group: str) -> BreakReport:
        """The report of one curve."""
        if group not in self.reports:
            shown = ", ".join(list(self.reports)[:10])
            raise KeyError(f"no curve {group!r}; curves are {shown}.")
        return self.reports[group]

    def __len__(self) -> int:
        return len(self.reports)

    def summary(self) -> pd.DataFrame:
        """One row per curve (index: its label).

        Columns: ``runs``, ``max_breaks`` (the most breaks compared: fewer than asked for a
        curve too short for them, or where ``forward`` found no break), ``n_breaks``;
        ``loo_gain`` and ``lfo_gain`` (the elpd of the selected model minus the power law's,
        nats) with ``dse_loo`` and ``dse_lfo`` (the standard error of that difference);
        ``location``, ``location_q5`` and ``location_q95`` of the first break and
        ``exponent_before`` and ``exponent_after`` (posterior medians; NaN without a break);
        ``problems`` (every diagnostic, in words).
        """
        rows = {}
        for g, report in self.reports.items():
            k = report.n_breaks
            pointwise = report.comparison.attrs["pointwise"]
            row: dict[str, Any] = {
                "runs": report.fits[0].data.n_runs,
                "max_breaks": max(report.fits),
                "n_breaks": k,
            }
            for metric in ("loo", "lfo"):
                diff = pointwise[metric][:, k] - pointwise[metric][:, 0]
                row[f"{metric}_gain"] = float(diff.sum())
                row[f"dse_{metric}"] = float(np.sqrt(len(diff) * np.var(diff)))
            first = report.locations.iloc[0] if k else None
            for col, src in (
                ("location", "median"),
                ("location_q5", "q5"),
                ("location_q95", "q95"),
                ("exponent_before", "exponent_before"),
                ("exponent_after", "exponent_after"),
            ):
                row[col] = float(first[src]) if first is not None else math.nan
            row["problems"] = " ".join(report.problems())
            rows[g] = row
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index.name = self.group
        return table

    def __repr__(self) -> str:
        broken = [g for g, r in self.reports.items() if r.n_breaks]
        shown = ", ".join(broken[:8]) + (", ..." if len(broken) > 8 else "")
        troubled = sum(bool(r.problems()) for r in self.reports.values())
        return (
            f"BreakScreen(variable={self.variable!r}, curves={len(self.reports)}, "
            f"with a break: {len(broken)}{' (' + shown + ')' if broken else ''}; "
            f"with diagnostic problems: {troubled})"
        )

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(repr(self))}</pre>" + self.summary().to_html(
            float_format=lambda x: f"{x:.4g}"
        )


def detect_break(
    data: pd.DataFrame | ScalingData,
    *,
    variable: str = "n_params",
    max_breaks: int = 2,
    base: str | Law = "power_law",
    criterion: str = "loo",
    threshold_se: float = 2.0,
    threshold_nats: float = 4.0,
    cutoff: float | None = None,
    priors: Mapping[str, Prior] | None = None,
    likelihood: str = "contaminated_t",
    nu: float = 4.0,
    misfit: Misfit | bool | None = False,
    group: str | None = None,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 500,
    k_threshold: float = 0.7,
    max_refits: int = 2,
    forward: bool = True,
    target_accept: float = 0.9,
    seed: int = 0,
    columns: Mapping[str, str] | None = None,
    dropna: bool = False,
    progress_bar: bool | None = None,
) -> BreakReport | BreakScreen:
    """Find how many breaks a scaling curve has, where, and how the exponent changes.

    Fits a power law with a floor (``E + A x^-alpha``, no break) and broken power laws
    (Caballero et al. 2023) with 1 to ``max_breaks`` breaks, compares them by PSIS-LOO and by
    leave-future-out, and applies a stated rule.

    Parameters
    ----------
    data : DataFrame or ScalingData
        One run per row with ``variable`` and ``loss``; never modified.
    variable : str, default "n_params"
        The single scaling variable (any positive numeric column: ``n_params``,
        ``n_tokens``, ``compute``, ``data_size``, ...).
    max_breaks : {1, 2}, default 2
        The most breaks considered.
    base : str or Law, default "power_law"
        The law without a break. Breaks are defined for the power-law family only (the broken
        power law reduces to ``power_law`` without breaks); other laws raise a ValueError.
    criterion : {"loo", "lfo"}, default "loo"
        The elpd the rule is applied to. LOO (is there a break anywhere in these runs?) sees a
        break anywhere in the data; LFO (does modelling it improve forecasts of larger runs?)
        only one below the cutoff, and asks whether the broken law also extrapolates better:
        pass ``criterion="lfo"`` when deciding whether a break matters for a scale-up. Both
        are reported either way (see :doc:`/explanation/breaks`).
    threshold_se, threshold_nats : float, default 2 and 4
        The rule's margin (see Notes).
    cutoff : float, optional
        LFO cutoff in the variable's units (see `compare`); default 2/3 of the log range,
        moved up if needed so that more runs than the largest model has parameters (noise
        scale included) lie below it.
    priors : mapping, optional
        Priors by parameter name, applied to every model that has the parameter (for example
        ``{"c1": Prior("Normal", loc=0, scale=3)}`` for a steep break).
    likelihood, nu
        Noise model, as in `bayescale.fit`.
    misfit : Misfit, bool or None, default False
        Passed to `bayescale.fit` for every compared law. False (the default here, unlike
        `bayescale.fit`): the laws are compared as exact laws, since a break is the structured
        form of a misfit and a walk that can follow the bend inside the runs takes evidence
        from it. True or a `Misfit`: each law carries its own misfit, and the evidence says
        whether a break explains the runs better than a power law plus a misfit (see Notes and
        :doc:`/explanation/breaks`).
    group : str, optional
        A column that names each run's curve: every curve is analysed in this one call
        (sharing the compiled samplers: curves of up to 64 runs share one per law) and a
        `BreakScreen` is returned. A curve too short for ``max_breaks`` breaks is compared
        with as many as it supports (at least one).
    num_chains, num_warmup, num_samples : int, default 4, 500, 500
        NUTS settings of the fits, which start at the MAP (Laplace draws). The refits (exact
        LOO and LFO) score held-out runs only and draw half as many draws; the LOO refits
        start at the fit's draws and warm up for half as long.
    k_threshold : float, default 0.7
        Pareto k above which a run's LOO term is computed by an exact refit.
    max_refits : int, default 2
        Most exact LOO refits per model (the highest k first). The model with the most breaks
        is not refitted where even its PSIS elpd, optimistic at a high k, cannot change the
        answer (its ``problems`` say so).
    forward : bool, default True
        Fit the law with two breaks only where the one-break law is selected over the power
        law (forward selection: a curve where one break explains nothing is not given two);
        the comparison then has no row for two breaks. False fits every law up to
        ``max_breaks`` on every curve, for the evidence for each.
    target_accept : float, default 0.9
        NUTS target acceptance probability (above `bayescale.fit`'s 0.8: the floor and a slow
        exponent, and a sharp break, make curved posteriors).
    seed : int, default 0
        Seed of every fit.
    columns : mapping, optional
        Canonical name -> your column name.
    dropna : bool, default False
        Drop invalid runs instead of raising.
    progress_bar : bool, optional
        Show one progress bar for the whole analysis (every fit and refit of every curve);
        default in a terminal or a notebook.

    Returns
    -------
    BreakReport or BreakScreen
        A `BreakScreen` (one report per curve) when ``group`` is given.

    Raises
    ------
    DataError
        If ``variable`` or ``loss`` is missing or invalid, there are too few runs for the
        largest model (it has ``3 max_breaks + 4`` parameters with the noise scale), or the
        data holds several curves (a ``group`` column with more than one value) and
        ``group`` is not given.
    ValueError
        For an unknown ``criterion``, ``max_breaks`` outside {1, 2}, or a ``base`` other than
        the power law.

    Warns
    -----
    ConvergenceWarning
        When the reported parameters of the selected model (``c0``, the ``c_i`` and
        ``d_i``) did not converge, or when the decision rests on a model whose chains
        disagree (see Notes). Other problems (such as the unidentified second break of a
        two-break fit to a one-break curve, whose labels may swap between chains) are listed
        in the ``problems`` column without a warning.

    Notes
    -----
    Rule: ``n_breaks`` is the smallest ``k`` such that no model with more breaks has an elpd
    (by ``criterion``) higher than model ``k``'s by more than ``max(threshold_se * dse,
    threshold_nats)``, where ``dse`` is the standard error of the pointwise elpd difference
    of the two models. So a break is declared only when the broken law predicts held-out
    runs better than every simpler law by more than two standard errors and four nats.

    Reliability: the elpd of a model is made of its per-run (held-out) log densities. When
    their chains disagree (r_hat above 1.01 or bulk ESS below 400 for some run; see the
    ``warning_loo`` and ``warning_lfo`` columns), the model's evidence in the rule is the elpd
    of its worst chain alone (``elpd_loo_worst_chain``), so that a break is never declared on
    the strength of one lucky chain; a `ConvergenceWarning` says when this changed the
    answer. The posterior of a break location and of the exponents is reported from the
    selected model.

    Misfit: with ``misfit``, every compared law carries its misfit, and the rule compares the
    power law plus misfit with the broken laws plus misfit. A break is the structured form of
    a misfit: it wins where the departure from the power law is a change of slope that
    persists, which the misfit's walk can follow inside the runs but not continue beyond
    them (see :doc:`/explanation/breaks`).

    The false-alarm and detection rates measured over repeated simulated ladders
    (``tests/statistical/test_break_rates.py``) are on the explanation page.

    Examples
    --------
    >>> import bayescale as bs
    >>> runs = bs.simulate("broken_power_law", seed=0)
    >>> report = bs.detect_break(runs, variable="n_params")  # doctest: +SKIP
    >>> report.n_breaks  # doctest: +SKIP
    1
    """
    if criterion not in COMPARE_METHODS:
        raise OptionError(
            f"unknown criterion {criterion!r}. Available: {', '.join(COMPARE_METHODS)}."
        )
    if max_breaks not in (1, 2):
        raise OptionError(f"max_breaks must be 1 or 2; received {max_breaks!r}.")
    base_name = base.name if isinstance(base, Law) else str(base)
    if base_name != "power_law":
        raise LawError(
            f"break detection compares a power law with broken power laws, the only laws with "
            f"breaks; received base={base_name!r}. Use base='power_law' (with "
            f"variable=<your column>), or compare your own fits with bayescale.compare."
        )
    forward = opt.flag(forward, "forward")
    if group is not None and not isinstance(group, str):
        raise OptionTypeError(
            f"group must be the name of a column; received {type(group).__name__}: {group!r}. "
            "For example group='group'."
        )
    columns = {**(columns or {}), **({"group": group} if group is not None else {})}
    scaling = from_frame(data, columns=columns or None, dropna=dropna)
    laws = {0: get_law("power_law", variable=variable)}
    for k in range(1, max_breaks + 1):
        laws[k] = get_law("broken_power_law", variable=variable, breaks=k)
    known = {p.name for law in laws.values() for p in law.params} | {"sigma"}
    unknown = sorted(set(priors or {}) - known)
    if unknown:
        raise OptionError(
            f"priors name {unknown}, which are not parameters of the compared laws; "
            f"parameters are {sorted(known)}."
        )
    if group is None:
        scaling.require_one_curve(
            "breaks are found in one curve",
            "Pass group='group' to analyse every curve in one call.",
        )
        curves: dict[str | None, ScalingData] = {None: scaling}
    else:
        labels = scaling.table["group"].astype(str)
        curves = {
            g: ScalingData(scaling.table[labels == g].reset_index(drop=True), scaling.source)
            for g in sorted(labels.unique())
        }
    # a curve of a screen too short for max_breaks is analysed with the most it supports
    most = {}
    for g, curve in curves.items():
        k = max_breaks
        while g is not None and k > 1 and not _supports(curve, variable, laws[k], k):
            k -= 1
        _require_runs(curve, variable, laws[k], k, g)
        most[g] = k
    settings = {
        "num_chains": num_chains,
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "target_accept": target_accept,
        "seed": seed,
        "progress": False,  # the one bar below reports every fit and refit
    }
    options = {
        "priors": priors or {},
        "likelihood": likelihood,
        "nu": nu,
        "misfit": misfit,
        "criterion": criterion,
        "threshold_se": threshold_se,
        "threshold_nats": threshold_nats,
        "cutoff": cutoff,
        "k_threshold": k_threshold,
        "max_refits": max_refits,
        "forward": forward,
    }
    show = progress_default() if progress_bar is None else bool(progress_bar)
    # per curve and law: the fit, its LOO (with refits) and its LFO refits
    total = 3 * sum(k + 1 for k in most.values())
    reports, messages = {}, []
    with make_progress_bar(total, f"detect_break: 0 to {max_breaks} breaks", show) as bar:
        for g, curve in curves.items():
            if g is not None:
                bar.set_postfix_str(str(g), refresh=False)
            some = {k: law for k, law in laws.items() if k <= most[g]}
            report, message = _detect_one(curve, variable, some, settings, options, bar)
            reports[g] = report
            if message:
                messages.append(message if g is None else f"{g}: {message}")
    if messages:
        warn(
            "break detection may not be trustworthy: " + " ".join(messages) + " Increase "
            "num_warmup and num_samples, or set priors that identify the breaks.",
            ConvergenceWarning,
        )
    if group is None:
        return reports[None]
    return BreakScreen({str(g): r for g, r in reports.items()}, variable, group)


def _supports(curve: ScalingData, variable: str, law: Law, k: int) -> bool:
    """Whether ``curve`` has the runs and distinct values of ``variable`` for ``k`` breaks."""
    distinct = len(np.unique(curve.column(variable)))
    return curve.n_runs >= len(law.params) + 3 and distinct >= 3 + 3 * k


def _require_runs(
    curve: ScalingData, variable: str, largest: Law, max_breaks: int, group: str | None
) -> None:
    """Enough runs and distinct values of ``variable`` for the largest model."""
    where = "" if group is None else f"curve {group!r}: "
    try:
        curve.require((variable,), len(largest.params) + 1, largest.name)
    except DataError as exc:
        raise DataError(f"{where}{exc}") from None
    n_params = len(largest.params) + 1  # with the noise scale
    if curve.n_runs < n_params + 2:
        raise DataError(
            f"{where}{curve.n_runs} runs are too few for {max_breaks} breaks: the "
            f"{max_breaks}-break law has {n_params} parameters with the noise scale, and its "
            f"leave-future-out refit needs {n_params + 1} runs below the cutoff and one above "
            f"({n_params + 2} in all). Add runs, or pass max_breaks=1."
        )
    distinct = len(np.unique(curve.column(variable)))
    if distinct < 3 + 3 * max_breaks:
        raise DataError(
            f"{where}{variable!r} takes only {distinct} distinct values; {max_breaks} breaks "
            f"need at least {3 + 3 * max_breaks}. Pass max_breaks=1 or add runs at other values."
        )


def _detect_one(
    scaling: ScalingData,
    variable: str,
    laws: Mapping[int, Law],
    settings: Mapping[str, Any],
    options: Mapping[str, Any],
    bar: Any,
) -> tuple[BreakReport, str]:
    """The analysis of one curve: fits, LOO, LFO and the rule; returns its warning text."""
    priors = options["priors"]
    criterion = options["criterion"]
    threshold_se, threshold_nats = options["threshold_se"], options["threshold_nats"]
    # refits score held-out runs only, whose log densities need fewer draws than the
    # parameters of a fit; an exact LOO refit starts at the fit's draws (one run fewer moves
    # them little), so it also needs only half the warm-up. An LFO refit starts from the prior:
    # the fit's draws know the runs it must forecast, and a chain that kept its start would
    # carry them into the score
    draws = max(settings["num_samples"] // 2, 100)
    warm = {**settings, "num_warmup": max(settings["num_warmup"] // 2, 100), "num_samples": draws}
    cold = {**settings, "num_samples": draws}
    largest = len(laws[max(laws)].params) + 1
    var_cut = lfo_cutoffs(scaling, variable, options["cutoff"], largest + 1, minimum_train=True)
    fits: dict[int, Fit] = {}
    loo: dict[int, dict[str, Any]] = {}
    lfo: dict[int, dict[str, Any]] = {}
    top = max(laws)
    for k, law in laws.items():
        if options["forward"] and k >= 2:
            chosen, _ = _select(
                _break_table(fits, loo, lfo), criterion, threshold_se, threshold_nats
            )
            if chosen < k - 1:  # the law with one break fewer explains nothing more
                bar.update(3 * (top - k + 1))
                break
        names = {p.name for p in law.params} | {"sigma"}
        with warnings.catch_warnings():
            # convergence of each fit is judged below, by the per-run densities and by the
            # parameters the report gives (_break_warning), not by the fit's own warning
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits[k] = f = fit(
                scaling,
                law,
                priors={n: p for n, p in priors.items() if n in names},
                likelihood=options["likelihood"],
                nu=options["nu"],
                misfit=options["misfit"],
                init="map",
                seed=settings["seed"],
                num_chains=settings["num_chains"],
                num_warmup=settings["num_warmup"],
                num_samples=settings["num_samples"],
                target_accept=settings["target_accept"],
                progress_bar=False,
            )
        bar.update(1)
        loo[k] = loo_scores(
            f, options["k_threshold"], 0 if k == top else options["max_refits"], warm
        )
        if k == top and loo[k]["n_high_k"] and options["max_refits"]:
            skip = _refits_cannot_matter(loo, threshold_se, threshold_nats)
            if skip:
                loo[k]["problems"] = skip
            else:
                loo[k] = loo_scores(f, options["k_threshold"], options["max_refits"], warm)
        bar.update(1)
        lfo[k] = lfo_scores(f, variable, var_cut, cold)
        bar.update(1)
    table = _break_table(fits, loo, lfo)
    n_breaks, n_pooled = _select(table, criterion, threshold_se, threshold_nats)
    table["selected"] = table.index == n_breaks
    rule = (
        f"the fewest breaks whose {criterion.upper()} elpd is within max({threshold_se:g} x SE "
        f"of the difference, {threshold_nats:g} nats) of the best model's; a model whose "
        "chains disagree is judged by its worst chain"
        + (
            "; a law with k + 1 breaks is fitted only where the law with k breaks is selected "
            "over those with fewer"
            if options["forward"]
            else ""
        )
    )
    locations = _locations(fits[n_breaks], variable) if n_breaks else _locations(None, variable)
    message = _break_warning(table, fits, n_breaks, n_pooled, criterion)
    return BreakReport(n_breaks, locations, table, fits, variable, rule), message


def _refits_cannot_matter(
    loo: Mapping[int, Mapping[str, Any]], threshold_se: float, threshold_nats: float
) -> str:
    """Why the exact LOO refits of the model with the most breaks cannot change the answer.

    Its PSIS terms with a high Pareto k are optimistic (the leave-one-out posterior puts mass
    where the full one has few draws, and the run is predicted worse there), so an exact refit
    lowers its elpd. When even the optimistic elpd is within ``threshold_nats`` (the rule's
    smallest margin) of the model the simpler ones select, that model is selected whatever the
    refits give. Returns the explanation for the problems column, or '' when they may matter.
    """
    top = max(loo)
    simpler = sorted(k for k in loo if k != top)
    elpd = {k: float(loo[k]["elpd"].elpd) for k in loo}
    pointwise = np.stack(
        [np.asarray(loo[k]["elpd"].elpd_i.values, np.float64) for k in simpler], axis=1
    )
    table = pd.DataFrame(
        {
            "elpd_loo": [elpd[k] for k in simpler],
            "elpd_loo_worst_chain": [float(np.min(loo[k]["chains"])) for k in simpler],
            "warning_loo": [bool(loo[k]["k_left"]) for k in simpler],
        },
        index=simpler,
    )
    table.attrs["pointwise"] = {"loo": pointwise}
    chosen, _ = _select(table, "loo", threshold_se, threshold_nats)
    gain = elpd[top] - elpd[chosen]
    if gain > threshold_nats:
        return ""
    left = loo[top]["k_left"]
    return (
        f"{left} runs keep Pareto k above the threshold without exact refits: even their "
        f"optimistic PSIS terms leave this model {gain:.1f} nats from the {chosen}-break model "
        f"(the rule asks for more than {threshold_nats:g}), and a refit lowers them, so it "
        "cannot change the answer; this elpd is an upper estimate."
    )


def _pointwise_problems(fit: Fit) -> str:
    """Convergence of a fit's per-run log likelihoods: label-invariant, so it judges the elpd."""
    ll = fit.tree["log_likelihood"][OBS].values
    diverging = fit.tree["sample_stats"]["diverging"].values
    return density_problems(ll, diverging, "per-run log likelihoods")


def _break_table(
    fits: Mapping[int, Fit],
    loo: Mapping[int, Mapping[str, Any]],
    lfo: Mapping[int, Mapping[str, Any]],
) -> pd.DataFrame:
    ks = sorted(fits)
    pointwise = {k: _pointwise_problems(fits[k]) for k in ks}
    values = {
        "loo": np.stack([np.asarray(loo[k]["elpd"].elpd_i.values, np.float64) for k in ks], 1),
        "lfo": np.stack([lfo[k]["lpd"] for k in ks], axis=1),
    }
    columns = {name: _elpd_columns(v, name) for name, v in values.items()}
    rows = {}
    for col, k in enumerate(ks):
        fit = fits[k]
        param_problems = " ".join(fit.problems())
        problems = [
            f"fit: {param_problems}" if param_problems else "",
            pointwise[k],
            loo[k]["problems"],
            lfo[k]["problems"],
        ]
        rows[k] = {
            "law": fit.law.name,
            "n_params": len(fit.law.params) + 1,
            **{c: v[col] for c, v in columns["loo"].items()},
            "elpd_loo_worst_chain": float(np.min(loo[k]["chains"])),
            "p_loo": float(loo[k]["elpd"].p),
            "max_pareto_k": loo[k]["max_pareto_k"],
            "n_refits": loo[k]["n_refits"],
            "warning_loo": bool(pointwise[k] or loo[k]["k_left"]),
            **{c: v[col] for c, v in columns["lfo"].items()},
            "elpd_lfo_worst_chain": float(np.min(lfo[k]["chains"])),
            "n_lfo": values["lfo"].shape[0],
            "warning_lfo": bool(pointwise[k] or lfo[k]["problems"]),
            "problems": " ".join(p for p in problems if p),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "breaks"
    table.attrs["pointwise"] = values
    return table


def _elpd_columns(pointwise: np.ndarray, name: str) -> dict[str, np.ndarray]:
    """Elpd, its SE, and the difference (best minus this) with its SE."""
    n = pointwise.shape[0]
    totals = pointwise.sum(axis=0)
    diff = pointwise[:, [int(np.argmax(totals))]] - pointwise
    return {
        f"elpd_{name}": totals,
        f"se_{name}": np.sqrt(n * np.var(pointwise, axis=0)),
        f"elpd_diff_{name}": diff.sum(axis=0),
        f"dse_{name}": np.sqrt(n * np.var(diff, axis=0)),
    }


def _select(
    table: pd.DataFrame, metric: str, threshold_se: float, threshold_nats: float
) -> tuple[int, int]:
    """The number of breaks by the rule, and the number the pooled estimates alone give."""
    pointwise = table.attrs["pointwise"][metric]
    pooled = table[f"elpd_{metric}"].to_numpy()
    worst = table[f"elpd_{metric}_worst_chain"].to_numpy()
    cautious = np.where(table[f"warning_{metric}"].to_numpy(), np.minimum(pooled, worst), pooled)

    def rule(evidence: np.ndarray) -> int:
        for k in range(len(pooled)):
            beaten = False
            for j in range(k + 1, len(pooled)):
                dse = math.sqrt(len(pointwise) * np.var(pointwise[:, j] - pointwise[:, k]))
                margin = max(threshold_se * dse, threshold_nats)
                beaten |= evidence[j] - pooled[k] > margin
            if not beaten:
                return int(table.index[k])
        return int(table.index[-1])  # pragma: no cover - the last model is never beaten

    return rule(cautious), rule(pooled)


def _locations(fit: Fit | None, variable: str) -> pd.DataFrame:
    columns = ["median", "q5", "q95"]
    for side in ("exponent_before", "exponent_after"):
        columns += [side, f"{side}_q5", f"{side}_q95"]
    if fit is None:
        frame = pd.DataFrame(columns=columns, dtype=float)
        frame.index.name = "break"
        return frame
    d = fit.draws()
    k = int(fit.law.options["breaks"])
    slope = d["c0"].copy()
    rows = {}
    for i in range(1, k + 1):
        before = slope.copy()
        slope = slope + d[f"c{i}"]
        loc = d[f"d{i}"]
        row = dict(zip(columns[:3], _q(loc), strict=True))
        for side, v in (("exponent_before", before), ("exponent_after", slope)):
            row.update(dict(zip((side, f"{side}_q5", f"{side}_q95"), _q(v), strict=True)))
        rows[f"break {i}"] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")[columns]
    frame.index.name = "break"
    frame.attrs["variable"] = variable
    return frame


def _q(v: np.ndarray) -> list[float]:
    return [float(x) for x in np.quantile(v, [0.5, 0.05, 0.95])]


def _break_warning(
    table: pd.DataFrame, fits: Mapping[int, Fit], n_breaks: int, n_pooled: int, metric: str
) -> str:
    """The text of the `ConvergenceWarning` about one curve's decision ('' when none)."""
    messages = []
    if n_pooled != n_breaks:
        messages.append(
            f"the pooled {metric.upper()} estimates favour {n_pooled} breaks, but the chains "
            f"of that model disagree (see summary()['problems']); by its worst chain the "
            f"evidence supports {n_breaks}."
        )
    if n_breaks:
        reported = ["c0", *(f"{c}{i}" for i in range(1, n_breaks + 1) for c in "cd")]
        selected = _param_problems(fits[n_breaks], reported)
        if selected:
            messages.append(f"the selected {n_breaks}-break model: {selected}")
    return " ".join(messages)


def _param_problems(fit: Fit, names: Sequence[str]) -> str:
    return " ".join(convergence_problems(fit.tree, var_names=list(names)))

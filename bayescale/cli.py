"""The ``bayescale`` command line: a thin layer over the public API.

The CLI (unlike the library) configures JAX for speed before first use: four host devices so
that four chains run in parallel, and a persistent compilation cache under
``$BAYESCALE_CACHE`` (default ``~/.cache/bayescale``).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bayescale.errors import OptionError
from bayescale.likelihoods import LIKELIHOODS

__all__ = ["main"]


def _configure_jax(num_chains: int = 4) -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = (
            f"{flags} --xla_force_host_platform_device_count={num_chains}".strip()
        )
    import jax

    cache = Path(os.environ.get("BAYESCALE_CACHE", Path.home() / ".cache" / "bayescale")) / "jax"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    except OSError:  # a read-only home: run without the cache
        pass


def _columns(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise OptionError(
                f"--column expects canonical=yours, for example n_params='Model Size'; "
                f"received {pair!r}."
            )
        canon, user = pair.split("=", 1)
        out[canon.strip()] = user.strip().strip("'\"")
    return out


def _print_table(frame: Any, title: str) -> None:
    import pandas as pd

    with pd.option_context("display.width", 120, "display.max_columns", 20):
        print(f"\n{title}")
        print(frame.to_string(float_format=lambda x: f"{x:.4g}"))


def _progress(args: argparse.Namespace) -> bool | None:
    """The progress_bar option: off with --no-progress, else the library's default."""
    return False if getattr(args, "no_progress", False) else None


def _report_fit(result: Any) -> None:
    print(repr(result))
    _print_table(result.summary(), "Posterior summary (90% equal-tailed intervals)")
    problems = result.problems()
    print(
        "\nDiagnostics: "
        + ("; ".join(problems) if problems else "ok (no divergences, r_hat <= 1.01, ESS ok)")
    )


def _cmd_fit(args: argparse.Namespace) -> int:
    import bayescale as bs

    result = bs.fit(
        args.data,
        args.law,
        columns=_columns(args.column),
        method=args.method,
        likelihood=args.likelihood,
        misfit=True if args.misfit else None,
        num_chains=args.chains,
        num_warmup=args.warmup,
        num_samples=args.samples,
        seed=args.seed,
        variable=args.variable,
        breaks=args.breaks,
        dropna=args.dropna,
        progress_bar=_progress(args),
    )
    print(repr(result.priors))
    _report_fit(result)
    if args.out:
        path = result.save(args.out)
        print(f"\nSaved the fit to {path}")
    return 0


def _points(args: argparse.Namespace) -> Any:
    import pandas as pd

    if args.points:
        return pd.read_csv(args.points)
    given = {
        k: v
        for k, v in (
            ("n_params", args.n_params),
            ("n_tokens", args.n_tokens),
            ("compute", args.compute),
            ("unique_tokens", args.unique_tokens),
        )
        if v
    }
    if not given:
        raise OptionError(
            "no points to forecast: pass --n-params and --n-tokens (or --compute), or a CSV "
            "of points with --points."
        )
    lengths = {len(v) for v in given.values()}
    if len(lengths) > 1 and 1 not in lengths:
        raise OptionError(
            f"the point options have different lengths: { {k: len(v) for k, v in given.items()} }."
        )
    n = max(lengths)
    return pd.DataFrame({k: v * n if len(v) == 1 else v for k, v in given.items()})


def _save_plot(draw: Any, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bayescale.demo import save_figure

    fig, ax = plt.subplots(figsize=(7, 5))
    draw(ax)
    save_figure(fig, Path(path))
    print(f"\nPlot written to {path}")


def _cmd_forecast(args: argparse.Namespace) -> int:
    import bayescale as bs
    from bayescale import plots

    result = bs.forecast(bs.load_fit(args.fit), _points(args), kind=args.kind, seed=args.seed)
    _print_table(result.summary(target=args.target), f"Forecast ({args.kind}, 90% intervals)")
    if args.plot:
        _save_plot(lambda ax: plots.plot_forecast(result, ax=ax), args.plot)
    return 0


def _cmd_allocate(args: argparse.Namespace) -> int:
    import bayescale as bs
    from bayescale import plots

    fit = bs.load_fit(args.fit)
    result = bs.compute_optimal(
        fit,
        args.compute,
        unique_tokens=args.unique_tokens,
        flops_per_param_token=args.flops_per_param_token,
    )
    _print_table(result.summary(), "Compute-optimal allocation (median and 90% interval)")
    _print_table(result.exponents_summary(), "Allocation exponents: N_opt ~ C^a, D_opt ~ C^b")
    if args.target is not None:
        _print_table(
            bs.compute_for_loss(fit, args.target).summary(), f"Compute to reach loss {args.target}"
        )
    if args.plot:
        _save_plot(lambda ax: plots.plot_allocation(result, ax=ax), args.plot)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    import bayescale as bs
    from bayescale import plots

    result = bs.check(bs.load_fit(args.fit), args.runs, columns=_columns(args.column))
    table = result.summary()
    cols = [
        c
        for c in table.columns
        if c
        in (*result.variables, "loss", "median", "q5", "q95", "pit", "z", "p_two_sided", "verdict")
    ]
    _print_table(table[cols], "New runs against the posterior predictive (90% intervals)")
    _print_table(result.coverage, "Interval coverage")
    cal = result.calibration
    print(
        f"\nPIT calibration: {cal['test']} statistic {cal['statistic']:.3g}, "
        f"p = {cal['p_value']:.3g} (n = {cal['n']})"
    )
    if args.plot:
        _save_plot(lambda ax: plots.plot_check(result, ax=ax), args.plot)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import bayescale as bs

    fits = {Path(p).stem: bs.load_fit(p) for p in args.fits}
    if len(fits) != len(args.fits):
        raise OptionError(f"fit files need distinct names; received {args.fits}.")
    _print_table(
        bs.compare(fits, method=args.method, cutoffs=args.cutoff),
        f"Model comparison ({args.method.upper()}; best first)",
    )
    return 0


def _cmd_breaks(args: argparse.Namespace) -> int:
    import bayescale as bs
    from bayescale import plots

    report = bs.detect_break(
        args.data,
        variable=args.variable,
        max_breaks=args.max_breaks,
        columns=_columns(args.column),
        num_chains=args.chains,
        num_warmup=args.warmup,
        num_samples=args.samples,
        seed=args.seed,
        progress_bar=_progress(args),
    )
    print(repr(report))
    _print_table(report.summary().drop(columns=["problems"]), "Evidence by number of breaks")
    if len(report.locations):
        _print_table(report.locations, "Break locations and exponents (median, 90% interval)")
    if args.plot:
        _save_plot(lambda ax: plots.plot_break(report, ax=ax), args.plot)
    return 0


def _holdout(text: str) -> float | int | str:
    """--holdout: 'split', an integer number of levels, or a fraction."""
    if text == "split":
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise OptionError(
            f"--holdout takes a fraction (0.33), a number of levels (1) or 'split'; received "
            f"{text!r}."
        ) from None


def _cmd_backtest(args: argparse.Namespace) -> int:
    import bayescale as bs
    from bayescale import plots

    result = bs.backtest(
        args.data,
        args.law,
        holdout=_holdout(args.holdout),
        levels_column=args.levels_column,
        models=args.model or bs.backtest.__kwdefaults__["models"],
        variable=args.variable,
        columns=_columns(args.column),
        num_warmup=args.warmup,
        num_samples=args.samples,
        seed=args.seed,
        progress_bar=_progress(args),
    )
    print(repr(result))
    _print_table(result.summary(), "Coverage of held-out runs (pooled by run)")
    _print_table(result.by_distance(), "Coverage by decades beyond the fitted runs")
    if args.plot:
        _save_plot(lambda ax: plots.plot_backtest(result, ax=ax), args.plot)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from bayescale import demo
    from bayescale.testing import TRUTHS

    truth = TRUTHS["chinchilla"]
    runs = demo.demo_data(args.seed)
    print("bayescale demo -- SYNTHETIC DATA")
    print(
        f"{len(runs)} synthetic training runs simulated from Epoch's published Chinchilla fit\n"
        f"(E={truth['E']}, A={truth['A']}, B={truth['B']}, alpha={truth['alpha']}, "
        f"beta={truth['beta']}) on an IsoFLOP ladder: 9 budgets from 6e18 to 3e21 FLOP,\n"
        f"8 model sizes each ({runs.n_params.min():.2g} to {runs.n_params.max():.2g} params), "
        "Student-t noise (scale 0.01) on log loss.\n"
    )
    result = demo.run(
        Path(args.out),
        num_warmup=args.warmup,
        num_samples=args.samples,
        num_chains=args.chains,
        seed=args.seed,
        progress_bar=_progress(args),
    )
    _print_demo(result, truth)
    return 0


def _print_demo(result: Any, truth: dict[str, float]) -> None:
    import numpy as np
    import pandas as pd

    from bayescale.demo import TARGET

    fit = result.fit
    print(repr(fit.priors))
    print()
    print(repr(fit))
    summary = fit.summary()
    truth_sigma = {**truth, "sigma": 0.01}  # the simulated noise scale on log loss
    summary.insert(0, "truth", [truth_sigma.get(k, np.nan) for k in summary.index])
    _print_table(summary, "Posterior of L(N, D) = E + A / N^alpha + B / D^beta (90% intervals)")
    point = result.huber.summary()["mean"]
    print("\nThe literature's point fit (Huber, delta=1e-3, L-BFGS from Epoch's 4500-start grid):")
    print("  " + ", ".join(f"{k}={point[k]:.4g}" for k in point.index))
    row = result.target
    print(
        f"\nForecast for N = {TARGET['n_params']:.3g} params, D = {TARGET['n_tokens']:.3g} tokens"
        f" (Chinchilla's size; {row['decades_beyond']:.2g} decades beyond the ladder):"
    )
    print(
        f"  predictive loss median {row['median']:.4f}, 90% interval [{row['q5']:.4f}, "
        f"{row['q95']:.4f}], relative width {row['rel_width']:.2%}"
    )
    for note in result.notes:
        print(f"  note: {note}")
    print(
        f"  the 90% predictive interval stays narrower than 5% of the median up to "
        f"C = {result.horizon.compute:.3g} FLOP along the compute-optimal path"
    )
    table = result.allocation.summary()
    readable = pd.DataFrame({"compute (FLOP)": [f"{c:.3g}" for c in table["compute"]]})
    for name, label in (
        ("n_params", "N_opt"),
        ("n_tokens", "D_opt"),
        ("tokens_per_param", "tokens/param"),
        ("loss", "loss at optimum"),
    ):
        readable[label] = [
            f"{m:.3g} [{lo:.3g}, {hi:.3g}]"
            for m, lo, hi in zip(
                table[f"{name}_median"], table[f"{name}_q5"], table[f"{name}_q95"], strict=True
            )
        ]
    print("\nCompute-optimal allocation (posterior median [90% interval] per budget):")
    print(readable.to_string(index=False))
    ex = result.allocation.exponents_summary()
    print(
        f"  N_opt ~ C^a with a = {ex.loc['a', 'median']:.3f} [{ex.loc['a', 'q5']:.3f}, "
        f"{ex.loc['a', 'q95']:.3f}]; D_opt ~ C^b with b = {ex.loc['b', 'median']:.3f}"
    )
    print("\nPlots written to " + str(Path(result.plots[0]).parent.resolve()) + ":")
    for path in result.plots:
        print(f"  {Path(path).name}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bayescale`` command."""
    parser = argparse.ArgumentParser(
        prog="bayescale", description="Bayesian inference for neural scaling laws."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def sampling(p: argparse.ArgumentParser, warmup: int = 1000, samples: int = 1000) -> None:
        p.add_argument("--chains", type=int, default=4, help="NUTS chains (default 4)")
        p.add_argument("--warmup", type=int, default=warmup, help=f"warm-up draws ({warmup})")
        p.add_argument("--samples", type=int, default=samples, help=f"draws a chain ({samples})")
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        p.add_argument(
            "--no-progress", action="store_true", help="no progress bar (default: in terminals)"
        )

    p = sub.add_parser("fit", help="fit a law to a CSV of training runs")
    p.add_argument("data", help="CSV file, one run per row")
    p.add_argument("--law", default="chinchilla", help="law name (default chinchilla)")
    p.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="CANON=YOURS",
        help="map a canonical column to yours, e.g. n_params='Model Size'",
    )
    p.add_argument("--method", default="nuts", choices=["nuts", "map", "huber"])
    p.add_argument("--likelihood", default="student_t", choices=list(LIKELIHOODS))
    p.add_argument(
        "--misfit", action="store_true", help="model the law's own misfit (wider far forecasts)"
    )
    p.add_argument("--variable", default=None, help="scaling variable of one-variable laws")
    p.add_argument("--breaks", type=int, default=None, help="breaks of broken_power_law")
    p.add_argument("--dropna", action="store_true", help="drop invalid runs")
    p.add_argument("--out", default=None, help="write the fit to this netCDF file")
    sampling(p)
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("forecast", help="forecast the loss at new points from a saved fit")
    p.add_argument("fit", help="a fit written by 'bayescale fit --out'")
    p.add_argument("--n-params", type=float, action="append", help="N of a point (repeatable)")
    p.add_argument("--n-tokens", type=float, action="append", help="D of a point (repeatable)")
    p.add_argument("--compute", type=float, action="append", help="C of a point (repeatable)")
    p.add_argument("--unique-tokens", type=float, action="append", help="U of a point")
    p.add_argument("--points", default=None, help="CSV of points (canonical columns)")
    p.add_argument("--kind", default="predictive", choices=["predictive", "mean"])
    p.add_argument("--target", type=float, default=None, help="report P(loss < target)")
    p.add_argument("--plot", default=None, help="write a fan chart to this PNG")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_forecast)

    p = sub.add_parser("allocate", help="compute-optimal N and D for budgets from a saved fit")
    p.add_argument("fit", help="a fit written by 'bayescale fit --out'")
    p.add_argument(
        "--compute",
        type=float,
        action="append",
        required=True,
        help="a compute budget in FLOP (repeatable)",
    )
    p.add_argument(
        "--unique-tokens",
        type=float,
        default=None,
        help="unique-token budget (data-constrained law)",
    )
    p.add_argument("--flops-per-param-token", type=float, default=6.0)
    p.add_argument("--target", type=float, default=None, help="also: compute to reach this loss")
    p.add_argument("--plot", default=None, help="write N_opt(C), D_opt(C) to this PNG")
    p.set_defaults(func=_cmd_allocate)

    p = sub.add_parser("check", help="check new runs against a saved fit's predictions")
    p.add_argument("fit", help="a fit written by 'bayescale fit --out'")
    p.add_argument("runs", help="CSV of the new runs")
    p.add_argument("--column", action="append", default=[], metavar="CANON=YOURS")
    p.add_argument("--plot", default=None, help="write the runs against their intervals (PNG)")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("compare", help="compare saved fits of several laws (LOO or LFO)")
    p.add_argument("fits", nargs="+", help="two or more fits written by 'bayescale fit --out'")
    p.add_argument("--method", default="loo", choices=["loo", "lfo"])
    p.add_argument(
        "--cutoff",
        type=float,
        action="append",
        default=None,
        help="LFO: fit below this value of the variable (repeatable)",
    )
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("breaks", help="detect breaks in a scaling curve")
    p.add_argument("data", help="CSV file, one run per row")
    p.add_argument("--variable", default="n_params", help="the scaling variable (n_params)")
    p.add_argument("--max-breaks", type=int, default=2, choices=[1, 2])
    p.add_argument("--column", action="append", default=[], metavar="CANON=YOURS")
    p.add_argument("--plot", default=None, help="write the data, both models and the break (PNG)")
    sampling(p, warmup=500, samples=500)
    p.set_defaults(func=_cmd_breaks)

    p = sub.add_parser(
        "backtest", help="fit on the cheaper runs, forecast the rest, count coverage"
    )
    p.add_argument("data", help="CSV file, one run per row")
    p.add_argument("--law", default="chinchilla", help="law name (default chinchilla)")
    p.add_argument("--column", action="append", default=[], metavar="CANON=YOURS")
    p.add_argument(
        "--holdout",
        default="0.3333333333333333",
        help="fraction of the top of compute (default 1/3), number of top levels, or 'split'",
    )
    p.add_argument("--levels-column", default="budget", help="levels for an integer --holdout")
    p.add_argument("--model", action="append", choices=["misfit", "exact", "huber"])
    p.add_argument("--variable", default=None, help="scaling variable of one-variable laws")
    p.add_argument("--plot", default=None, help="write coverage against nominal (PNG)")
    sampling(p)
    p.set_defaults(func=_cmd_backtest)

    p = sub.add_parser("demo", help="fit, forecast and allocate on an embedded synthetic ladder")
    p.add_argument("--out", default="bayescale_demo", help="folder for the plots (bayescale_demo)")
    sampling(p)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bayescale`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    _configure_jax(getattr(args, "chains", 4))
    from bayescale.errors import (
        BayescaleError,
        ConvergenceWarning,
        ExtrapolationWarning,
        PlausibilityWarning,
    )

    def show(message: Any, category: Any, *_: Any, **__: Any) -> None:
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show
    for category in (ConvergenceWarning, ExtrapolationWarning, PlausibilityWarning):
        warnings.simplefilter("always", category)
    try:
        return int(args.func(args))
    except (BayescaleError, ValueError, OSError) as exc:
        print(f"bayescale: error: {exc}".replace("\n", " "), file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

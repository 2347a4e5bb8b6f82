"""The ``bayescale`` command line: a thin layer over the public API.

The CLI (unlike the library) configures JAX for speed before first use: four host devices so
that four chains run in parallel, and a persistent compilation cache under
``$BAYESCALE_CACHE`` (default ``~/.cache/bayescale``), or JAX's own
``$JAX_COMPILATION_CACHE_DIR`` where that is set.

For scripts: every verb takes ``--format table|csv|json`` (CSV: the verb's main table; JSON:
every table as ``{name: [rows]}``) and ``--quiet`` (no report text, no progress bar); the verbs
that print tables but write no other file take ``--out`` for them. Output paths (``--out``,
``--plot``) are checked before any fitting. CSV inputs have their delimiter sniffed among
``, ; tab |``, or set with ``--sep``; ``--encoding`` and ``--comment`` read other files.
``bayescale --version`` prints the version.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bayescale.errors import OptionError
from bayescale.model.likelihoods import LIKELIHOODS

__all__ = ["main"]


def _configure_jax(num_chains: int = 4) -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = (
            f"{flags} --xla_force_host_platform_device_count={num_chains}".strip()
        )
    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # the user's own JAX cache, read by JAX
        return
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


FORMATS = ("table", "csv", "json")


class _Output:
    """Where the CLI writes: report text, the result tables and file notices.

    ``--format table`` prints titled text tables (and the report around them); ``csv`` writes
    the verb's main table as CSV, ``json`` every table as ``{name: [records]}``. The tables go
    to ``--out`` (written atomically) where the verb has one for them, else to stdout; when
    CSV or JSON goes to stdout, report text goes to stderr so that stdout parses. ``--quiet``
    drops the report text and the progress bar; errors and warnings still go to stderr.
    """

    def __init__(self, args: argparse.Namespace, table_path: str | None = None) -> None:
        self.fmt: str = getattr(args, "format", "table")
        self.quiet: bool = getattr(args, "quiet", False)
        self.path = table_path
        self.tables: dict[str, tuple[str, Any]] = {}
        data_on_stdout = self.path is None and self.fmt != "table"
        self.stream = sys.stderr if data_on_stdout else sys.stdout

    def say(self, text: str) -> None:
        """Report text: to stdout (stderr when CSV or JSON goes to stdout); none if quiet."""
        if not self.quiet:
            print(text, file=self.stream)

    def table(self, name: str, frame: Any, title: str) -> None:
        """Record a result table; ``--format table`` to stdout also prints it now."""
        self.tables[name] = (title, frame)
        if self.fmt == "table" and self.path is None:
            print(_text_table(frame, title))

    def finish(self) -> None:
        """Write the recorded tables in the chosen format, to ``--out`` or stdout."""
        if self.fmt == "table" and self.path is None:
            return
        if self.fmt == "table":
            text = "\n".join(_text_table(f, t) for t, f in self.tables.values()) + "\n"
        elif self.fmt == "csv":
            text = next(iter(self.tables.values()))[1].to_csv()
        else:
            text = _json_tables({k: f for k, (_, f) in self.tables.items()})
        if self.path is None:
            sys.stdout.write(text)
        else:
            _write_text(Path(self.path), text)
            self.say(f"\nTables written to {self.path}")


def _text_table(frame: Any, title: str) -> str:
    import pandas as pd

    with pd.option_context("display.width", 120, "display.max_columns", 20):
        return f"\n{title}\n" + frame.to_string(float_format=lambda x: f"{x:.4g}")


def _json_tables(tables: dict[str, Any]) -> str:
    import json

    out = {}
    for name, frame in tables.items():
        flat = frame.reset_index() if frame.index.name is not None else frame
        out[name] = json.loads(flat.to_json(orient="records", double_precision=15))
    return json.dumps(out, indent=1) + "\n"


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically; errors name ``path``, not the temporary file."""
    from bayescale.files import atomic_write

    atomic_write(path, text.encode("utf-8"))


def _check_writable(
    path: str | None, option: str, *, folder: bool = False, example: str = "tables.csv"
) -> None:
    """Refuse, before any work, an output path that cannot be written (`check_path`)."""
    if path is None:
        return
    from bayescale.files import check_path

    check_path(path, option=option, folder=folder, example=example)


def _read_csv(path: str, args: argparse.Namespace) -> Any:
    """Read a CSV of runs or points with ``--sep`` (else sniffed), ``--encoding``, ``--comment``.

    The library's one reader (`bayescale.data.read_csv`): sniffing considers ``,`` ``;`` tab
    and ``|`` only (never a space, which column names such as ``Model Size`` contain).
    """
    from bayescale.io.data import read_csv

    return read_csv(
        path,
        sep=getattr(args, "sep", None),
        encoding=getattr(args, "encoding", None),
        comment=getattr(args, "comment", None),
    )


def _positive(values: Sequence[float] | float | None, option: str) -> None:
    """Refuse a non-positive or non-finite number given to ``option``, naming it."""
    import math

    listed = [] if values is None else values if isinstance(values, list) else [values]
    for v in listed:
        if not (math.isfinite(v) and v > 0):
            raise OptionError(f"{option} must be a positive, finite number; received {v:g}.")


#: a negative number, which argparse would take for an option (it knows -7 but not -7e10)
_NEGATIVE = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^-(inf|nan)$", re.IGNORECASE)


def _join_negative_values(argv: Sequence[str]) -> list[str]:
    """``--opt -7e10`` as ``--opt=-7e10``, so that the value reaches the option's check."""
    out: list[str] = []
    for token in argv:
        prev = out[-1] if out else ""
        if _NEGATIVE.match(token) and prev.startswith("--") and "=" not in prev:
            out[-1] = f"{prev}={token}"
        else:
            out.append(token)
    return out


def _progress(args: argparse.Namespace) -> bool | None:
    """The progress_bar option: off with --no-progress or --quiet, else the library's default."""
    if getattr(args, "no_progress", False) or getattr(args, "quiet", False):
        return False
    return None


def _report_fit(result: Any, out: _Output) -> None:
    out.say(repr(result))
    out.table("summary", result.summary(), "Posterior summary (90% equal-tailed intervals)")
    problems = result.problems()
    ok = "ok (no divergences, r_hat <= 1.01, ESS ok)"
    if result.method in ("nuts", "hmc") and result.posterior.sizes["chain"] < 2:
        ok = "no divergences; r_hat and ESS not computed with 1 chain (use --chains 4 to check)"
    out.say("\nDiagnostics: " + ("; ".join(problems) if problems else ok))


def _cmd_fit(args: argparse.Namespace) -> int:
    import bayescale as bs

    _check_writable(args.out, "--out", example="fit.nc")
    out = _Output(args)
    result = bs.fit(
        _read_csv(args.data, args),
        args.law,
        columns=_columns(args.column),
        method=args.method,
        likelihood=args.likelihood,
        misfit=args.misfit,
        num_chains=args.chains,
        num_warmup=args.warmup,
        num_samples=args.samples,
        seed=args.seed,
        variable=args.variable,
        breaks=args.breaks,
        dropna=args.dropna,
        progress_bar=_progress(args),
        group=args.group,
        pooling=args.pooling,
        pool=args.pool.split(",") if args.pool and args.pool != "all" else args.pool,
    )
    out.say(repr(result.priors))
    _report_fit(result, out)
    out.finish()
    if args.out:
        path = result.save(args.out)  # a WriteError names the file and the fix
        out.say(f"\nSaved the fit to {path}")
    return 0


def _points(args: argparse.Namespace) -> Any:
    import pandas as pd

    if args.points:
        return _read_csv(args.points, args)
    for option in ("n_params", "n_tokens", "compute", "unique_tokens"):
        _positive(getattr(args, option), "--" + option.replace("_", "-"))
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


def _save_plot(draw: Any, path: str, out: _Output) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bayescale.demo import save_figure

    fig, ax = plt.subplots(figsize=(7, 5))
    try:
        draw(ax)
    except BaseException:
        plt.close(fig)
        raise
    save_figure(fig, Path(path).expanduser())  # closes the figure; errors name the file
    out.say(f"\nPlot written to {path}")


def _outputs(args: argparse.Namespace) -> _Output:
    """Check the verb's output paths (--out, --plot) before any work; the table output."""
    _check_writable(getattr(args, "out", None), "--out")
    _check_writable(getattr(args, "plot", None), "--plot", example="plot.png")
    return _Output(args, getattr(args, "out", None))


def _cmd_forecast(args: argparse.Namespace) -> int:
    import bayescale as bs
    from bayescale import plots

    out = _outputs(args)
    points = _points(args)  # checked before the fit is read
    fit = bs.load_fit(args.fit)
    result = bs.forecast(fit, points, kind=args.kind, seed=args.seed)
    out.table(
        "forecast", result.summary(target=args.target), f"Forecast ({args.kind}, 90% intervals)"
    )
    out.finish()
    if args.plot:
        _save_plot(lambda ax: plots.plot_forecast(result, ax=ax, fit=fit), args.plot, out)
    return 0


def _cmd_allocate(args: argparse.Namespace) -> int:
    import bayescale as bs
    from bayescale import plots

    out = _outputs(args)
    _positive(args.compute, "--compute")
    _positive(args.unique_tokens, "--unique-tokens")
    _positive(args.target, "--target")
    fit = bs.load_fit(args.fit)
    result = bs.compute_optimal(
        fit,
        args.compute,
        unique_tokens=args.unique_tokens,
        flops_per_param_token=args.flops_per_param_token,
    )
    table = result.summary()
    table.index = table.index + 1  # budgets numbered from 1, as the warnings name them
    out.table("allocation", table, "Compute-optimal allocation (median and 90% interval)")
    out.table(
        "exponents",
        result.exponents_summary(),
        "Allocation exponents: N_opt ~ C^a, D_opt ~ C^b",
    )
    if args.target is not None:
        out.table(
            "compute_for_loss",
            bs.compute_for_loss(fit, args.target).summary(),
            f"Compute to reach loss {args.target}",
        )
    out.finish()
    if args.plot:
        _save_plot(lambda ax: plots.plot_allocation(result, ax=ax), args.plot, out)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    import bayescale as bs
    from bayescale import plots

    out = _outputs(args)
    result = bs.check(
        bs.load_fit(args.fit), _read_csv(args.runs, args), columns=_columns(args.column)
    )
    table = result.summary()
    cols = [
        c
        for c in table.columns
        if c
        in (*result.variables, "loss", "median", "q5", "q95", "pit", "z", "p_two_sided", "verdict")
    ]
    out.table("runs", table[cols], "New runs against the posterior predictive (90% intervals)")
    out.table("coverage", result.coverage, "Interval coverage")
    cal = result.calibration
    out.say(
        f"\nPIT calibration: {cal['test']} statistic {cal['statistic']:.3g}, "
        f"p = {cal['p_value']:.3g} (n = {cal['n']})"
    )
    out.finish()
    if args.plot:
        _save_plot(lambda ax: plots.plot_check(result, ax=ax), args.plot, out)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import bayescale as bs

    out = _outputs(args)
    fits = {Path(p).stem: bs.load_fit(p) for p in args.fits}
    if len(fits) != len(args.fits):
        raise OptionError(f"fit files need distinct names; received {args.fits}.")
    out.table(
        "comparison",
        bs.compare(fits, method=args.method, cutoffs=args.cutoff),
        f"Model comparison ({args.method.upper()}; best first)",
    )
    out.finish()
    return 0


def _cmd_breaks(args: argparse.Namespace) -> int:
    import bayescale as bs
    from bayescale import plots

    out = _outputs(args)
    report = bs.detect_break(
        _read_csv(args.data, args),
        variable=args.variable,
        max_breaks=args.max_breaks,
        columns=_columns(args.column),
        num_chains=args.chains,
        num_warmup=args.warmup,
        num_samples=args.samples,
        seed=args.seed,
        progress_bar=_progress(args),
    )
    out.say(repr(report))
    out.table(
        "evidence", report.summary().drop(columns=["problems"]), "Evidence by number of breaks"
    )
    if len(report.locations):
        out.table(
            "locations", report.locations, "Break locations and exponents (median, 90% interval)"
        )
    out.finish()
    if args.plot:
        _save_plot(lambda ax: plots.plot_break(report, ax=ax), args.plot, out)
    return 0


def _holdout(text: str) -> float | int | str:
    """--holdout: 'split', an integer number of top budgets, or a fraction."""
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
            f"--holdout takes a fraction (0.33), a number of top budgets (1) or 'split'; received "
            f"{text!r}."
        ) from None


def _cmd_backtest(args: argparse.Namespace) -> int:
    import bayescale as bs
    from bayescale import plots

    out = _outputs(args)
    result = bs.backtest(
        _read_csv(args.data, args),
        args.law,
        holdout=_holdout(args.holdout),
        budget_column=args.budget_column,
        models=args.model or bs.backtest.__kwdefaults__["models"],
        variable=args.variable,
        columns=_columns(args.column),
        num_warmup=args.warmup,
        num_samples=args.samples,
        seed=args.seed,
        progress_bar=_progress(args),
    )
    out.say(repr(result))
    out.table("coverage", result.summary(), "Coverage of held-out runs (pooled by run)")
    out.table("by_distance", result.by_distance(), "Coverage by decades beyond the fitted runs")
    out.finish()
    if args.plot:
        _save_plot(lambda ax: plots.plot_backtest(result, ax=ax), args.plot, out)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from bayescale import demo
    from bayescale.model.simulation import TRUTHS

    _check_writable(args.out, "--out", folder=True)
    out = _Output(args)
    truth = TRUTHS["chinchilla"]
    runs = demo.demo_data(args.seed)
    out.say("bayescale demo -- SYNTHETIC DATA")
    out.say(
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
    _print_demo(result, truth, out)
    out.finish()
    return 0


def _print_demo(result: Any, truth: dict[str, float], out: _Output) -> None:
    import numpy as np
    import pandas as pd

    from bayescale.demo import TARGET

    fit = result.fit
    out.say(repr(fit.priors))
    out.say("")
    out.say(repr(fit))
    summary = fit.summary()
    truth_sigma = {**truth, "sigma": 0.01}  # the simulated noise scale on log loss
    summary.insert(0, "truth", [truth_sigma.get(k, np.nan) for k in summary.index])
    out.table(
        "summary",
        summary,
        "Posterior of L(N, D) = E + A / N^alpha + B / D^beta (90% intervals)",
    )
    point = result.huber.summary()["mean"]
    out.say(
        "\nThe literature's point fit (Huber, delta=1e-3, L-BFGS from Epoch's 4500-start grid):"
    )
    out.say("  " + ", ".join(f"{k}={point[k]:.4g}" for k in point.index))
    row = result.target
    out.say(
        f"\nForecast for N = {TARGET['n_params']:.3g} params, D = {TARGET['n_tokens']:.3g} tokens"
        f" (Chinchilla's size; {row['decades_beyond']:.2g} decades beyond the ladder):"
    )
    out.say(
        f"  predictive loss median {row['median']:.4f}, 90% interval [{row['q5']:.4f}, "
        f"{row['q95']:.4f}], relative width {row['rel_width']:.2%}"
    )
    for note in result.notes:
        out.say(f"  note: {note}")
    out.say(
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
    out.say("\nCompute-optimal allocation (posterior median [90% interval] per budget):")
    out.say(readable.to_string(index=False))
    out.tables["allocation"] = ("Compute-optimal allocation", table)
    ex = result.allocation.exponents_summary()
    out.say(
        f"  N_opt ~ C^a with a = {ex.loc['a', 'median']:.3f} [{ex.loc['a', 'q5']:.3f}, "
        f"{ex.loc['a', 'q95']:.3f}]; D_opt ~ C^b with b = {ex.loc['b', 'median']:.3f}"
    )
    out.say("\nPlots written to " + str(Path(result.plots[0]).parent.resolve()) + ":")
    for path in result.plots:
        out.say(f"  {Path(path).name}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bayescale`` command."""
    from bayescale.version import __version__

    parser = argparse.ArgumentParser(
        prog="bayescale", description="Bayesian inference for neural scaling laws."
    )
    parser.add_argument("--version", action="version", version=f"bayescale {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def output(p: argparse.ArgumentParser, out: str | None = "the tables") -> None:
        p.add_argument(
            "--format",
            default="table",
            choices=FORMATS,
            help="table (text, default), csv (the main table) or json (every table, "
            "{name: [rows]}), for scripts",
        )
        if out is not None:
            p.add_argument("--out", default=None, help=f"write {out} to this file (default stdout)")
        p.add_argument(
            "--quiet",
            "-q",
            action="store_true",
            help="no report text and no progress bar: only the requested output, warnings "
            "and errors",
        )

    def separator(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--sep",
            default=None,
            help="CSV delimiter (default: sniffed among , ; tab |)",
        )
        p.add_argument(
            "--encoding",
            default=None,
            help="text encoding of the CSV files (default UTF-8), e.g. latin-1",
        )
        p.add_argument(
            "--comment",
            default=None,
            help="comment character of the CSV files: the rest of a line after it is skipped, "
            "e.g. '#'",
        )

    def column(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--column",
            action="append",
            default=[],
            metavar="CANON=YOURS",
            help="map a canonical column to yours, e.g. n_params='Model Size' (repeatable)",
        )

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
    column(p)
    p.add_argument(
        "--method",
        default="nuts",
        choices=["nuts", "map", "huber"],
        help="nuts: the posterior by MCMC (default); map: its mode with a Laplace "
        "approximation (fast); huber: the literature's point fit, no intervals",
    )
    p.add_argument(
        "--likelihood",
        default="contaminated_t",
        choices=list(LIKELIHOODS),
        help="noise model of the log loss (default contaminated_t: a Student-t, and a few "
        "runs that failed, which stop pulling on the law)",
    )
    p.add_argument(
        "--misfit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="model the law's own misfit (the default: forecasts widen with distance); "
        "--no-misfit fits the exact law",
    )
    p.add_argument("--variable", default=None, help="scaling variable of one-variable laws")
    p.add_argument("--breaks", type=int, default=None, help="breaks of broken_power_law")
    p.add_argument(
        "--group", default=None, help="column naming each run's curve: fit all curves at once"
    )
    p.add_argument(
        "--pooling",
        default=None,
        choices=["partial", "none", "complete"],
        help="with --group: share parameters through a population (partial, the default), "
        "not at all (none) or fully (complete)",
    )
    p.add_argument(
        "--pool",
        default=None,
        help="with --pooling partial: the pooled parameters, comma-separated, or all",
    )
    p.add_argument("--dropna", action="store_true", help="drop invalid runs")
    p.add_argument("--out", default=None, help="write the fit to this netCDF file")
    separator(p)
    output(p, out=None)
    sampling(p)
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("forecast", help="forecast the loss at new points from a saved fit")
    p.add_argument("fit", help="a fit written by 'bayescale fit --out'")
    p.add_argument("--n-params", type=float, action="append", help="N of a point (repeatable)")
    p.add_argument("--n-tokens", type=float, action="append", help="D of a point (repeatable)")
    p.add_argument("--compute", type=float, action="append", help="C of a point (repeatable)")
    p.add_argument("--unique-tokens", type=float, action="append", help="U of a point")
    p.add_argument("--points", default=None, help="CSV of points (canonical columns)")
    p.add_argument(
        "--kind",
        default="predictive",
        choices=["predictive", "mean"],
        help="predictive: a new run's loss, with its noise (default); mean: the law's "
        "expected loss",
    )
    p.add_argument("--target", type=float, default=None, help="report P(loss < target)")
    p.add_argument(
        "--plot", default=None, help="write the forecast's intervals with the runs (PNG)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the predictive draws (default 0)")
    separator(p)
    output(p)
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
    p.add_argument(
        "--flops-per-param-token",
        type=float,
        default=6.0,
        help="FLOP per parameter and token: C = k N D (default 6)",
    )
    p.add_argument("--target", type=float, default=None, help="also: compute to reach this loss")
    p.add_argument("--plot", default=None, help="write N_opt(C), D_opt(C) to this PNG")
    output(p)
    p.set_defaults(func=_cmd_allocate)

    p = sub.add_parser("check", help="check new runs against a saved fit's predictions")
    p.add_argument("fit", help="a fit written by 'bayescale fit --out'")
    p.add_argument("runs", help="CSV of the new runs")
    column(p)
    p.add_argument("--plot", default=None, help="write the runs against their intervals (PNG)")
    separator(p)
    output(p)
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("compare", help="compare saved fits of several laws (LOO or LFO)")
    p.add_argument("fits", nargs="+", help="two or more fits written by 'bayescale fit --out'")
    p.add_argument(
        "--method",
        default="loo",
        choices=["loo", "lfo"],
        help="loo: leave-one-out (default); lfo: leave-future-out, fitting below --cutoff "
        "and scoring above (for extrapolation)",
    )
    p.add_argument(
        "--cutoff",
        type=float,
        action="append",
        default=None,
        help="LFO: fit below this value of the variable (repeatable)",
    )
    output(p)
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("breaks", help="detect breaks in a scaling curve")
    p.add_argument("data", help="CSV file, one run per row")
    p.add_argument("--variable", default="n_params", help="the scaling variable (n_params)")
    p.add_argument(
        "--max-breaks",
        type=int,
        default=2,
        choices=[1, 2],
        help="most breaks to consider (default 2)",
    )
    column(p)
    p.add_argument("--plot", default=None, help="write the data, both models and the break (PNG)")
    separator(p)
    output(p)
    sampling(p, warmup=500, samples=500)
    p.set_defaults(func=_cmd_breaks)

    p = sub.add_parser(
        "backtest", help="fit on the cheaper runs, forecast the rest, count coverage"
    )
    p.add_argument("data", help="CSV file, one run per row")
    p.add_argument("--law", default="chinchilla", help="law name (default chinchilla)")
    column(p)
    p.add_argument(
        "--holdout",
        default="0.3333333333333333",
        help="fraction of the top of compute (default 1/3), number of top budgets, or 'split'",
    )
    p.add_argument(
        "--budget-column",
        "--levels-column",
        dest="budget_column",
        default="budget",
        help="the column whose top values an integer --holdout holds out (default budget)",
    )
    p.add_argument(
        "--model",
        action="append",
        choices=["misfit", "exact", "huber"],
        help="a model to backtest (repeatable; default all three: misfit, exact, huber)",
    )
    p.add_argument("--variable", default=None, help="scaling variable of one-variable laws")
    p.add_argument("--plot", default=None, help="write coverage against nominal (PNG)")
    separator(p)
    output(p)
    sampling(p)
    p.set_defaults(func=_cmd_backtest)

    p = sub.add_parser("demo", help="fit, forecast and allocate on an embedded synthetic ladder")
    p.add_argument("--out", default="bayescale_demo", help="folder for the plots (bayescale_demo)")
    output(p, out=None)
    sampling(p)
    p.set_defaults(func=_cmd_demo)
    _add_design_parser(sub, output, separator)
    return parser


def _add_design_parser(sub: Any, output: Any, separator: Any) -> None:
    p = sub.add_parser("design", help="which run next: score candidate runs against a target")
    p.add_argument("fit", help="a fit written by 'bayescale fit --out'")
    p.add_argument(
        "--target-compute",
        type=float,
        default=None,
        help="target budget in FLOP: the compute-optimal loss there (or N_opt with --n-opt; "
        "with --target-n-params, the loss of that run)",
    )
    p.add_argument("--target-n-params", type=float, default=None, help="target run's N")
    p.add_argument("--target-n-tokens", type=float, default=None, help="target run's D")
    p.add_argument(
        "--n-opt", action="store_true", help="target N_opt at --target-compute, not the loss"
    )
    p.add_argument(
        "--candidates", default=None, help="CSV of candidate runs (default: a grid, design_grid)"
    )
    p.add_argument("--budget", type=float, default=None, help="FLOP the batch may spend")
    p.add_argument("--batch", type=int, default=1, help="runs to choose, greedily (default 1)")
    p.add_argument("--outcomes", type=int, default=32, help="simulated outcomes a candidate")
    p.add_argument("--top", type=int, default=20, help="candidates shown (table format; 20)")
    p.add_argument(
        "--rank",
        default="gain_per_flop",
        choices=["gain_per_flop", "width"],
        help="gain_per_flop: narrowing per FLOP, favours cheap runs (default); width: the "
        "most informative runs, spending --budget",
    )
    p.add_argument("--plot", default=None, help="write the candidates in the (N, D) plane (PNG)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated outcomes (default 0)")
    separator(p)
    output(p)
    p.set_defaults(func=_cmd_design)


def _cmd_design(args: argparse.Namespace) -> int:
    import bayescale as bs
    from bayescale import plots

    out = _outputs(args)
    if args.target_n_params is not None or args.target_n_tokens is not None:
        run = {
            k: v
            for k, v in (
                ("n_params", args.target_n_params),
                ("n_tokens", args.target_n_tokens),
                ("compute", args.target_compute),
            )
            if v is not None
        }
        target: dict[str, Any] = {"loss_at": run}
    elif args.target_compute is not None:
        target = {"n_opt" if args.n_opt else "optimal_loss": args.target_compute}
    else:
        raise OptionError(
            "no target: pass --target-compute C (the compute-optimal loss at C FLOP; add "
            "--n-opt for N_opt), or --target-n-params and --target-n-tokens (a run's loss)."
        )
    fit = bs.load_fit(args.fit)
    candidates = _read_csv(args.candidates, args) if args.candidates else "grid"
    result = bs.design(
        fit,
        candidates,
        target,
        batch=args.batch,
        budget=args.budget,
        n_outcomes=args.outcomes,
        rank=args.rank,
        seed=args.seed,
    )
    out.say(repr(result))
    table = result.table if args.format != "table" else result.table.head(args.top)
    out.table("candidates", table, "Candidates, best gain per FLOP first (90% interval widths)")
    out.table("batch", result.batch, "Chosen runs, in order (expected width after each)")
    out.finish()
    if args.plot:
        _save_plot(lambda ax: plots.plot_design(result, ax=ax), args.plot, out)
    return 0


#: where the library's extrapolation warnings give the library's remedy (warn=False...)
_GROWS = "The posterior grows wider with the distance"


def _for_the_cli(message: str) -> str:
    """A library warning in the CLI's terms: budgets numbered from 1, no library-only remedy."""
    import re

    if _GROWS in message:
        message = message.split(_GROWS)[0] + _GROWS + ", and the intervals printed include that."
    return re.sub(r"\bbudget (\d+) ([+-])", lambda m: f"budget {int(m[1]) + 1} {m[2]}", message)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bayescale`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(_join_negative_values(argv))
    _configure_jax(getattr(args, "chains", 4))
    from bayescale.errors import (
        BayescaleError,
        ConvergenceWarning,
        ExtrapolationWarning,
        PlausibilityWarning,
    )

    def show(message: Any, category: Any, *_: Any, **__: Any) -> None:
        print(f"warning: {_for_the_cli(str(message))}", file=sys.stderr)

    warnings.showwarning = show
    for category in (ConvergenceWarning, ExtrapolationWarning, PlausibilityWarning):
        warnings.simplefilter("always", category)
    try:
        return int(args.func(args))
    except (BayescaleError, ValueError, OSError) as exc:
        print(f"bayescale: error: {exc}".replace("\n", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the sampler stops between chunks (no traceback)
        print("bayescale: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

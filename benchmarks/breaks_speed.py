"""Speed of `detect_break` on 50 runs with up to 2 breaks, LOO and leave-future-out included.

Target: under 60 s on 2 CPU cores for a cold process (import, compile, three NUTS fits of 4 x
(500 + 500) iterations, PSIS-LOO with up to 2 exact refits per model, three LFO refits).

Rows:
- cold: a fresh process (import, compile, run), without and with JAX's persistent compilation
  cache (as the CLI uses), for a ladder with a break and one without;
- warm: a second `detect_break` in the same process on another ladder of the same size (the
  compiled samplers are reused: the cost of sampling alone), with the time per stage.

The machine load is printed with the results: on a shared machine the figures scale with it.

Usage: python benchmarks/breaks_speed.py [--skip-cold] [--cores 0,1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

ROOT = Path(__file__).resolve().parents[1]

RUN = """
import json, os, time, warnings
t0 = time.perf_counter()
import bayescale as bs
from bayescale.analysis.breaks import detect_break
from bayescale.model.simulation import TRUTHS, sweep_design
{cache}
design = sweep_design("n_params", 1e2, 1e5, 50)
truth = TRUTHS["broken_power_law"]
flat = {{"E": truth["E"], "A": truth["b"] * 100 ** truth["c0"], "alpha": truth["c0"]}}
law, params = ("broken_power_law", truth) if {broken} else ("power_law", flat)
runs = bs.simulate(law, params, design, noise=0.01, seed={seed})
t1 = time.perf_counter()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    report = detect_break(runs, variable="n_params", max_breaks=2, seed=0)
t2 = time.perf_counter()
print(json.dumps({{"wall": t2 - t0, "detect": t2 - t1, "n_breaks": report.n_breaks,
                   "warnings": len(caught)}}))
"""
CACHE = (
    "import jax; jax.config.update('jax_compilation_cache_dir', {d!r}); "
    "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)"
)


def cold(broken: bool, seed: int, cores: str | None, cache_dir: str | None = None) -> dict:
    code = RUN.format(
        cache=CACHE.format(d=cache_dir) if cache_dir else "", broken=broken, seed=seed
    )
    command = [sys.executable, "-c", code]
    if cores:
        command = ["taskset", "-c", cores, *command]
    t = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process"] = time.perf_counter() - t
    return result


def warm_stages(broken: bool, seed: int) -> dict:
    """A second detect_break in this process, timed by stage."""
    import importlib
    import warnings

    import bayescale as bs
    from bayescale.model.simulation import TRUTHS, sweep_design

    cmp = importlib.import_module("bayescale.analysis.compare")  # the module, not the function

    design = sweep_design("n_params", 1e2, 1e5, 50)
    truth = TRUTHS["broken_power_law"]
    flat = {"E": truth["E"], "A": truth["b"] * 100 ** truth["c0"], "alpha": truth["c0"]}
    law, params = ("broken_power_law", truth) if broken else ("power_law", flat)
    runs = bs.simulate(law, params, design, noise=0.01, seed=seed)
    stages = {"fits": 0.0, "loo": 0.0, "lfo": 0.0}
    wrapped = {"fits": "_cold_fit", "loo": "_loo", "lfo": "_lfo"}
    originals = {k: getattr(cmp, v) for k, v in wrapped.items()}

    def timed(stage: str):
        def run(*args, **kwargs):
            t = time.perf_counter()
            try:
                return originals[stage](*args, **kwargs)
            finally:
                stages[stage] += time.perf_counter() - t

        return run

    for stage, name in wrapped.items():
        setattr(cmp, name, timed(stage))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = time.perf_counter()
            report = cmp.detect_break(runs, variable="n_params", max_breaks=2, seed=0)
            stages["total"] = time.perf_counter() - t
    finally:
        for stage, name in wrapped.items():
            setattr(cmp, name, originals[stage])
    stages["n_breaks"] = report.n_breaks
    return stages


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--cores", default=None, help="taskset CPU list for the cold runs")
    args = parser.parse_args()
    rows = []
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"detect_break, 50 runs, max_breaks=2, LOO + LFO; {os.cpu_count()} CPUs; load {load}")
    print(f"{'set-up':<40} {'total s':>8} {'fits':>6} {'loo':>6} {'lfo':>6} {'breaks':>6}")

    def show(name: str, r: dict) -> None:
        rows.append((name, r))
        total = r.get("process", r.get("total"))
        parts = [f"{r[k]:6.1f}" if k in r else f"{'':>6}" for k in ("fits", "loo", "lfo")]
        print(f"{name:<40} {total:8.1f} {' '.join(parts)} {r['n_breaks']:>6}", flush=True)

    if not args.skip_cold:
        for broken in (True, False):
            kind = "break" if broken else "no break"
            show(f"cold, {kind}, no compile cache", cold(broken, 1, args.cores))
        with tempfile.TemporaryDirectory() as d:
            cold(True, 1, args.cores, d)  # fill the cache
            for broken in (True, False):
                kind = "break" if broken else "no break"
                show(f"cold, {kind}, warm compile cache", cold(broken, 2, args.cores, d))
    warm_stages(True, 3)  # compile in this process
    for broken in (True, False):
        kind = "break" if broken else "no break"
        show(f"warm (same process), {kind}", warm_stages(broken, 4))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load at the end: {load}")


if __name__ == "__main__":
    main()

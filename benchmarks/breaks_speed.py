"""Speed of `detect_break` on 14 and on 100 runs with up to 2 breaks, LOO and LFO included.

Rows, for a ladder of 14 runs (over 0.8 decades, around a sharp drop, like the 4-digit
addition curve) and one of 100 runs (three decades, the break of the tests):

- cold: a fresh process (import, compile, run), without a persistent compilation cache;
- warm: a second `detect_break` in that process on another ladder of the same size (the
  compiled samplers are reused: the cost of sampling alone), with the time per stage.

Besides seconds, each row gives the NUTS runs (fits and refits) and their leapfrog steps
(in the draws, all chains; the warm-up's are not counted): a cost that does not depend on the
machine's load. The load is printed with the results: on a shared machine the seconds scale
with it. ``--code DIR`` runs the cold and warm processes on another checkout (for example the
main branch), for before/after tables.

Usage: python benchmarks/breaks_speed.py [--sizes 14,100] [--code DIR] [--cores 0,1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUN = """
import json, os, time, warnings
t0 = time.perf_counter()
import numpy as np
import bayescale as bs
import bayescale.analysis.breaks as B
import bayescale.inference.sampling as S
from bayescale.model.simulation import TRUTHS, sweep_design

def ladder(n, seed):
    if n <= 30:  # a short ladder around a sharp drop
        truth = dict(E=0.5, b=3.0, c0=0.05, c1=3.0, d1=3e3, f1=0.1)
        design = sweep_design("n_params", 1e3, 6e3, n)
    else:
        truth, design = TRUTHS["broken_power_law"], sweep_design("n_params", 1e2, 1e5, n)
    return bs.simulate("broken_power_law", truth, design, noise=0.01, seed=seed)

cost = {{"runs": 0, "steps": 0}}
stages = {{}}
sample = S.sample_nuts
def counted(*args, **kwargs):
    out = sample(*args, **kwargs)
    cost["runs"] += 1
    stats = out[1]  # the statistics' names before and after the sampler driver
    cost["steps"] += int(np.sum(stats["n_steps"] if "n_steps" in stats else stats["num_steps"]))
    return out
import sys  # the modules, not the functions of the same names
for name in ("bayescale.analysis.compare", "bayescale.inference.fit"):
    sys.modules[name].sample_nuts = counted
S.sample_nuts = counted
for name in ("fit", "loo_scores", "lfo_scores"):
    def timed(*args, _f=getattr(B, name), _n=name, **kwargs):
        t = time.perf_counter()
        try:
            return _f(*args, **kwargs)
        finally:
            stages[_n] = stages.get(_n, 0.0) + time.perf_counter() - t
    setattr(B, name, timed)
out = []
for seed in (1, 2):
    runs = ladder({n}, seed)
    cost.update(runs=0, steps=0); stages.clear()
    t1 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = bs.detect_break(runs, variable="n_params", max_breaks=2, seed=0,
                                 progress_bar=False)
    t2 = time.perf_counter()
    out.append({{"detect": t2 - t1, "process": t2 - t0, "n_breaks": report.n_breaks, **cost,
                 **stages}})
print(json.dumps(out))
"""


def measure(n: int, code: Path, cores: str | None) -> list[dict]:
    """A fresh process: the cold call (import and compile included) then a warm one."""
    command = [sys.executable, "-c", RUN.format(n=n)]
    if cores:
        command = ["taskset", "-c", cores, *command]
    env = {**os.environ, "PYTHONPATH": str(code)}
    env.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    out = subprocess.run(command, capture_output=True, text=True, cwd=code, env=env)
    if out.returncode:
        raise RuntimeError(f"the measured process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="14,100")
    parser.add_argument("--code", default=str(ROOT), help="checkout to measure")
    parser.add_argument("--cores", default=None, help="taskset CPU list")
    args = parser.parse_args()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"detect_break, max_breaks=2, LOO + LFO; code {args.code}; {os.cpu_count()} CPUs; "
        f"load {load}"
    )
    head = ("runs", "call", "seconds", "fits", "loo", "lfo", "NUTS runs", "leapfrog", "breaks")
    print("{:>5} {:<28} {:>8} {:>6} {:>6} {:>6} {:>9} {:>10} {:>6}".format(*head))
    for n in (int(s) for s in args.sizes.split(",")):
        cold, warm = measure(n, Path(args.code), args.cores)
        for name, r, total in (
            ("cold (fresh process, total)", cold, cold["process"]),
            ("warm (second call)", warm, warm["detect"]),
        ):
            stages = [f"{r.get(k, float('nan')):6.1f}" for k in ("fit", "loo_scores", "lfo_scores")]
            print(
                f"{n:>5} {name:<28} {total:8.1f} {' '.join(stages)} {r['runs']:>9} "
                f"{r['steps']:>10} {r['n_breaks']:>6}",
                flush=True,
            )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load at the end: {load}")


if __name__ == "__main__":
    main()

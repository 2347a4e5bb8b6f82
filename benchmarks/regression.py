"""No-regression check: this checkout's speed against another checkout's, in one run.

Runs the same measurements on two code trees (``--baseline``, for example a worktree of main,
and ``--code``, this checkout by default), each in fresh processes, alternating the two so that
a change in the machine's load hits both alike, and prints one table with the best of
``--repeats`` processes per tree and the ratio current / baseline. Rows:

- fit, cold: the first NUTS fit of Epoch's 240 rows in a fresh process (import, compile,
  sample; no persistent compilation cache);
- fit, warm: a second fit in the same process;
- MAP, warm: ``method="map"`` after a first MAP fit;
- fit_many, warm: 1,000 power-law curves of 8 runs (4 chains x 500 + 500), after a first call
  on 8 curves that compiles the programs;
- forecast + summary, warm: the predictive forecast at 10,000 points and its summary, after
  a first call.

The machine's load average is printed with the table: on a shared machine the seconds are upper
bounds, the ratios fairer. Usage:
python benchmarks/regression.py --baseline ../main-before [--code .] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, os, time, warnings
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
warnings.simplefilter("ignore")
t0 = time.perf_counter()
import numpy as np
import bayescale as bs
from bayescale.analysis.forecast import forecast
from bayescale.io.datasets import load_dataset
rows = load_dataset("chinchilla_epoch_240", data_dir={data!r})
out = {{}}
fit = bs.fit(rows, "chinchilla", seed=0)
out["fit, cold"] = time.perf_counter() - t0
t = time.perf_counter(); bs.fit(rows, "chinchilla", seed=1)
out["fit, warm"] = time.perf_counter() - t
bs.fit(rows, "chinchilla", method="map", seed=0)
t = time.perf_counter(); bs.fit(rows, "chinchilla", method="map", seed=1)
out["MAP, warm"] = time.perf_counter() - t
rng = np.random.default_rng(20261207)
n = np.geomspace(1e7, 1e10, 8)
curves = []
for c in range(1000):
    e, alpha = rng.uniform(1.5, 2.5), rng.uniform(0.2, 0.5)
    loss = (e + 400 * n ** -alpha) * np.exp(0.01 * rng.standard_normal(8))
    curves.append({{"group": [f"c{{c}}"] * 8, "n_params": n, "loss": loss}})
import pandas as pd
table = pd.concat([pd.DataFrame(c) for c in curves], ignore_index=True)
many = dict(num_chains=4, num_warmup=500, num_samples=500, seed=0)
first = table[table["group"].isin([f"c{{c}}" for c in range(8)])]
bs.fit_many(first, "power_law", **many)
t = time.perf_counter(); bs.fit_many(table, "power_law", **many)
out["fit_many 1,000 curves, warm"] = time.perf_counter() - t
pts = np.random.default_rng(1)
at = {{"n_params": np.exp(pts.uniform(np.log(1e8), np.log(1e12), 10_000)),
      "n_tokens": np.exp(pts.uniform(np.log(1e9), np.log(1e13), 10_000))}}
forecast(fit, at, warn=False).summary()
best = np.inf
for _ in range(3):
    t = time.perf_counter(); forecast(fit, at, warn=False).summary()
    best = min(best, time.perf_counter() - t)
out["forecast + summary, warm"] = best
print("RESULT " + json.dumps(out))
"""


def probe(code: Path, data: str) -> dict[str, float]:
    """The measurements of one fresh process running the package in ``code``."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(data=data)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=code,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"the probe failed in {code}:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="checkout to compare against")
    parser.add_argument("--code", default=str(ROOT), help="checkout measured (default: this one)")
    parser.add_argument(
        "--data", default=os.environ.get("BAYESCALE_DATA", str(ROOT.parent / "shared" / "data"))
    )
    parser.add_argument("--repeats", type=int, default=2, help="processes per tree")
    args = parser.parse_args()
    trees = {"baseline": Path(args.baseline).resolve(), "current": Path(args.code).resolve()}
    best: dict[str, dict[str, float]] = {name: {} for name in trees}
    for _ in range(args.repeats):
        for name, code in trees.items():
            for key, value in probe(code, args.data).items():
                best[name][key] = min(value, best[name].get(key, float("inf")))
    print(f"baseline: {trees['baseline']}\ncurrent:  {trees['current']}")
    print(f"best of {args.repeats} processes per tree; load average {os.getloadavg()[0]:.1f}")
    print(f"{'task':32s} {'baseline s':>11s} {'current s':>10s} {'ratio':>6s}")
    print("-" * 62)
    for key, base in best["baseline"].items():
        now = best["current"][key]
        print(f"{key:32s} {base:11.3f} {now:10.3f} {now / base:6.2f}")
    print("ratio: current / baseline (below 1: faster).")


if __name__ == "__main__":
    main()

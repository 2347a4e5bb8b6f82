"""One model on every path: the same draws, and the same speed, as another checkout.

Two modes, each run once per checkout (``PYTHONPATH=<checkout>``) and compared:

- ``draws OUT.npz``: the posterior of fixed-seed fits on every path (a NUTS and a MAP fit of
  Epoch's 240 Chinchilla rows, a power-law fit with the misfit, a grouped fit of four curves
  and ``fit_many`` of the same four), saved; ``compare A.npz B.npz`` says which arrays differ.
- ``speed``: in one process, the warm NUTS fit of the 240 rows (three times, after one that
  compiles) and ``fit_many`` on 1,000 simulated power-law curves (the curves and settings of
  ``benchmarks/many_curves.py``; a first call that compiles, then a warm one), with the total
  leapfrog steps, and the load average (timings on a shared machine are upper bounds).

Usage: python benchmarks/model_paths.py draws OUT.npz | compare A.npz B.npz | speed
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import bayescale as bs  # noqa: E402
from bayescale.io.datasets import load_dataset  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = os.environ.get("BAYESCALE_DATA", str(HERE.parents[1] / "shared" / "data"))


def draws(out: str) -> None:
    df = load_dataset("chinchilla_epoch_240", data_dir=DATA)
    saved = {}

    def keep(tag: str, fit: object) -> None:
        for k, v in fit.posterior.data_vars.items():
            saved[f"{tag}/{k}"] = np.asarray(v.values)

    quiet = dict(num_warmup=300, num_samples=200, progress_bar=False)
    warnings.simplefilter("ignore", bs.ConvergenceWarning)  # short runs: only their draws count
    keep("nuts", bs.fit(df, "chinchilla", seed=0, progress_bar=False))
    keep("map", bs.fit(df, "chinchilla", seed=3, method="map"))
    keep("misfit", bs.fit(bs.simulate("power_law", seed=1), "power_law", seed=2, misfit=True,
                          **quiet))  # fmt: skip
    frames = [bs.simulate("power_law", seed=s).assign(group=f"c{s}") for s in range(4)]
    runs = pd.concat(frames, ignore_index=True)
    keep("grouped", bs.fit(runs, "power_law", group="group", seed=4, **quiet))
    keep("fit_many", bs.fit_many(runs, "power_law", seed=5, num_warmup=200, num_samples=200,
                                 progress_bar=False))  # fmt: skip
    np.savez(out, **saved)
    print(f"saved {len(saved)} arrays to {out}")


def compare(a: str, b: str) -> None:
    x, y = np.load(a), np.load(b)
    only = sorted(set(x.files) ^ set(y.files))
    differ = [k for k in x.files if k in y.files and not np.array_equal(x[k], y[k])]
    print(json.dumps({"only_in_one": only, "differ": differ, "arrays": len(x.files)}))


def speed() -> None:
    sys.path.insert(0, str(HERE))
    from many_curves import SETTINGS, curves

    df = load_dataset("chinchilla_epoch_240", data_dir=DATA)
    out: dict[str, object] = {"bayescale": bs.__file__}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bs.fit(df, "chinchilla", seed=0, progress_bar=False)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fit = bs.fit(df, "chinchilla", seed=0, progress_bar=False)
            times.append(time.perf_counter() - t)
        out["fit_warm_s"] = times
        out["fit_leapfrog_steps"] = int(fit.tree["sample_stats"]["n_steps"].values.sum())
        runs = curves(1000, 20)
        for when in ("first", "warm"):
            t = time.perf_counter()
            many = bs.fit_many(runs, "power_law", progress_bar=False, **SETTINGS)
            out[f"fit_many_{when}_s"] = time.perf_counter() - t
        out["fit_many_leapfrog_steps"] = int(many.tree["sample_stats"]["n_steps"].values.sum())
    out["load"] = os.getloadavg()
    print(json.dumps(out))


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    {"draws": draws, "compare": compare, "speed": speed}[mode](*rest)

"""Fits of many data sizes in one process: compile reuse and memory (issue 8's targets).

Fits ``power_law`` (4 chains x 300 warm-up + 300 draws) to simulated curves of 10 to 39 runs,
one after another in one process, cycling through the sizes ``--fits`` times in all. Prints one
table: the first fit (compilation), the median and maximum time of the later fits (every size
after the first is new until the sizes repeat), and the resident memory after each block of
fits, with its growth per fit over the later fits. The baseline is the first fit in the same
process (what a fit costs when it compiles).

Usage: python benchmarks/sizes_memory.py [--fits 100]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import numpy as np  # noqa: E402


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc), else the peak."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fits", type=int, default=100)
    args = parser.parse_args()

    import warnings

    import pandas as pd

    import bayescale as bs

    sizes = list(range(10, 40))
    times, memory = [], []
    for i in range(args.fits):
        n = sizes[i % len(sizes)]
        grid = np.geomspace(1e6, 1e9, n)
        runs = bs.simulate("power_law", design=pd.DataFrame({"n_params": grid}), seed=i)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # short curves: convergence is not the point here
            bs.fit(runs[["n_params", "loss"]], "power_law", num_warmup=300, num_samples=300,
                   seed=i, progress_bar=False)  # fmt: skip
        times.append(time.perf_counter() - t0)
        memory.append(rss_mb())
    later = np.asarray(times[1:])
    growth = (memory[-1] - memory[min(10, len(memory) - 1)]) / max(len(memory) - 11, 1)
    rows = [
        ("first fit (compiles)", f"{times[0]:.2f} s", "1.00"),
        ("later fits, median", f"{np.median(later):.2f} s", f"{np.median(later) / times[0]:.3f}"),
        ("later fits, max", f"{later.max():.2f} s", f"{later.max() / times[0]:.3f}"),
        ("RSS after fit 1 / 10 / last", " / ".join(f"{memory[i]:.0f}" for i in
         (0, min(9, len(memory) - 1), -1)) + " MB", ""),
        ("RSS growth per fit (fits 11..last)", f"{growth:.2f} MB", ""),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"{'set-up':<{width}}  {'value':>22}  ratio to first fit")
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:>22}  {ratio}")


if __name__ == "__main__":
    main()

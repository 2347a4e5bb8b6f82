"""Speed of the Huber bootstrap (`bayescale.inference.huber.huber_bootstrap`) by batch size.

Prints one table: for each number of resamples refitted per call of the vectorised BFGS (the
lanes), the warm time of the whole bootstrap and its ratio to the shipped batch size
(`BOOTSTRAP_LANES`), all in this process on Epoch's 240 rows. The refits are independent, so
the batch size changes only the time (and the last bits of the refits: the 95% intervals are
printed for each batch size).

Usage: python benchmarks/huber_bootstrap.py [--data ../shared/data] [--resamples 1000]
                                            [--lanes 16,32,64,1000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--lanes", default="16,32,64,1000")
    args = parser.parse_args()

    import bayescale as bs
    from bayescale.inference import huber
    from bayescale.io.datasets import load_dataset

    rows = load_dataset("chinchilla_epoch_240", data_dir=args.data)
    law = bs.get_law("chinchilla")
    data = bs.from_frame(rows)
    estimate, _ = huber.huber_fit(law, data, bs.default_priors(law, data))
    shipped = huber.BOOTSTRAP_LANES
    lanes = sorted({shipped, *(int(x) for x in args.lanes.split(","))})
    rows_out = []
    for n in lanes:
        huber.BOOTSTRAP_LANES = n
        huber.huber_bootstrap(law, data, estimate, n_resamples=n, seed=0)  # compile this shape
        t = time.perf_counter()
        draws = huber.huber_bootstrap(law, data, estimate, n_resamples=args.resamples, seed=0)
        wall = time.perf_counter() - t
        alpha = np.quantile(draws["alpha"], [0.025, 0.975])
        rows_out.append((n, wall, alpha))
    huber.BOOTSTRAP_LANES = shipped
    base = next(w for n, w, _ in rows_out if n == shipped)
    print(f"Huber bootstrap, Epoch's 240 rows, {args.resamples} resamples (warm)")
    print(f"{'lanes':>6} {'seconds':>9} {'ratio':>7}  alpha 95% interval")
    for n, wall, alpha in rows_out:
        mark = " (shipped)" if n == shipped else ""
        print(f"{n:>6} {wall:>9.2f} {wall / base:>7.2f}  [{alpha[0]:.4f}, {alpha[1]:.4f}]{mark}")


if __name__ == "__main__":
    main()

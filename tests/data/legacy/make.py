"""Write the fits of this folder: small fits of simulated runs, saved by the checkout it runs on.

The files here were written by main at f804d87, the last layout with one file attribute per
setting (``law``, ``method``, ``centre``, ``priors``...); ``tests/test_settings.py`` loads them
with the one reader of `bayescale.inference.settings`. Run from a checkout:
``PYTHONPATH=<checkout> python tests/data/legacy/make.py OUT_DIR``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pandas as pd

import bayescale as bs


def main(out: Path) -> None:
    warnings.simplefilter("ignore")  # tiny runs: only their files count
    short = dict(num_chains=2, num_warmup=30, num_samples=10, progress_bar=False)
    one = bs.simulate("power_law", seed=1)
    mapped = bs.fit(one, "power_law", method="map", seed=0, num_samples=16)
    mapped.save(out / "map_misfit.nc")
    bs.fit(bs.simulate("chinchilla", seed=1), method="huber", bootstrap=8, seed=0).save(
        out / "huber_bootstrap.nc"
    )
    bs.update(mapped, bs.simulate("power_law", seed=2).head(5), seed=1, **short).save(
        out / "updated.nc"
    )
    frames = [bs.simulate("power_law", seed=s).assign(family=f"c{s}") for s in range(3)]
    runs = pd.concat(frames, ignore_index=True)
    grouped = bs.fit(runs, "power_law", group="family", seed=0, **short)
    grouped.save(out / "grouped.nc")
    bs.group_fit(grouped, "c1").save(out / "group_c1.nc")
    many = bs.fit_many(runs.rename(columns={"family": "group"}), "power_law", seed=0,
                       num_chains=2, num_warmup=30, num_samples=10, progress_bar=False)  # fmt: skip
    many["c2"].save(out / "many_c2.nc")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

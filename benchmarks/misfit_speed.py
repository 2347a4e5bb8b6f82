"""The misfit model's speed against the exact law's, on Epoch's 240 Chinchilla rows.

Prints one table: a row per model (``fit(..., misfit=False)`` and ``misfit=True``, 4 chains x
1000 warm-up + 1000 draws, the defaults otherwise) and a row of their ratios. Columns:

- ``first_fit_s``: the first ``bs.fit`` in a fresh process (compilation included, no
  persistent compilation cache), the median of ``--cold`` processes per model, run one after
  the other; ``process_s`` the whole process (imports included);
- ``warm_s``: the median of ``--repeats`` fits in one process, the two models alternating,
  after one fit of each that compiles;
- ``steps``: leapfrog steps of every chain, warm-up included (counted by wrapping the
  sampler's compiled chunk, outside the library), ``steps_per_iter`` over all iterations;
- ``divergences``, the smallest bulk ESS and largest r_hat of the reported parameters, and
  ``ess_per_s`` (smallest bulk ESS per warm second);
- ``us_per_gradient``: one gradient of the model's potential, timed in a compiled loop.

The load average is printed with the table: on a shared machine the timings are upper
bounds; compare only the ratios of one run.

Usage: python benchmarks/misfit_speed.py [--data ../shared/data] [--repeats 3] [--cold 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import warnings

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

COLD = """
import json, time, warnings
t0 = time.perf_counter()
import bayescale as bs
from bayescale.io.datasets import load_dataset
df = load_dataset("chinchilla_epoch_240", data_dir={data!r})
warnings.simplefilter("ignore")
t1 = time.perf_counter()
bs.fit(df, "chinchilla", seed=0, misfit={misfit}, progress_bar=False)
t2 = time.perf_counter()
print(json.dumps({{"first_fit_s": t2 - t1, "process_s": t2 - t0}}))
"""

STEPS = {"n": 0}
LOCK = threading.Lock()


def count_steps() -> None:
    """Count every leapfrog step of `sample_nuts`, warm-up included (wraps its compiled chunk)."""
    import bayescale.inference.sampling as sampling

    program = sampling._program

    class Chunk:
        def __init__(self, compiled):
            self.compiled, self.out_info = compiled, compiled.out_info

        def __call__(self, state, args, length):
            state, buf = self.compiled(state, args, length)
            steps = buf["n_steps"] if "n_steps" in buf else buf["num_steps"]  # before the driver
            n = int(np.asarray(steps)[: int(length)].sum())
            with LOCK:  # one thread per chain
                STEPS["n"] += n
            return state, buf

    class Lowered:
        def __init__(self, lowered):
            self.lowered = lowered

        def compile(self):
            return Chunk(self.lowered.compile())

    class Advance:
        def __init__(self, jitted):
            self.jitted = jitted

        def lower(self, *args):
            return Lowered(self.jitted.lower(*args))

    def counted(*args, **kwargs):
        init, advance, *rest = program(*args, **kwargs)
        return (init, Advance(advance), *rest)

    sampling._program = counted


def cold(data: str, misfit: bool) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    code = COLD.format(data=data, misfit=misfit)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def warm_fit(df: pd.DataFrame, misfit: bool) -> dict[str, float]:
    import bayescale as bs

    STEPS["n"] = 0
    t0 = time.perf_counter()
    fit = bs.fit(df, "chinchilla", seed=0, misfit=misfit, progress_bar=False)
    wall = time.perf_counter() - t0
    table = fit.summary()
    iters = 4 * 2000
    return {
        "warm_s": wall,
        "steps": STEPS["n"],
        "steps_per_iter": STEPS["n"] / iters,
        "divergences": int(fit.tree["sample_stats"]["diverging"].values.sum()),
        "min_ess_bulk": float(table["ess_bulk"].min()),
        "max_r_hat": float(table["r_hat"].max()),
    }


def gradient_us(df: pd.DataFrame, misfit: bool, n: int = 20000) -> float:
    """Microseconds per gradient of the model's potential (numpyro's coordinates), in one
    compiled loop of ``n`` gradients from the priors' typical values (the best of 3 loops)."""
    import jax
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import potential_energy, unconstrain_fn

    import bayescale as bs
    from bayescale.inference.sampling import start_from_prior
    from bayescale.io.data import from_frame
    from bayescale.model.build import build_model, model_inputs
    from bayescale.model.priors import resolve_priors

    data, law = from_frame(df), bs.get_law("chinchilla")
    noise = bs.get_likelihood("contaminated_t")  # the default of bs.fit
    priors = resolve_priors(law, data, None, noise.name)
    spec = bs.Misfit() if misfit else None
    model = build_model(law, tuple((k, p.family) for k, p in priors.items()), noise, spec)
    args = model_inputs(law, data, priors, misfit=misfit).args()
    start = {k: v[0] for k, v in start_from_prior(law, priors, 1, spec).items()}
    flat, unravel = ravel_pytree(unconstrain_fn(model, args, {}, start))
    grad = jax.grad(lambda y, a: potential_energy(model, a, {}, unravel(y)))

    @jax.jit
    def loop(y, a):
        return jax.lax.fori_loop(0, n, lambda i, c: c + 1e-6 * grad(c, a), y)

    loop(flat, args).block_until_ready()
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        loop(flat, args).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 1e6 * best / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("BAYESCALE_DATA", "../shared/data"))
    parser.add_argument("--repeats", type=int, default=3, help="warm fits of each model")
    parser.add_argument("--cold", type=int, default=2, help="fresh processes of each model")
    args = parser.parse_args()

    from bayescale.io.datasets import load_dataset

    warnings.simplefilter("ignore")
    before = os.getloadavg()
    rows: dict[str, dict[str, list[float]]] = {"exact": {}, "misfit": {}}
    for _ in range(args.cold):
        for name in rows:
            for k, v in cold(args.data, name == "misfit").items():
                rows[name].setdefault(k, []).append(v)
    count_steps()
    df = load_dataset("chinchilla_epoch_240", data_dir=args.data)
    for name in rows:
        warm_fit(df, name == "misfit")  # compiles
    for _ in range(args.repeats):
        for name in rows:
            for k, v in warm_fit(df, name == "misfit").items():
                rows[name].setdefault(k, []).append(v)
    for name in rows:
        rows[name]["us_per_gradient"] = [gradient_us(df, name == "misfit")]
    table = pd.DataFrame(
        {m: {k: statistics.median(v) for k, v in r.items()} for m, r in rows.items()}
    ).T
    table["ess_per_s"] = table["min_ess_bulk"] / table["warm_s"]
    table.loc["misfit / exact"] = table.loc["misfit"] / table.loc["exact"]
    with pd.option_context(
        "display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3g}".format
    ):
        print(table)
    print(f"load average before: {before[0]:.2f}, after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

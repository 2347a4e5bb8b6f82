"""The sampler driver's NUTS against main's own chain loop, in one process.

Both run on the same compiled programs (`sampling._compiled`): the exact Chinchilla law on
Epoch's 240 rows, 4 chains of 1,000 + 1,000, alternately four times each, after a first call of
each that compiles and checks that the draws are the same. Prints the wall and CPU seconds of
each call, the leapfrog steps and the load. The loop is main's `sample_nuts` before the driver
(commit f804d87), copied here.

Usage: python benchmarks/driver_ab.py
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import queue
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
warnings.simplefilter("ignore")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import bayescale as bs  # noqa: E402
from bayescale.inference import sampling as S  # noqa: E402
from bayescale.inference.driver import CHUNK, chain_keys, progress_bar  # noqa: E402
from bayescale.io.datasets import load_dataset  # noqa: E402
from bayescale.model.build import build_model, model_inputs  # noqa: E402
from bayescale.model.likelihoods import get_likelihood  # noqa: E402
from bayescale.model.misfit import draw_indicator  # noqa: E402
from bayescale.model.priors import resolve_priors  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = os.environ.get("BAYESCALE_DATA", str(HERE.parents[1] / "shared" / "data"))


def _schedule(num_warmup, num_samples):
    out = []
    for total, keep in ((num_warmup, False), (num_samples, True)):
        full, rest = divmod(total, CHUNK)
        out += [(CHUNK, keep)] * full + ([(rest, keep)] if rest else [])
    return out


def old_sample_nuts(
    model, inputs, start, *, jitter, settings, seed, progress=False, description="NUTS", metric=None
):
    # main's sample_nuts (f804d87), verbatim but for the names of the helpers
    n_chain = settings.num_chains
    _, keys = chain_keys(seed, n_chain)
    args = inputs.args()
    init, advance, postprocess, _, _ = S._compiled(model, args, start, settings)
    show = bool(progress)
    schedule = _schedule(settings.num_warmup, settings.num_samples)
    total = n_chain * (settings.num_warmup + settings.num_samples)
    starts = [{k: np.asarray(v)[c] for k, v in start.items()} for c in range(n_chain)]
    jitter_ = np.float32(jitter)
    init_x = init.lower(keys[0], starts[0], jitter_, args, metric).compile()
    advance_x = advance.lower(init_x.out_info, args, np.int32(CHUNK)).compile()
    z = advance_x.out_info[1]["z"]
    z_shape = jax.ShapeDtypeStruct((settings.num_samples, z.shape[1]), z.dtype)
    postprocess_x = postprocess.lower(z_shape, args).compile()
    stop = threading.Event()
    steps = queue.SimpleQueue()

    def run_chain(c):
        state = init_x(keys[c], starts[c], jitter_, args, metric)
        kept = []
        for length, keep in schedule:
            if stop.is_set():
                return None
            state, buf = advance_x(state, args, np.int32(length))
            if keep:
                kept.append(jax.tree_util.tree_map(lambda a, n=length: np.asarray(a)[:n], buf))
            jax.block_until_ready(state)
            steps.put(length)
        out = {k: np.concatenate([b[k] for b in kept]) for k in kept[0]}
        post = postprocess_x(out.pop("z"), args)
        return {k: np.asarray(v) for k, v in post.items()}, out

    with progress_bar(total, description, show) as bar, ThreadPoolExecutor(n_chain) as pool:
        futures = [pool.submit(run_chain, c) for c in range(n_chain)]
        try:
            pending = set(futures)
            while pending:
                done, pending = concurrent.futures.wait(pending, timeout=0.2)
                while not steps.empty():
                    bar.update(steps.get())
                for f in done:
                    f.result()
        except BaseException:
            stop.set()
            raise
        results = [f.result() for f in futures]
    samples = {k: np.stack([r[0][k] for r in results]) for k in results[0][0]}
    extra = {k: np.stack([r[1][k] for r in results]) for k in results[0][1]}
    return draw_indicator(samples, seed), extra


def main() -> None:
    rows = load_dataset("chinchilla_epoch_240", data_dir=DATA)
    law = bs.get_law("chinchilla")
    data = bs.from_frame(rows)
    noise = get_likelihood("student_t", nu=4.0)
    priors = resolve_priors(law, data, None, noise.name)
    families = tuple((k, p.family) for k, p in priors.items())
    model = build_model(law, families, noise, None)
    inputs = model_inputs(law, data, priors)
    settings = S.NutsSettings()
    start = S.start_from_prior(law, priors, settings.num_chains)
    kw = dict(jitter=1.0, settings=settings, seed=0)
    a = old_sample_nuts(model, inputs, start, **kw)
    b = S.sample_nuts(model, inputs, start, progress=False, **kw)
    assert all(np.array_equal(a[0][k], b[0][k]) for k in a[0])
    times = {"main loop": [], "driver": []}
    for _ in range(4):
        for name, f in (("main loop", old_sample_nuts), ("driver", S.sample_nuts)):
            c, t = time.process_time(), time.perf_counter()
            f(model, inputs, start, **kw)
            times[name].append(
                (round(time.perf_counter() - t, 2), round(time.process_time() - c, 2))
            )
    print(
        json.dumps(
            {"wall_cpu": times, "steps": int(b[1]["n_steps"].sum()), "load": os.getloadavg()[0]}
        )
    )


if __name__ == "__main__":
    main()

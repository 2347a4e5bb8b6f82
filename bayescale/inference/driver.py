"""The sampler driver: every sampler's chains run here, whatever its kernel.

A kernel is the arithmetic of one sampler; this module runs it, the way numpyro's ``MCMC``
drives an ``MCMCKernel``. Two kernels plug in: numpyro's NUTS (`bayescale.inference.sampling`,
for ``fit``, grouped fits and ``compare``'s refits) and the vectorised HMC of many curves
(`bayescale.inference.vhmc`, for ``fit_many``). The driver owns what they share:

- **the schedule**: warm-up then draws, in chunks of iterations (`schedule`); a kernel only
  says where its warm-up chunks end;
- **the lanes**: the independent units of a run (NUTS: its chains; many curves: its chunks of
  curves), each in its own thread, `Kernel.workers` at a time (XLA runs calls from different
  threads concurrently);
- **the progress bar**, counted in iterations of every chain, updated between compiled calls,
  so that showing it changes nothing;
- **stopping**: on ``KeyboardInterrupt`` (Ctrl-C) in the calling thread every lane stops after
  its current compiled call and the interrupt is raised;
- **the starts**: each chain starts from the best of jittered candidates (`best_candidate`,
  which both kernels call in their compiled starts);
- **the keys** of a seed (`chain_keys`, `curve_keys`, `jitter_key`);
- **the statistics**, under ArviZ's names (`STATS`), as the ``sample_stats`` of the DataTree.

Same seed, same draws: a lane's arithmetic depends only on its own keys and inputs, and the
chunks are cut at the same iterations whatever the lanes, the threads or the progress bar.
"""

from __future__ import annotations

import concurrent.futures
import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

__all__ = [
    "CHUNK",
    "STATS",
    "Kernel",
    "best_candidate",
    "chain_keys",
    "curve_keys",
    "jitter_key",
    "progress_bar",
    "progress_default",
    "run",
    "schedule",
]

#: iterations per chunk of the draws, and of NUTS' warm-up (the progress bar's granularity)
CHUNK = 100
#: the sampler statistics every kernel reports per chain and draw, under ArviZ's names
STATS = ("diverging", "n_steps", "acceptance_rate", "energy", "lp")


class Kernel(Protocol):
    """A sampler the driver runs: its lanes, how it starts and how it advances.

    ``tick(n)`` is called by the kernel after each compiled call with the iterations of every
    chain it advanced (the progress bar's unit); the driver may stop the lane there.
    """

    #: independent units of work, and how many run at once (one thread each)
    lanes: int
    workers: int
    #: iterations of every chain in all the lanes: the progress bar's total
    total: int
    #: the schedule (`schedule`): ``(first, stop, keep)`` of each chunk of iterations
    chunks: list[tuple[int, int, bool]]

    def init(self, lane: int, tick: Callable[[int], None]) -> Any:
        """A lane's state before its first chunk: its chains' starts.

        None for a kernel that finds the starts in its first chunk's compiled call.
        """

    def advance(self, lane: int, state: Any, first: int, stop: int, tick: Any) -> tuple[Any, Any]:
        """Iterations ``first`` to ``stop`` of a lane: the new state and the chunk's draws."""

    def finish(
        self, lane: int, kept: list[Any]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """A lane's kept chunks -> its draws of every site and its `STATS`.

        Each array has a leading axis of the lane's units (its chain, its curves), along which
        `run` concatenates the lanes.
        """


def schedule(
    num_warmup: int, num_samples: int, first: int = CHUNK, every: int = CHUNK
) -> list[tuple[int, int, bool]]:
    """``(first, stop, keep)`` of each chunk of iterations, warm-up first.

    The warm-up's first chunk ends at ``first``, the others every ``every`` iterations; the
    draws come in chunks of `CHUNK`, kept.
    """
    ends = [*range(min(first, num_warmup), num_warmup, every), num_warmup] if num_warmup else []
    ends += list(range(num_warmup + CHUNK, num_warmup + num_samples, CHUNK))
    ends.append(num_warmup + num_samples)
    starts = [0, *ends[:-1]]
    return [(a, b, a >= num_warmup) for a, b in zip(starts, ends, strict=True) if b > a]


class _Stopped(Exception):
    """Raised in a lane's thread at its next compiled call once the run is stopped."""


def run(
    kernel: Kernel, *, progress: bool | None, description: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run every lane of ``kernel`` through its schedule; return its draws and statistics.

    Parameters
    ----------
    kernel : Kernel
        The sampler, its inputs bound.
    progress : bool or None
        Show a progress bar; None: `progress_default`.
    description : str
        The progress bar's label.

    Raises
    ------
    KeyboardInterrupt
        After every lane has stopped at the end of its current compiled call; an error in
        one lane stops the others the same way and is raised.
    """
    show = progress_default() if progress is None else bool(progress)
    stop = threading.Event()
    steps: queue.SimpleQueue[int] = queue.SimpleQueue()

    def tick(n: int) -> None:
        steps.put(int(n))
        if stop.is_set():
            raise _Stopped

    running, idle = [0], threading.Condition()

    def lane(i: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None:
        with idle:
            running[0] += 1
        try:
            state = None if stop.is_set() else kernel.init(i, tick)
            kept = []
            for first, last, keep in kernel.chunks:
                if stop.is_set():
                    return None
                state, out = kernel.advance(i, state, first, last, tick)
                if keep:
                    kept.append(out)
            return kernel.finish(i, kept)
        except _Stopped:
            return None
        finally:
            with idle:
                running[0] -= 1
                idle.notify_all()

    with (
        progress_bar(kernel.total, description, show) as bar,
        ThreadPoolExecutor(kernel.workers) as pool,
    ):
        futures: list[concurrent.futures.Future[Any]] = []
        try:
            for i in range(kernel.lanes):
                futures.append(pool.submit(lane, i))
            pending = set(futures)
            while pending:
                done, pending = concurrent.futures.wait(pending, timeout=0.2)
                while not steps.empty():
                    bar.update(steps.get())
                for f in done:
                    f.result()  # a lane's error stops the others (below) and is raised
            # tqdm draws an update only after its minimum interval; the finished count is
            # drawn whatever the timing, so the bar never closes short of its total
            bar.refresh()
        except BaseException:  # KeyboardInterrupt too: the lanes stop after their call
            stop.set()
            for f in futures:
                f.cancel()
            # every lane that runs ends at its next call (also one whose thread was still
            # starting when the interrupt came, which the pool may not wait for)
            with idle:
                idle.wait_for(lambda: running[0] == 0)
            raise
        results = [f.result() for f in futures]
    draws, stats = (
        {k: np.concatenate([r[part][k] for r in results]) for k in results[0][part]}
        for part in (0, 1)
    )
    return draws, stats


def best_candidate(
    potential: Callable[[Any], Any], z: Any, key: Any, num: int, jitter: Any = None
) -> Any:
    """The lowest-potential of ``num`` points drawn uniformly within ``jitter`` of ``z``.

    ``z`` (a flat vector) is the first candidate; the others are ``z + jitter * u`` with
    ``u ~ U(-1, 1)`` per coordinate from ``key`` (``jitter`` None: a unit box). Non-finite
    potentials never win. Pure JAX.
    """
    import jax
    import jax.numpy as jnp

    noise = jax.random.uniform(key, (num, z.size), minval=-1.0, maxval=1.0)
    noise = noise.at[0].set(0.0)
    cands = z + (noise if jitter is None else jitter * noise)
    values = jax.vmap(potential)(cands)
    values = jnp.where(jnp.isfinite(values), values, jnp.inf)
    return cands[jnp.argmin(values)]


# ------------------------------------------------------------------------------ keys


def chain_keys(seed: int, num_chains: int) -> tuple[Any, Any]:
    """The MAP key and the chain keys of one posterior: ``split(split(PRNGKey(seed))[1])``."""
    import jax

    key_map, key_mcmc = jax.random.split(jax.random.PRNGKey(int(seed)))
    return key_map, jax.random.split(key_mcmc, num_chains)


def curve_keys(seed: int, positions: np.ndarray, num_chains: int) -> np.ndarray:
    """Chain keys of many curves: ``split(fold_in(PRNGKey(seed), i), num_chains)`` for each ``i``.

    Returns a ``(len(positions), num_chains, 2)`` uint32 array; curve ``i``'s keys depend only
    on ``seed`` and ``i``.
    """
    import jax

    base = jax.random.PRNGKey(int(seed))
    one = lambda i: jax.random.split(jax.random.fold_in(base, i), num_chains)  # noqa: E731
    return np.asarray(jax.vmap(one)(np.asarray(positions, np.uint32)))


def jitter_key(seed: int) -> np.ndarray:
    """The key of the vectorised HMC's trajectory lengths: from ``seed`` alone, every curve's."""
    import jax

    return np.asarray(jax.random.fold_in(jax.random.PRNGKey(int(seed)), 0xFFFFFFFF))


# ------------------------------------------------------------------------------ progress


def progress_default() -> bool:
    """Whether to show progress: in a terminal (stderr is a tty) or a Jupyter kernel."""
    if bool(getattr(sys.stderr, "isatty", lambda: False)()):
        return True
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython() if hasattr(shell, "get_ipython") else None
    return type(ip).__name__ == "ZMQInteractiveShell"


def progress_bar(total: int, description: str, show: bool) -> Any:
    """A tqdm bar (terminal or notebook widget, by ``tqdm.auto``), disabled when not shown."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tqdm's "IProgress not found": it falls back to text
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=description, disable=not show, leave=False)

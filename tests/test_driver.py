"""The sampler driver with a toy kernel: its schedule, lanes, statistics and Ctrl-C.

No sampling here (the kernels are tested in test_engine.py, test_vhmc.py and test_many.py):
a toy kernel records what the driver asks of it.
"""

from __future__ import annotations

import _thread
import threading
import time

import numpy as np
import pytest

from bayescale.inference.driver import run, schedule


def test_the_schedule_cuts_the_warm_up_then_the_draws():
    assert schedule(250, 150) == [
        (0, 100, False), (100, 200, False), (200, 250, False), (250, 350, True), (350, 400, True),
    ]  # fmt: skip
    # fit_many's: a first warm-up chunk of 25, then every 50; the draws still in chunks of 100
    assert schedule(130, 100, first=25, every=50) == [
        (0, 25, False), (25, 75, False), (75, 125, False), (125, 130, False), (130, 230, True),
    ]  # fmt: skip
    assert schedule(10, 5, first=25, every=50) == [(0, 10, False), (10, 15, True)]
    assert schedule(0, 30) == [(0, 30, True)]
    for w, s in ((0, 1), (1, 1), (99, 101), (1000, 1000), (37, 250)):
        chunks = schedule(w, s, first=25, every=50)
        ends = [0] + [b for _, b, _ in chunks]
        assert [a for a, _, _ in chunks] == ends[:-1] and ends[-1] == w + s
        assert all(keep == (a >= w) and b - a <= 100 for a, b, keep in chunks)


class Toy:
    """Lanes of two units each; a draw's value says which lane, unit and iteration made it."""

    def __init__(self, lanes, workers, stop_at=None):
        self.lanes, self.workers = lanes, workers
        self.chunks = schedule(120, 150)
        self.total = 2 * lanes * 270
        self.calls, self.stop_at = [], stop_at
        self.lock = threading.Lock()
        self.together = threading.Barrier(lanes, timeout=60)
        self.interrupt = True

    def init(self, lane, tick):
        return 0

    def advance(self, lane, state, first, stop, tick):
        with self.lock:
            self.calls.append((lane, first))
        if first == self.stop_at:  # every lane in this chunk, then Ctrl-C
            self.together.wait()
            if lane == 0 and self.interrupt:
                _thread.interrupt_main()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # a long call that reports its progress
                tick(0)
                time.sleep(0.01)
            raise AssertionError("the driver was not stopped")
        tick(2 * (stop - first))
        it = np.arange(first, stop)
        draws = {"x": np.stack([1000 * lane + 100_000 * u + it for u in range(2)])}
        stats = {"diverging": np.zeros((2, stop - first), bool)}
        return state + 1, (draws, stats)

    def finish(self, lane, kept):
        return tuple({k: np.concatenate([c[i][k] for c in kept], axis=1) for k in kept[0][i]}
                     for i in (0, 1))  # fmt: skip


def test_lanes_are_concatenated_in_their_order_whatever_the_threads():
    for workers in (1, 3):
        draws, stats = run(Toy(3, workers), progress=False, description="toy")
        assert draws["x"].shape == (6, 150) and stats["diverging"].shape == (6, 150)
        units = [(lane, u) for lane in range(3) for u in range(2)]
        expected = [1000 * lane + 100_000 * u + np.arange(120, 270) for lane, u in units]
        np.testing.assert_array_equal(draws["x"], np.stack(expected))


def test_ctrl_c_stops_every_lane_after_its_current_call():
    toy = Toy(3, 3, stop_at=100)  # Ctrl-C while every lane runs its second chunk
    with pytest.raises(KeyboardInterrupt):
        run(toy, progress=False, description="toy")
    # every lane stopped there: none started its third chunk
    assert sorted(toy.calls) == [(lane, f) for lane in range(3) for f in (0, 100)]


def test_an_error_in_one_lane_stops_the_others_and_is_raised():
    class Broken(Toy):
        def advance(self, lane, state, first, stop, tick):
            if (lane, first) == (0, 120):
                raise ValueError("lane 0 broke")
            if (lane, first) == (1, 120):  # a long call, still running when lane 0 breaks
                self.stop_at = first
            return super().advance(lane, state, first, stop, tick)

    toy = Broken(2, 2)
    toy.together, toy.interrupt = threading.Barrier(1), False  # lane 1 alone waits, no Ctrl-C
    with pytest.raises(ValueError, match="lane 0 broke"):
        run(toy, progress=False, description="toy")
    assert sorted(toy.calls) == [(0, 0), (0, 100), (1, 0), (1, 100), (1, 120)]


def test_the_bar_shows_its_total_however_fast_the_run(capsys):
    # the toy finishes well within tqdm's minimum interval between redraws: without a final
    # redraw the bar would close (and clear) short of its total
    toy = Toy(2, 2)
    run(toy, progress=True, description="toy")
    err = capsys.readouterr().err
    assert f"| {toy.total}/{toy.total} [" in err

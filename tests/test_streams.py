"""Named random sub-streams (bayescale.streams): one name, one stream."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bayescale import streams

PACKAGE = Path(streams.__file__).resolve().parent


def test_every_secondary_stream_has_its_own_number():
    numbers = Counter(k for k in streams.STREAMS.values() if k is not None)
    assert [k for k, n in numbers.items() if n > 1] == []


def test_a_stream_is_the_seed_with_its_number():
    a = streams.rng(7, "forecast_misfit").standard_normal(3)
    assert np.array_equal(a, np.random.default_rng([7, 2]).standard_normal(3))
    b = streams.rng(7, "forecast_noise").standard_normal(3)
    assert np.array_equal(b, np.random.default_rng(7).standard_normal(3))
    with pytest.raises(KeyError):
        streams.rng(7, "no such stream")


def test_only_streams_and_the_listed_engine_modules_make_numpy_generators():
    """The package draws host-side randomness through `streams.rng` (positive control below)."""
    allowed = {"streams.py"}

    def makes_generator(path: Path) -> bool:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "default_rng":
                return True
        return False

    offenders = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.name not in allowed and makes_generator(p)
    ]
    assert offenders == []
    assert makes_generator(PACKAGE / "streams.py")  # the checker sees a generator being made

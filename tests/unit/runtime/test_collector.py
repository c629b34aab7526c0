"""The collector's young-generation threshold while the loop runs (``topology.runtime.collector``)."""

from __future__ import annotations

import gc

import pytest

from tests.unit.runtime.support import Counter, cluster, put, runtime
from topology.runtime.collector import young_threshold


def test_the_threshold_holds_inside_the_block_and_is_put_back_after() -> None:
    before = gc.get_threshold()
    with young_threshold(12_345):
        assert gc.get_threshold() == (12_345, *before[1:])
    assert gc.get_threshold() == before


def test_zero_leaves_the_thresholds_as_they_are_and_an_error_still_puts_them_back() -> None:
    before = gc.get_threshold()
    with young_threshold(0):
        assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), young_threshold(5_000):
        raise RuntimeError("boom")
    assert gc.get_threshold() == before


def test_the_runtime_runs_its_loop_at_the_configured_threshold() -> None:
    c = cluster(1)
    put(c, (0, b"a", b"x"))
    seen: list[tuple[int, ...]] = []

    def stop() -> bool:
        seen.append(gc.get_threshold())
        return len(seen) > 3

    before = gc.get_threshold()
    runtime(c, Counter(), gc_threshold=7_777).run(stop=stop)
    assert seen and {t[0] for t in seen} == {7_777}
    assert gc.get_threshold() == before

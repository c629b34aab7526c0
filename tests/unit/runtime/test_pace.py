"""Batches sized to the open transaction's time left (``topology.runtime.pace``), alone and in the runtime."""

from __future__ import annotations

import itertools
import time

from tests.unit.runtime.support import Counter, cluster, put
from topology.records import OutRecord, RawRecord
from topology.runtime import ExactlyOnceRuntime, RuntimeSettings
from topology.runtime.pace import Pace
from topology.testing.fakes import FakeClients


def test_before_any_measure_the_batch_is_what_was_asked() -> None:
    assert Pace().batch(2000, 0.1) == 2000


def test_a_batch_fits_the_time_left_at_the_measured_cost_and_never_falls_below_the_floor() -> None:
    pace = Pace(floor=50)
    pace.observe(1000, 0.1)  # 100 µs per record
    assert pace.batch(2000, 0.05) == 500
    assert pace.batch(300, 0.05) == 300  # never more than asked
    assert pace.batch(2000, -0.01) == 50  # the transaction is due: a small batch still makes progress


def test_the_cost_is_a_moving_average_and_small_batches_are_not_measured() -> None:
    pace = Pace(floor=50, weight=0.5)
    pace.observe(100, 0.01)  # 100 µs
    pace.observe(100, 0.03)  # 300 µs
    assert abs(pace.cost_s - 200e-6) < 1e-12
    pace.observe(10, 10.0)  # below the floor: not a measure (one slow record is not a cost)
    assert abs(pace.cost_s - 200e-6) < 1e-12


class _Slow(Counter):
    """A Counter taking 1 ms per record: a full batch would take far longer than the commit interval."""

    def process(self, record: RawRecord) -> list[OutRecord]:
        time.sleep(0.001)
        return super().process(record)


def test_a_costly_topology_commits_near_its_interval_instead_of_after_a_whole_batch() -> None:
    c = cluster(1)
    put(c, *[(0, b"k%d" % (i % 7), b"x") for i in range(600)])
    s = RuntimeSettings("fake:9092", "app", "one", commit_interval_ms=60, consume_batch=200, retry_backoff_ms=0)
    rt = ExactlyOnceRuntime(_Slow(), s, clients=FakeClients(c))
    rt.open()
    committed = [0]  # records committed so far, after each commit (the runtime counts committed records)
    for _ in range(40):
        before = rt.stats.transactions_committed
        rt.step()
        if rt.stats.transactions_committed > before:
            committed.append(rt.stats.records_in)
    sizes = [b - a for a, b in itertools.pairwise(committed)]
    rt.commit()
    # The first batch is taken whole (the cost is not known yet); later ones fit ~60 ms at ~1 ms a record.
    assert len(sizes) >= 4 and sizes[0] == 200 and max(sizes[1:]) < 150, sizes
    assert sum(1 for _ in c.records("out")) == 600  # nothing lost on the way

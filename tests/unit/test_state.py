"""Window stores: tumbling, hopping and sliding windows, grace, late records, changelog and restore."""

from __future__ import annotations

from decimal import Decimal

from topology.dsl import count, distinct_count, hopping, sliding, sum_, tumbling
from topology.plan import Aggregate, Window
from topology.state import WindowStore

S = 1000
M = 60_000


def store(agg: Aggregate) -> WindowStore:
    return WindowStore("s", agg, "app-s-changelog")


def values(st: WindowStore, events: list[tuple[int, object]], key: bytes = b"k") -> list[tuple[object, ...]]:
    return [st.add(0, key, t, v)[0] for t, v in events]


def test_tumbling_count_restarts_each_window() -> None:
    st = store(count(by="source_account", window=tumbling("1m")) >= 3)
    assert values(st, [(0, True), (30 * S, True), (59 * S, True), (61 * S, True)]) == [(1,), (2,), (3,), (1,)]


def test_hopping_window_counts_in_every_window_containing_the_record() -> None:
    st = store(count(by="source_account", window=hopping("10m", advance="5m")) >= 3)
    # 7m is in [0,10m) and [5m,15m); 12m in [5m,15m) and [10m,20m)
    assert values(st, [(1 * M, True), (7 * M, True), (12 * M, True)]) == [(1,), (2, 1), (2, 1)]


def test_sliding_window_counts_the_records_of_the_last_size() -> None:
    st = store(count(by="source_account", window=sliding("5m", grace="1m")) >= 3)
    got = values(st, [(0, True), (2 * M, True), (4 * M, True), (5 * M, True), (9 * M + 1, True), (10 * M + 1, True)])
    assert got == [(1,), (2,), (3,), (3,), (2,), (2,)]  # window (t - 5m, t]: at 5m the record at 0 is out


def test_grace_and_late_records() -> None:
    st = store(count(by="source_account", window=tumbling("1m", grace="10s")) >= 1)
    st.add(0, b"k", 50 * S, True)
    st.add(0, b"k", 65 * S, True)  # stream time 65s: [0,60s) still open until 70s
    assert st.add(0, b"k", 55 * S, True)[0] == (2,)  # out of order, within grace
    st.add(0, b"k", 70 * S, True)  # closes [0, 60s)
    before = st.snapshot(0)
    assert st.add(0, b"k", 59 * S, True) == ((), [])  # late: not counted, no change
    assert st.snapshot(0) == before


def test_sliding_out_of_order_within_grace_sees_only_earlier_records() -> None:
    st = store(count(by="source_account", window=sliding("5m", grace="2m")) >= 1)
    values(st, [(10 * M, True), (11 * M, True)])
    assert st.add(0, b"k", 9 * M, True)[0] == (1,)  # (4m, 9m]: the later records are not in its window
    assert st.add(0, b"k", 12 * M, True)[0] == (4,)
    assert st.add(0, b"k", 9 * M, True)[0] == ()  # 12m - 2m grace: too late now


def test_sum_and_distinct_count() -> None:
    st = store(sum_("amount", by="source_account", window=sliding("1h")) >= 100)
    assert values(st, [(0, Decimal("0.10")), (S, Decimal("0.20"))]) == [(Decimal("0.10"),), (Decimal("0.30"),)]
    dc = store(distinct_count("target_account", by="source_account", window=tumbling("1h")) >= 3)
    assert values(dc, [(0, "a"), (S, "b"), (2 * S, "a"), (3 * S, "c")]) == [(1,), (2,), (2,), (3,)]


def test_keys_and_partitions_are_separate() -> None:
    st = store(count(by="source_account", window=sliding("1h")) >= 3)
    st.add(0, b"a", 0, True)
    assert st.add(0, b"b", 1, True)[0] == (1,)
    assert st.add(1, b"a", 2, True)[0] == (1,)
    assert st.size(0) == 2 and st.size(1) == 1 and st.partitions() == (0, 1)


def test_changelog_rebuilds_the_same_state_including_deletes() -> None:
    for window in (tumbling("1m", grace="5s"), hopping("2m", advance="1m"), sliding("1m", grace="5s")):
        agg = distinct_count("target_account", by="source_account", window=window) >= 2
        live, copy = store(agg), store(agg)
        log: list[tuple[bytes, bytes | None]] = []
        for i in range(300):
            t = i * 7 * S - (3 * S if i % 5 == 0 else 0)  # some out of order
            _, changes = live.add(0, f"acc-{i % 29}".encode(), t, f"t{i % 4}")
            log.extend(changes)
        assert any(v is None for _, v in log), "old keys are swept with tombstones"
        for k, v in log:
            copy.restore(0, k, v)
        assert copy.snapshot(0) == live.snapshot(0)
        assert copy.stream_time(0) == live.stream_time(0)
        # and it goes on deciding the same
        assert copy.add(0, b"acc-1", 300 * 7 * S, "zz")[0] == live.add(0, b"acc-1", 300 * 7 * S, "zz")[0]


def test_drop_and_clear() -> None:
    st = store(count(by="source_account", window=Window("sliding", M)) >= 1)
    st.add(3, b"k", 0, True)
    st.drop(3)
    assert st.size() == 0
    st.clear(4)
    assert st.partitions() == (4,) and st.size(4) == 0

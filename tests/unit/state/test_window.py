"""Window stores: tumbling, hopping and sliding windows, grace, late records; the write-back
cache (changelog records only at flush, latest per key, tombstones) and restore."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal

import pytest

from tests.unit.topology_support import TX
from topology.plan.dsl import hopping, sliding, tumbling
from topology.plan.model import Aggregate, PlanError, Window
from topology.state import StateGroup, WindowStore, encode_group_key, state_id

S = 1000
M = 60_000


def store(agg: Aggregate, name: str = "s") -> WindowStore:
    return WindowStore(name, agg, "app-s-changelog")


def values(st: WindowStore, events: list[tuple[int, object]], key: bytes = b"k") -> list[tuple[object, ...]]:
    return [st.add(0, key, t, v) for t, v in events]


def test_tumbling_count_restarts_each_window() -> None:
    st = store(TX.count(by="source_account", window=tumbling("1m")) >= 3)
    assert values(st, [(0, True), (30 * S, True), (59 * S, True), (61 * S, True)]) == [(1,), (2,), (3,), (1,)]


def test_hopping_window_counts_in_every_window_containing_the_record() -> None:
    st = store(TX.count(by="source_account", window=hopping("10m", advance="5m")) >= 3)
    # 7m is in [0,10m) and [5m,15m); 12m in [5m,15m) and [10m,20m)
    assert values(st, [(1 * M, True), (7 * M, True), (12 * M, True)]) == [(1,), (2, 1), (2, 1)]


def test_sliding_window_counts_the_records_of_the_last_size() -> None:
    st = store(TX.count(by="source_account", window=sliding("5m", grace="1m")) >= 3)
    got = values(st, [(0, True), (2 * M, True), (4 * M, True), (5 * M, True), (9 * M + 1, True), (10 * M + 1, True)])
    assert got == [(1,), (2,), (3,), (3,), (2,), (2,)]  # window (t - 5m, t]: at 5m the record at 0 is out


def test_grace_and_late_records() -> None:
    st = store(TX.count(by="source_account", window=tumbling("1m", grace="10s")) >= 1)
    st.add(0, b"k", 50 * S, True)
    st.add(0, b"k", 65 * S, True)  # stream time 65s: [0,60s) still open until 70s
    assert st.add(0, b"k", 55 * S, True) == (2,)  # out of order, within grace
    st.add(0, b"k", 70 * S, True)  # closes [0, 60s)
    group = StateGroup("c", [st])
    group.flush()
    before = st.snapshot(0)
    assert st.add(0, b"k", 59 * S, True) == ()  # late: not counted, no change
    assert st.snapshot(0) == before
    assert group.flush() == []  # and nothing to write


def test_sliding_out_of_order_within_grace_sees_only_earlier_records() -> None:
    st = store(TX.count(by="source_account", window=sliding("5m", grace="2m")) >= 1)
    values(st, [(10 * M, True), (11 * M, True)])
    assert st.add(0, b"k", 9 * M, True) == (1,)  # (4m, 9m]: the later records are not in its window
    assert st.add(0, b"k", 12 * M, True) == (4,)
    assert st.add(0, b"k", 9 * M, True) == ()  # 12m - 2m grace: too late now


def test_sum_and_distinct_count() -> None:
    st = store(TX.sum("amount", by="source_account", window=sliding("1h")) >= 100)
    assert values(st, [(0, Decimal("0.10")), (S, Decimal("0.20"))]) == [(Decimal("0.10"),), (Decimal("0.30"),)]
    dc = store(TX.distinct_count("target_account", by="source_account", window=tumbling("1h")) >= 3)
    assert values(dc, [(0, "a"), (S, "b"), (2 * S, "a"), (3 * S, "c")]) == [(1,), (2,), (2,), (3,)]


def test_keys_and_partitions_are_separate() -> None:
    st = store(TX.count(by="source_account", window=sliding("1h")) >= 3)
    st.add(0, b"a", 0, True)
    assert st.add(0, b"b", 1, True) == (1,)
    assert st.add(1, b"a", 2, True) == (1,)
    assert st.size(0) == 2 and st.size(1) == 1 and st.partitions() == (0, 1)


def test_flush_writes_the_latest_state_per_key_of_every_store_once() -> None:
    w = sliding("1h")
    velocity = store(TX.count(by="source_account", window=w) >= 3, "velocity")
    total = store(TX.sum("amount", by="source_account", window=w) >= 3, "total")
    group = StateGroup("app-by-source_account-changelog", [velocity, total])
    for i in range(5):
        velocity.add(0, b"a", i * S, True)
        total.add(0, b"a", i * S, Decimal("1.50"))
    velocity.add(1, b"b", 0, True)
    out = sorted(group.flush())
    assert [(p, k) for p, k, _ in out] == [(0, b"a"), (1, b"b")]  # one record per (partition, key)
    doc = json.loads(out[0][2] or b"")
    assert doc == {
        velocity.state_id: [4 * S, [0, S, 2 * S, 3 * S, 4 * S]],
        total.state_id: [4 * S, [0, S, 2 * S, 3 * S, 4 * S], ["1.50"] * 5],
    }
    assert json.loads(out[1][2] or b"") == {velocity.state_id: [0, [0]]}
    assert group.flush() == []  # nothing changed since


def test_changelog_rebuilds_the_same_state_including_deletes() -> None:
    for window in (tumbling("1m", grace="5s"), hopping("2m", advance="1m"), sliding("1m", grace="5s")):
        aggs = [
            TX.distinct_count("target_account", by="source_account", window=window) >= 2,
            TX.sum("amount", by="source_account", window=window) >= 2,
            TX.count(by="source_account", window=sliding("3m")) >= 2,
        ]
        live = StateGroup("c", [store(a, f"s{i}") for i, a in enumerate(aggs)])
        copy = StateGroup("c", [store(a, f"s{i}") for i, a in enumerate(aggs)])
        log: list[tuple[int, bytes, bytes | None]] = []
        for i in range(300):
            t = i * 7 * S - (3 * S if i % 5 == 0 else 0)  # some out of order
            key = f"acc-{i % 29}".encode()
            live.stores[0].add(0, key, t, f"t{i % 4}")
            live.stores[1].add(0, key, t, Decimal(i) / 4)
            if i % 3:
                live.stores[2].add(0, key, t, True)
            if i % 10 == 0:
                log.extend(live.flush())  # a commit every 10 records
        log.extend(live.flush())
        assert any(v is None for _, _, v in log), "keys gone from every store get tombstones"
        for p, k, v in log:
            copy.restore(p, k, v)
        for a, b in zip(live.stores, copy.stores, strict=True):
            assert b.snapshot(0) == a.snapshot(0)
            assert b.stream_time(0) == a.stream_time(0)
        # and they go on deciding the same
        for a, b, x in zip(live.stores, copy.stores, ("zz", Decimal(1), True), strict=True):
            assert b.add(0, b"acc-1", 300 * 7 * S, x) == a.add(0, b"acc-1", 300 * 7 * S, x)


def test_restore_skips_state_kept_under_another_definition() -> None:
    old = store(TX.count(by="source_account", window=sliding("1h")) >= 3, "busy")
    old.add(0, b"a", 0, True)
    (record,) = StateGroup("c", [old]).flush()
    same_state = store(TX.count(by="source_account", window=sliding("1h", grace="1m")) >= 9, "busy")
    changed = store(TX.count(by="source_account", window=sliding("2h")) >= 3, "busy")
    assert same_state.state_id == old.state_id != changed.state_id
    StateGroup("c", [same_state]).restore(*record)
    StateGroup("c", [changed]).restore(*record)
    assert same_state.size(0) == 1 and changed.size(0) == 0
    assert state_id("busy", old.aggregate).startswith("busy#")


def test_drop_and_clear_forget_unflushed_changes() -> None:
    st = store(TX.count(by="source_account", window=Window("sliding", M)) >= 1)
    group = StateGroup("c", [st])
    st.add(3, b"k", 0, True)
    group.drop(3)
    assert st.size() == 0 and group.flush() == []
    group.clear(4)
    assert st.partitions() == (4,) and st.size(4) == 0


def test_group_keys() -> None:
    assert encode_group_key(["acc"]) == b"acc"
    for vals in (["mule", Decimal("1000.00")], ['a"b', "c\\d"], ["é", "\n"]):
        raw = encode_group_key(vals)
        assert json.loads(raw) == [str(v) for v in vals]
    assert encode_group_key(["mule", Decimal("1000.00")]) == b'["mule","1000.00"]'


def test_a_related_sliding_store_keeps_the_ids_of_its_window() -> None:
    agg = dataclasses.replace(TX.count(by="source_account", window=sliding("5m", grace="2m")) >= 3, related=True)
    st = store(agg)
    assert state_id("s", agg) != state_id("s", dataclasses.replace(agg, related=False))  # other state kept
    for t, ident in [(0, "a"), (2 * M, "b"), (4 * M, "c")]:
        st.add(0, b"k", t, True, ident)
    assert st.related_ids(0, b"k", 4 * M) == ["a", "b", "c"]
    assert st.add(0, b"k", 3 * M, True, "late-ish") == (3,)  # out of order within grace: in time order
    assert st.related_ids(0, b"k", 4 * M) == ["a", "b", "late-ish", "c"]
    assert st.related_ids(0, b"k", 3 * M) == ["a", "b", "late-ish"]  # the window (t - 5m, t] of that record
    st.add(0, b"k", 8 * M, True, "d")  # (3m, 8m]: a, b and late-ish are out
    assert st.related_ids(0, b"k", 8 * M) == ["c", "d"]
    assert st.related_ids(0, b"other", 8 * M) == []
    # the changelog carries the ids: a restored store names the same transactions
    (entry,) = StateGroup("c", [st]).flush()
    fresh = store(agg)
    StateGroup("c", [fresh]).restore(0, entry[1], entry[2])
    assert fresh.related_ids(0, b"k", 8 * M) == ["c", "d"] and fresh.snapshot(0) == st.snapshot(0)


def test_a_store_that_is_not_related_keeps_no_ids() -> None:
    st = store(TX.sum("amount", by="source_account", window=sliding("5m")) >= 3)
    st.add(0, b"k", 0, Decimal("1.00"), "a")
    assert st.related_ids(0, b"k", 0) == []
    assert "a" not in st.snapshot(0)[b"k"]


def test_related_needs_a_sliding_window() -> None:
    with pytest.raises(PlanError, match="only a sliding window"):
        dataclasses.replace(TX.count(by="source_account", window=tumbling("5m")) >= 3, related=True)


def test_earlier_ids_are_the_newest_of_the_window_but_the_record_itself() -> None:
    agg = dataclasses.replace(TX.count(by="source_account", window=sliding("5m", grace="2m")) >= 3, related=True)
    st = store(agg)
    for i in range(10):
        st.add(0, b"k", i * 1000, True, f"t{i}")
    assert st.earlier_ids(0, b"k", 9000, "t9", 3) == (["t6", "t7", "t8"], 9)  # in order: the newest is itself
    st.add(0, b"k", 4500, True, "late")  # out of order: found in the window and left out
    assert st.earlier_ids(0, b"k", 4500, "late", 50) == ([f"t{i}" for i in range(5)], 5)
    st.add(0, b"k", 9500, True, "t3")  # an id seen before: the record's own (newest) occurrence goes
    ids, total = st.earlier_ids(0, b"k", 9500, "t3", 50)
    assert total == 11 and ids.count("t3") == 1 and ids[-1] == "t9" and ids.index("t3") == 3
    assert st.earlier_ids(0, b"k", 9500, "", 2) == (["t9", "t3"], 12)  # no id: nothing left out
    ids, total = st.earlier_ids(0, b"k", 9500, "t5", 50)  # not the newest: found and left out all the same
    assert total == 11 and "t5" not in ids and ids[-1] == "t3"
    assert st.earlier_ids(0, b"other", 9500, "x", 5) == ([], 0)

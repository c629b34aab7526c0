"""A store's partitions on their own: entries loaded and read back, dirty keys, undecoded restored keys,
stream time, snapshots, undo (``StorePartitions``; ``WindowStore`` is tested in test_window.py)."""

from __future__ import annotations

from decimal import Decimal

from topology.state.keys import NO_TIME, KeyState
from topology.state.partitions import StorePartitions

M = 60_000


def sliding_sum() -> StorePartitions:
    return StorePartitions("sliding", "sum", False, 10 * M)


def test_an_entry_loaded_reads_back_the_same_and_raises_stream_time() -> None:
    parts = sliding_sum()
    entry = [5 * M, [M, 5 * M], ["1.50", "2"]]
    parts.load(0, b"a", entry)
    assert parts.entries(0, [b"a", b"b"]) == {b"a": entry}
    assert parts.entry(0, b"a") == entry and parts.entry(0, b"b") is None
    assert parts.stream_time(0) == 5 * M and parts.stream_time(1) == NO_TIME
    assert parts.take_dirty() == {}  # loaded, not written
    parts.load(0, b"a", None)
    assert parts.entry(0, b"a") is None and parts.keys(0) == []


def test_take_dirty_hands_over_written_and_swept_keys_once() -> None:
    parts = sliding_sum()
    parts.clear(2)
    p = parts._partitions[2]
    p.keys[b"a"] = KeyState(M, {}, [M], [Decimal(1)])
    p.dirty.add(b"a")
    p.expired.add(b"gone")
    assert parts.take_dirty() == {2: ({b"a"}, {b"gone"})}
    assert parts.take_dirty() == {}


def test_undecoded_keys_are_held_and_decoded_before_the_whole_state_is_read() -> None:
    parts = sliding_sum()
    undecoded = {0: {b"r": b"doc"}}
    decoded: list[tuple[int, bytes | None]] = []

    def decode(partition: int, key: bytes | None) -> None:
        decoded.append((partition, key))
        for k in list(undecoded[partition]) if key is None else [key]:
            del undecoded[partition][k]
            parts.load(partition, k, [M, [M], ["3"]])
        if not undecoded[partition]:
            del undecoded[partition]

    parts.join_group(undecoded, decode)
    assert parts.holds(0, b"r") and not parts.holds(0, b"x") and parts.keys_decoded(0) == 0
    assert parts.size(0) == 1 and decoded == [(0, None)]
    assert parts.entry(0, b"r") == [M, [M], ["3"]]


def test_snapshot_leaves_out_expired_keys() -> None:
    parts = StorePartitions("sliding", "count", False, M)
    parts.load(0, b"old", [0, [0]])
    parts.load(0, b"new", [2 * M, [2 * M]])
    assert parts.snapshot(0) == {b"new": f"[{2 * M},[{2 * M}]]"}
    assert parts.snapshot(1) == {}


def test_aborted_puts_back_the_state_at_the_last_commit() -> None:
    parts = StorePartitions("sliding", "count", False, M)
    parts.load(0, b"a", [M, [M]])
    parts.committed()
    p = parts._partitions[0]
    p.touch(b"a", p.keys[b"a"])
    p.keys[b"a"].times.append(2 * M)
    assert parts.undo_entries(0) == 1
    assert parts.aborted() == 1
    assert parts.entry(0, b"a") == [M, [M]] and parts.undo_entries(0) == 0


def test_forget_and_drop() -> None:
    parts = StorePartitions("sliding", "count", False, M)
    for k in (b"a", b"b", b"c"):
        parts.load(1, k, [M, [M]])
    parts.forget(1, [b"a"])
    assert sorted(parts.keys(1)) == [b"b", b"c"]
    parts.forget(1)
    assert parts.keys(1) == [] and parts.partitions() == (1,)
    parts.drop(1)
    assert parts.partitions() == () and parts.retention == M and parts.sweep_every == M // 4

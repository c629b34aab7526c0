"""StateGroup restore: documents kept undecoded until a key is used, stream time read from their bytes,
and the same decisions as a store that never stopped."""

from __future__ import annotations

import json
import random
from decimal import Decimal

from tests.unit.topology_support import TX
from topology.plan.dsl import sliding, tumbling
from topology.plan.model import Aggregate
from topology.state import StateGroup, WindowStore
from topology.state.group import DECODE_PER_FLUSH
from topology.state.window import entry_max_time, entry_tag

S = 1000
M = 60_000

Changelog = list[tuple[int, bytes, bytes | None]]


def aggregates() -> list[Aggregate]:
    return [
        TX.count(by="source_account", window=sliding("3m", grace="10s")) >= 5,
        TX.sum("amount", by="source_account", window=sliding("2m")) >= Decimal(50),
        TX.distinct_count("target_account", by="source_account", window=tumbling("1m", grace="5s")) >= 3,
    ]


def group(aggs: list[Aggregate]) -> StateGroup:
    return StateGroup("app-c", [WindowStore(f"s{i}", a, "app-c") for i, a in enumerate(aggs)])


def feed(g: StateGroup, rng: random.Random, n: int, t0: int, keys: int) -> tuple[list[tuple[object, ...]], Changelog]:
    """``n`` random records (a hot key among them, some out of order); a flush every 7: (outputs, changelog)."""
    outs: list[tuple[object, ...]] = []
    log: Changelog = []
    t = t0
    for i in range(n):
        t += rng.randrange(0, 4 * S)
        at = t - (rng.randrange(0, 20 * S) if rng.random() < 0.1 else 0)
        part = rng.randrange(2)
        key = b"hot" if rng.random() < 0.3 else f"k{rng.randrange(keys)}".encode()
        s0, s1, s2 = g.stores
        outs.append(s0.add(part, key, at, True))
        outs.append(s1.add(part, key, at, Decimal(rng.randrange(1, 3000)) / 100))
        if rng.random() < 0.7:  # a store that sees only some records (as a filter does)
            outs.append(s2.add(part, key, at, f"t{rng.randrange(6)}"))
        if i % 7 == 6:
            log.extend(g.flush())
    log.extend(g.flush())
    return outs, log


def test_restore_keeps_documents_undecoded_and_decides_as_if_it_never_stopped() -> None:
    for seed in range(8):
        rng = random.Random(seed)
        live = group(aggregates())
        _, log = feed(live, rng, 600, 0, keys=40)
        copy = group(aggregates())
        for p, k, v in log:
            copy.restore(p, k, v)
        assert sum(len(d) for d in copy.undecoded.values()) > 0
        assert all(not s.keys_decoded(p) for s in copy.stores for p in (0, 1)), "restore decodes nothing"
        for a, b in zip(live.stores, copy.stores, strict=True):
            assert [b.stream_time(p) for p in (0, 1)] == [a.stream_time(p) for p in (0, 1)]
        # go on with the same records in both: decisions and changelog equal, keys decoded on first use
        t_end = max(s.stream_time(p) for s in live.stores for p in (0, 1))
        want, want_log = feed(live, random.Random(seed + 100), 400, t_end, keys=60)
        got, got_log = feed(copy, random.Random(seed + 100), 400, t_end, keys=60)
        assert got == want, f"seed {seed}"
        for a, b in zip(live.stores, copy.stores, strict=True):
            assert b.snapshot(0) == a.snapshot(0) and b.snapshot(1) == a.snapshot(1)
        # the two changelogs rebuild the same live state (they may differ in expired keys: the sweep
        # schedule is not in the changelog, so a restored store sweeps at other times, as it always did)
        assert _rebuilt(log + got_log) == _rebuilt(log + want_log)


def _rebuilt(log: Changelog) -> list[dict[bytes, str]]:
    g = group(aggregates())
    for p, k, v in log:
        g.restore(p, k, v)
    return [s.snapshot(p) for s in g.stores for p in (0, 1)]


def test_flushes_decode_unused_keys_a_few_at_a_time_so_expired_ones_are_swept() -> None:
    st = WindowStore("v", TX.count(by="source_account", window=sliding("1m")) >= 3, "c")
    live = StateGroup("c", [st])
    n = DECODE_PER_FLUSH * 3 + 5
    for i in range(n):
        st.add(0, f"k{i}".encode(), i, True)
    log = live.flush()
    store = WindowStore("v", st.aggregate, "c")
    copy = StateGroup("c", [store])
    for p, k, v in log:
        copy.restore(p, k, v)
    assert len(copy.undecoded[0]) == n
    copy.flush()
    assert len(copy.undecoded[0]) == n - DECODE_PER_FLUSH
    for _ in range(3):
        copy.flush()
    assert copy.undecoded == {}
    assert store.keys_decoded(0) == n
    # one record far later: every restored key has expired and gets its tombstone
    store.add(0, b"new", n + 10 * M, True)
    tombstones = {k for _, k, v in copy.flush() if v is None}
    assert tombstones == {f"k{i}".encode() for i in range(n)}


def test_a_tombstone_in_the_changelog_drops_an_undecoded_key() -> None:
    st = WindowStore("v", TX.count(by="source_account", window=sliding("1m")) >= 3, "c")
    copy = StateGroup("c", [st])
    copy.restore(0, b"a", json.dumps({st.state_id: [5, [5]]}, separators=(",", ":")).encode())  # as json wrote it
    copy.restore(0, b"a", None)
    assert st.size(0) == 0 and st.stream_time(0) == 5  # stream time stays, as it did when decoding


def test_regrouped_stores_keep_the_undecoded_keys() -> None:
    aggs = aggregates()
    stores = [WindowStore(f"s{i}", a, "c") for i, a in enumerate(aggs)]
    live = StateGroup("c", stores)
    stores[0].add(0, b"a", 10, True)
    (rec,) = live.flush()
    copy_stores = [WindowStore(f"s{i}", a, "c") for i, a in enumerate(aggs)]
    copy = StateGroup("c", copy_stores)
    copy.restore(*rec)
    # rules changed at run time: the processor regroups the stores it keeps (here one of them, re-thresholded)
    kept = copy_stores[0].with_aggregate(TX.count(by="source_account", window=sliding("3m", grace="10s")) >= 9)
    regrouped = StateGroup("c", [kept])
    assert regrouped.undecoded == {0: {b"a": rec[2]}}
    assert kept.add(0, b"a", 20, True) == (2,)


def test_the_largest_event_time_is_read_without_decoding_even_from_hostile_values() -> None:
    names = TX.distinct_count("target_account", by="source_account", window=sliding("1m")) >= 3
    a = WindowStore("a", names, "c")
    b = WindowStore("b", TX.count(by="source_account", window=sliding("1m")) >= 3, "c")
    # a value that spells b's tag before b's entry (a's entry comes first in the document)
    hostile = f'"{b.state_id}":[999,' + "\\" + f'"{b.state_id}":[998,' + f'{b.state_id}":[997'
    a.add(0, b"k", 50, hostile)
    b.add(0, b"k", 42, True)
    ((_, _, doc),) = StateGroup("c", [a, b]).flush()
    assert doc is not None and doc.index(b.state_id.encode()) < doc.rindex(entry_tag(b.state_id))
    assert hostile in json.loads(doc)[a.state_id][2]
    assert entry_max_time(doc, entry_tag(a.state_id)) == 50
    assert entry_max_time(doc, entry_tag(b.state_id)) == 42
    assert entry_max_time(doc, entry_tag("other#00000000")) is None

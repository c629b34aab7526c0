"""topology/state/rocksdb.py: the embedded stores keep the in-memory store's contract (same values, same changelog)."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from services.config import GeneratorSettings
from services.detector import FRAUD_TOPOLOGY, load_topology
from services.generator.produce import stream_config
from services.generator.scenarios import TransactionStream
from tests.unit.topology_support import TX_KEY, serde
from topology.plan.model import Aggregate, Window
from topology.plan.rules import apply_rule
from topology.processor import TopologyProcessor
from topology.records import H_EVIDENCE, H_RULES
from topology.state import StateGroup, WindowStore
from topology.state.rocksdb import KVState, KVStateGroup, KVWindowStore, RocksKV
from topology.testing.driver import TopologyTestDriver

TOPIC = "app-changelog"
M = 60_000


def _aggregates() -> list[Aggregate]:
    def agg(
        name: str,
        function: str,
        kind: str,
        size: int,
        field: str | None,
        advance: int | None = None,
        related: bool = False,
    ) -> Aggregate:
        window = Window(kind, size, 30_000, advance)  # type: ignore[arg-type]
        return Aggregate(function, ("k",), window, ">=", Decimal(1), field, name=name, related=related)  # type: ignore[arg-type]

    return [
        agg("sliding-count", "count", "sliding", 2 * M, None, related=True),  # keeps transaction ids
        agg("sliding-sum", "sum", "sliding", 10 * M, "amount"),
        agg("sliding-distinct", "distinct_count", "sliding", 5 * M, "target"),
        agg("tumbling-count", "count", "tumbling", 5 * M, None),
        agg("tumbling-sum", "sum", "tumbling", 5 * M, "amount"),
        agg("hopping-distinct", "distinct_count", "hopping", 10 * M, "target", 2 * M),
    ]


def _group(kind: str, directory: Path) -> StateGroup:
    if kind == "memory":
        return StateGroup(TOPIC, [WindowStore(a.name, a, TOPIC) for a in _aggregates()])
    backend, _, cache = kind.partition("+cache")  # "rocksdb+cache7": a cache of 7 keys per partition
    stores = [KVWindowStore(a.name, a, TOPIC) for a in _aggregates()]
    assert backend == "rocksdb", kind
    return KVStateGroup(TOPIC, stores, directory, RocksKV, cache_keys=int(cache or 0))


Call = tuple[int, int, bytes, int, Any, str]
Entry = tuple[int, bytes, bytes | None]


def _calls(n: int, seed: int, start: int = 0) -> list[Call]:
    """Random store calls: 3 partitions, 40 keys, event time moving forward with some late records."""
    rnd = random.Random(seed)
    t = start
    out: list[Call] = []
    for _ in range(n):
        t += rnd.randint(0, 4_000)
        when = t - rnd.randint(0, 60_000) if rnd.random() < 0.1 else t
        key = f"k{rnd.randrange(40)}".encode()
        store = rnd.randrange(6)
        value: Any = True
        if store in (1, 4):
            value = Decimal(rnd.randint(1, 500_00)).scaleb(-2)
        elif store in (2, 5):
            value = f"t{rnd.randrange(8)}"
        out.append((store, rnd.randrange(3), key, when, value, f"tx{len(out)}"))
    return out


def _run(group: StateGroup, calls: list[Call], flush_every: int) -> tuple[list[Any], list[Entry]]:
    values: list[Any] = []
    changelog: list[Entry] = []
    for i, (s, p, k, t, v, ident) in enumerate(calls):
        store = group.stores[s]
        values.append((store.add(p, k, t, v, ident), store.related_ids(p, k, t)))
        if (i + 1) % flush_every == 0:
            changelog.extend(group.flush())
            group.committed()
    changelog.extend(group.flush())
    group.committed()
    return values, changelog


def _replayed(changelog: list[Entry], tmp_path: Path) -> dict[tuple[int, int], Any]:
    """The in-memory state a changelog rebuilds (per store and partition)."""
    group = _group("memory", tmp_path)
    for p, k, v in changelog:
        group.restore(p, k, v)
    return {(i, p): s.snapshot(p) for i, s in enumerate(group.stores) for p in range(3)}


KV = ["rocksdb", "rocksdb+cache7"]


@pytest.mark.parametrize("kind", KV)
def test_same_values_state_and_changelog_state_as_memory(kind: str, tmp_path: Path) -> None:
    calls = _calls(3_000, seed=1)
    memory = _group("memory", tmp_path)
    kv = _group(kind, tmp_path)
    m_values, m_log = _run(memory, calls, 25)
    k_values, k_log = _run(kv, calls, 25)
    assert k_values == m_values
    assert any(v == () for v, _ in m_values)  # late records were part of it
    assert any(ids for _, ids in m_values)  # and transaction ids kept by the related store
    for i in range(6):
        for p in range(3):
            assert kv.stores[i].snapshot(p) == memory.stores[i].snapshot(p), (i, p)
    assert _replayed(k_log, tmp_path / "a") == _replayed(m_log, tmp_path / "b")
    assert any(v is None for _, _, v in k_log)  # expired keys were deleted


@pytest.mark.parametrize("kind", KV)
def test_restored_from_a_changelog_it_decides_as_memory_does(kind: str, tmp_path: Path) -> None:
    first, then = _calls(1_500, seed=2), _calls(1_500, seed=3, start=1_500 * 2_000)
    memory = _group("memory", tmp_path)
    _, changelog = _run(memory, first, 40)
    kv = _group(kind, tmp_path)
    for p in range(3):
        kv.clear(p)
    for p, k, v in changelog:
        kv.restore(p, k, v)
    for i, s in enumerate(kv.stores):
        for p in range(3):
            assert s.stream_time(p) == memory.stores[i].stream_time(p)
    m_values, _ = _run(memory, then, 40)
    k_values, _ = _run(kv, then, 40)
    assert k_values == m_values


@pytest.mark.parametrize("kind", KV)
def test_the_embedded_store_holds_only_committed_state(kind: str, tmp_path: Path) -> None:
    kv = _group(kind, tmp_path)
    store = kv.stores[0]
    assert kv.restore_from(0) == 0
    assert store.add(0, b"a", 1_000, True) == (1,)
    kv.flush()
    assert store.snapshot(0) == {}  # flushed, not committed: not in the embedded store
    kv.committed()
    committed = store.snapshot(0)
    assert store.add(0, b"a", 2_000, True) == (2,)
    assert store.add(0, b"b", 2_000, True) == (1,)
    kv.flush()  # then the commit fails
    assert kv.aborted() == 2  # the two keys touched since the commit
    assert store.snapshot(0) == committed
    assert store.add(0, b"a", 2_000, True) == (2,)  # as if the aborted transaction never ran
    assert store.add(0, b"b", 2_000, True) == (1,)


def _replay(kv: StateGroup, changelog: list[Entry], start: int = 0) -> None:
    for p, k, v in changelog[start:]:
        kv.restore(p, k, v)


@pytest.mark.parametrize("kind", KV)
def test_a_checkpoint_plus_the_changelog_tail_equals_a_full_replay_even_after_a_crash(
    kind: str, tmp_path: Path
) -> None:
    first, then = _calls(1_500, seed=4), _calls(1_500, seed=5, start=1_500 * 2_000)
    live = _group(kind, tmp_path / "live")
    for p in range(3):
        live.restore_from(p)
    _, changelog = _run(live, first, 30)
    offsets = {p: sum(1 for e in changelog if e[0] == p) for p in range(3)}
    for p in range(3):
        live.checkpoint(p, offsets[p])  # after the commit: covers the changelog so far
    _, later = _run(live, then, 30)  # committed later, no new checkpoint: then a crash
    for p in range(3):
        live.drop(p)
    changelog += later

    def per_partition(entries: list[Entry], p: int) -> list[Entry]:
        return [e for e in entries if e[0] == p]

    full = _group("memory", tmp_path)
    _replay(full, changelog)
    again = _group(kind, tmp_path / "live")  # a new process on the same directory
    for p in range(3):
        again.clear(p)
        start = again.restore_from(p)
        assert start == offsets[p] > 0  # the old checkpoint is still valid
        _replay(again, per_partition(changelog, p), start)
    for i, s in enumerate(again.stores):
        for p in range(3):
            assert s.snapshot(p) == full.stores[i].snapshot(p), (i, p)
            assert s.stream_time(p) == full.stores[i].stream_time(p)
    more = _calls(500, seed=6, start=3_000 * 2_000)
    assert _run(again, more, 30)[0] == _run(full, more, 30)[0]


@pytest.mark.parametrize("kind", KV)
def test_without_a_valid_checkpoint_local_state_is_wiped(kind: str, tmp_path: Path) -> None:
    kv = _group(kind, tmp_path)
    kv.restore_from(1)
    kv.stores[0].add(1, b"a", 1_000, True)
    kv.flush()
    kv.committed()
    kv.drop(1)  # revoked without a checkpoint
    again = _group(kind, tmp_path)
    again.clear(1)
    assert again.restore_from(1) == 0
    assert again.stores[0].size(1) == 0
    (tmp_path / TOPIC / "1.checkpoint").write_text("not an offset")
    assert again.restore_from(1) == 0


def test_only_window_stores_of_the_embedded_kind_fit_its_group(tmp_path: Path) -> None:
    a = _aggregates()[0]
    with pytest.raises(TypeError):
        KVStateGroup(TOPIC, [WindowStore(a.name, a, TOPIC)], tmp_path)


CARD_TESTING_V4 = {
    "id": "card-testing",
    "version": 4,
    "definition": (
        "when:\n  aggregate:\n    function: count\n    group_by: [source_account]\n"
        "    window: {kind: sliding, size: 5m, grace: 30s}\n    filter: amount <= 2\n"
        "    op: '>='\n    threshold: 3\n    related: true\n"
    ),
}


def test_the_processor_decides_the_same_on_rocksdb_across_a_restart_and_a_rule_change(tmp_path: Path) -> None:
    """fraud.yaml on generated scenario traffic: every output equal to the in-memory run's."""
    s = serde("kvstate")
    topology = load_topology(FRAUD_TOPOLOGY)
    settings = GeneratorSettings.with_overrides(seed=11, rate=0, event_rate=20.0, accounts=300)
    txs = [g.record for g in TransactionStream(stream_config(settings)).take(3_000)]

    def run(state: KVState | None) -> TopologyTestDriver[TopologyProcessor]:
        def processor() -> TopologyProcessor:
            return TopologyProcessor(topology, s.decoder.decode, version="v", state=state)

        d = TopologyTestDriver(processor(), partitions=3, encoder=s.encoder.encode, commit_every=40, key_fields=TX_KEY)
        d.pipe_all(txs[:1_500])
        d.commit()
        d.processor.revoked([(t, p) for t in d.processor.source_topics for p in range(3)])  # the old one stops
        if state is not None:  # a new process: a new backend on the same directory
            state = KVState(tmp_path / "state", cache_keys=25)
        replayed = d.restart(processor())
        # In memory the changelog is replayed; RocksDB keeps its files and the checkpoint the runtime
        # wrote after the last commit covers the whole changelog: nothing to replay, and the outputs
        # below still equal the in-memory run's.
        assert replayed > 0 if state is None else replayed == 0
        d.pipe_all(txs[1_500:2_200])
        d.processor.update(apply_rule(d.processor.topology, "card-testing", CARD_TESTING_V4))
        d.pipe_all(txs[2_200:])
        d.commit()
        return d

    memory = run(None)
    kv = run(KVState(tmp_path / "state", cache_keys=25))
    for topic in (*topology.sinks, topology.dlq, topology.alerts or ""):
        mine = [(w.key, w.value, w.headers) for w in kv.records(topic)]
        assert mine == [(w.key, w.value, w.headers) for w in memory.records(topic)], topic
    fired = [w for w in memory.records(topology.branches[0].to) if b"card-testing@4" in dict(w.headers)[H_RULES]]
    assert fired and any(H_EVIDENCE in dict(w.headers) for w in memory.records(topology.branches[0].to))

"""Transactional state: ``aborted`` puts every store back to its state at the last ``committed``,
at a cost of the keys touched since; in memory and on RocksDB, and through the processor."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from services.config import GeneratorSettings
from services.detector import FRAUD_TOPOLOGY, load_topology
from services.generator.produce import stream_config
from services.generator.scenarios import TransactionStream
from tests.unit.state.test_rocksdb import KV, Call, _calls, _group
from tests.unit.topology_support import serde
from topology.processor import TopologyProcessor
from topology.records import OutRecord, RawRecord
from topology.state import StateGroup


def _apply(group: StateGroup, calls: list[Call]) -> list[Any]:
    return [group.stores[s].add(p, k, t, v, ident) for s, p, k, t, v, ident in calls]


def _snapshots(group: StateGroup) -> dict[tuple[int, int], Any]:
    return {(i, p): (s.snapshot(p), s.stream_time(p)) for i, s in enumerate(group.stores) for p in range(3)}


@pytest.mark.parametrize("kind", ["memory", *KV])
def test_after_random_commits_and_aborts_state_is_what_the_committed_transactions_made(
    kind: str, tmp_path: Path
) -> None:
    rng = random.Random(kind)
    calls = _calls(4_000, seed=8)
    live = _group(kind, tmp_path / "live")
    shadow = _group("memory", tmp_path / "shadow")  # applies committed transactions only
    i = aborts = 0
    while i < len(calls):
        txn = calls[i : i + rng.randint(1, 80)]
        got = _apply(live, txn)
        live.flush()
        if rng.random() < 0.35:
            live.aborted()
            aborts += 1
            assert _snapshots(live) == _snapshots(shadow)
            continue  # the same records again, as a runtime rewinds
        live.committed()
        assert got == _apply(shadow, txn)  # decided as if aborted transactions never ran
        shadow.flush()
        shadow.committed()
        assert _snapshots(live) == _snapshots(shadow)
        i += len(txn)
    assert aborts > 10


def test_an_abort_costs_the_keys_touched_not_the_state_held() -> None:
    group = _group("memory", Path("."))
    store = group.stores[0]
    for n in range(10_000):
        store.add(0, f"k{n}".encode(), 1_000 + n, True, f"t{n}")
    group.flush()
    group.committed()
    assert store.undo_entries(0) == 0
    for k in (b"k1", b"k2", b"k3", b"k2"):
        store.add(0, k, 20_000, True, "late")
    assert store.undo_entries(0) == 3
    before = store.size(0)
    assert group.aborted() == 3
    assert store.size(0) == before and store.add(0, b"k1", 20_000, True, "again") == (2,)


def _records(topic: str, n: int) -> list[RawRecord]:
    s = serde("transactions")
    settings = GeneratorSettings.with_overrides(seed=3, rate=0, accounts=200)
    txs = [g.record for g in TransactionStream(stream_config(settings)).take(n)]
    return [
        RawRecord(topic, i % 3, i, tx["source_account"].encode(), s.encoder.encode(tx), 0) for i, tx in enumerate(txs)
    ]


def _processor() -> TopologyProcessor:
    topology = load_topology(FRAUD_TOPOLOGY)
    p = TopologyProcessor(topology, serde("transactions").decoder.decode, version="v")
    p.assigned([(t, n) for t in p.source_topics for n in range(3)])
    return p


def _run(p: TopologyProcessor, records: list[RawRecord]) -> list[OutRecord]:
    return [o for r in records for o in p.process(r)]


def test_the_processor_after_an_abort_decides_and_writes_as_if_the_transaction_never_ran() -> None:
    records = _records(load_topology(FRAUD_TOPOLOGY).stages[0].input_topic, 900)
    a, b = _processor(), _processor()
    first, second, third = records[:300], records[300:600], records[600:]
    _run(a, first)
    a.flush()
    a.committed()
    _run(a, second)
    assert a.flush()  # into the transaction that aborts
    a.aborted()
    replayed = _run(a, second)
    changelog = a.flush()
    a.committed()
    _run(b, first)
    b.flush()
    assert replayed == _run(b, second)
    assert sorted(changelog, key=repr) == sorted(b.flush(), key=repr)
    assert _run(a, third) == _run(b, third)
    assert sorted(a.flush(), key=repr) == sorted(b.flush(), key=repr)


def test_changelog_records_of_a_rule_change_in_an_aborted_transaction_are_not_written() -> None:
    p = _processor()
    records = _records(p.source_topics[0], 50)
    _run(p, records)
    p.update(p.topology, version="v2")  # regroups the stores: their changes wait in _pending
    p.aborted()
    assert p.flush() == []  # nothing: the state is the committed one, which the changelog has
    assert p.restore_from((p.changelog_topics[0], 0)) == 0
    p.checkpoint({(p.changelog_topics[0], 0): 10})  # in memory: nothing to keep

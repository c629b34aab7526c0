"""Stateful aborts on real Kafka: failures injected mid-transaction are retried without any changelog
replay, and fraud.yaml's decisions equal an uninterrupted run's.

The detector's own processor (``services.detector.service.build_runtime``: fraud.yaml, registry
decoder, alert encoder) runs in this process on the real runtime, wrapped so that chosen records
raise the first time they are processed. Each failure comes after other records of the same
transaction have already changed window state, so the abort has something to undo: the runtime
aborts, the processor puts its state back to the last commit (``aborted``, no restore), the
partitions are read again from the transaction's first offsets, and the retry succeeds. Decisions
(branch, rules, evidence) must equal those of a detector that never failed, exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from services.config import DetectorSettings, KafkaSettings
from services.detector.service import build_runtime
from tests.conftest import Endpoints
from tests.integration.eos_support import read_all
from tests.integration.stateful_support import (
    decisions,
    describe_difference,
    rule_counts,
    stateful_input,
)
from topology.records import TP, BatchRouting, OutRecord, Processor, RawRecord
from topology.runtime import ExactlyOnceRuntime

pytestmark = pytest.mark.integration

COUNT = 12_000
PARTITIONS = 3


class FailOnce:
    """Delegates every hook to ``inner``; ``process`` raises the first time it sees one of ``offsets``
    of the source topic (counting how many records of the open transaction came before)."""

    def __init__(self, inner: Processor, source: str, offsets: set[int]) -> None:
        self.inner, self.source, self.pending = inner, source, set(offsets)
        self.failed: list[int] = []  # per failure: records processed in that transaction before it
        self._in_txn = 0
        self.source_topics, self.sink_topics = inner.source_topics, inner.sink_topics
        self.changelog_topics, self.dlq_topic = inner.changelog_topics, inner.dlq_topic
        self.ordered_topics = inner.ordered_topics

    def event_time(self, value: bytes | None) -> int | None:
        return self.inner.event_time(value)

    def process(self, record: RawRecord) -> list[OutRecord]:
        if record.topic == self.source and record.offset in self.pending and self._in_txn > 0:
            self.pending.discard(record.offset)
            self.failed.append(self._in_txn)
            raise RuntimeError(f"injected failure at {record.partition}@{record.offset}")
        self._in_txn += 1
        return self.inner.process(record)

    def committed(self) -> None:
        self._in_txn = 0
        self.inner.committed()

    def aborted(self) -> None:
        self._in_txn = 0
        self.inner.aborted()

    def route_batch(self, values: Sequence[bytes | None]) -> BatchRouting | None:
        return self.inner.route_batch(values)

    def flush(self) -> list[OutRecord]:
        return self.inner.flush()

    def assigned(self, partitions: list[TP]) -> None:
        self.inner.assigned(partitions)

    def revoked(self, partitions: list[TP]) -> None:
        self.inner.revoked(partitions)

    def changelog_partitions(self, topic: str, partition: int) -> tuple[TP, ...]:
        return self.inner.changelog_partitions(topic, partition)

    def restore_from(self, changelog: TP) -> int:
        return self.inner.restore_from(changelog)

    def restore(self, record: RawRecord) -> None:
        self.inner.restore(record)

    def checkpoint(self, offsets: Mapping[TP, int]) -> None:
        self.inner.checkpoint(offsets)


def test_aborts_mid_transaction_undo_state_without_replay_and_decide_as_an_uninterrupted_run(
    stack: Endpoints, unique: str, tmp_path: Path
) -> None:
    given = stateful_input(stack.bootstrap_servers, stack.registry_url, unique, tmp_path, COUNT, 5, PARTITIONS)
    t, txs, topology, reference = given.topics, given.transactions, given.topology, given.reference
    assert sum(rule_counts(reference).values()) > 50

    settings = DetectorSettings.with_overrides(
        application_id=t.application_id, instance_id="abort", topology_file=topology, rules_topic="",
        max_retries=3, commit_interval_ms=500,
    )  # fmt: skip
    kafka = KafkaSettings.with_overrides(
        bootstrap_servers=stack.bootstrap_servers, schema_registry_url=stack.registry_url
    )
    built = build_runtime(settings, kafka)
    offsets = {COUNT // PARTITIONS * k // 6 for k in range(1, 6)}  # five failures spread over each partition
    wrapped = FailOnce(built.processor, t.transactions, offsets)
    runtime = ExactlyOnceRuntime(wrapped, built.settings)
    rep = f"{t.application_id}-by-target_account-amount-repartition"
    st = runtime.stats

    def done() -> bool:  # every input read, and every record sent to the fan-in stage read back
        return (
            st.records_in_by_topic[t.transactions] >= COUNT
            and st.records_in_by_topic[rep] == st.records_out[rep]
            and runtime.txn is None
        )

    runtime.run(stop=done)

    assert len(wrapped.failed) >= 5 and all(n > 0 for n in wrapped.failed), wrapped.failed
    # At least one abort per injected failure. librdkafka sometimes refuses the first produce of the
    # transaction begun right after an abort (_STATE "Erroneous state"): that is one more abort and
    # retry, counted as a failure of that record, and must not change any decision either.
    assert runtime.stats.transactions_aborted >= len(wrapped.failed)
    assert runtime.stats.restored == 0, "an abort replayed a changelog"
    committed = read_all(stack.bootstrap_servers, t.outputs, "read_committed")
    uncommitted = read_all(stack.bootstrap_servers, t.outputs, "read_uncommitted")
    assert len(uncommitted) > len(committed), "no aborted transaction left records behind"
    decided, seen = decisions(committed, t)
    assert max(seen.values()) == 1 and set(decided) == {tx.transaction_id for tx in txs}
    assert decided == reference, describe_difference(reference, decided)

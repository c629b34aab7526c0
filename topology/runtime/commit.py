"""How the open transaction ends: committed with its state and offsets, aborted and rewound, or settled
from the group's committed offsets after its producer was replaced.

``commit`` writes the state changes the processor kept in memory (``processor.flush()``) into the
transaction, then its offsets, then commits: an abortable error aborts and rewinds (and tells
``Refusals``, which finds a record the broker refuses), a fatal producer error that is not fencing or a
timed-out call replaces the producer (``recover``), anything else stops the runtime. ``abort`` puts the
state back to the last commit and every partition of the transaction back to the first offset it read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from topology.runtime.errors import FatalRuntimeError, fatal_error, is_fenced, kafka_error
from topology.runtime.partitions import committed_offsets
from topology.runtime.stats import CommitReport
from topology.runtime.transaction import Transaction

if TYPE_CHECKING:
    from topology.runtime.loop import ExactlyOnceRuntime

log = logging.getLogger("fraudstream.runtime")

# Producer replacements in a row (no commit between them) after which the runtime stops.
MAX_RECOVERIES = 5


class Committer:
    """Commits, aborts and recovers the open transaction of one ``ExactlyOnceRuntime``."""

    def __init__(self, rt: ExactlyOnceRuntime, on_commit: Callable[[CommitReport], None] | None) -> None:
        self.rt = rt
        self._on_commit = on_commit
        self._recoveries = 0  # producer replacements since the last commit
        self._next_checkpoint = 0.0

    def commit(self) -> bool:
        """Commit the open transaction (if any) with its offsets and state; on an abortable error abort and rewind."""
        rt = self.rt
        txn = rt.txn
        if txn is None:
            return True
        consumer, producer = rt.clients_in_use()
        offsets = [TopicPartition(t, p, o) for (t, p), o in txn.next.items()]
        started = time.perf_counter()
        try:
            # State changes the processor kept in memory: in this transaction, before the offsets.
            try:
                producer.send_all(txn, rt.processor.flush(), 0)
            except KafkaException as exc:
                if kafka_error(exc).code() != KafkaError._STATE:
                    raise
                # The transaction failed already (the broker refused a produce request): commit_transaction
                # below reports why, and the refusal is handled there.
            producer.commit(offsets, consumer.consumer_group_metadata())
        except KafkaException as exc:
            err = kafka_error(exc)
            if err.txn_requires_abort() and not err.fatal():
                log.warning("commit failed (%s): aborting and re-reading", err)
                self.abort(str(err))
                rt.refusals.refused(txn.records, txn.first, err)
                return False
            if (err.fatal() or err.retriable()) and not is_fenced(err):
                self.recover(err, "commit_transaction")
                return False
            raise fatal_error(err, "commit_transaction", rt.transactional_id) from exc
        rt.processor.committed()
        self._committed(txn, time.perf_counter() - started)
        return True

    def abort(self, reason: str, level: int = logging.INFO) -> None:
        """Abort the open transaction: state back to the last commit, its partitions back to their first
        offset; logged at ``level``."""
        rt = self.rt
        txn = rt.txn
        if txn is None:
            return
        consumer, producer = rt.clients_in_use()
        try:
            producer.abort()
        except KafkaException as exc:
            err = kafka_error(exc)
            if (err.fatal() or err.retriable()) and not is_fenced(err):
                self.recover(err, "abort_transaction")
                return
            raise fatal_error(err, "abort_transaction", rt.transactional_id) from exc
        rt.txn = None
        rt.processor.aborted()
        rt.stats.transactions_aborted += 1
        log.log(level, "transaction aborted: %s", reason)
        for tp, offset in txn.first.items():
            if tp in rt.partitions.assigned:
                rt.seek(consumer, tp, offset)

    def recover(self, error: KafkaError, where: str) -> None:
        """A fatal producer error that is not fencing, or a transactional call that timed out (the broker is
        down): replace the producer and go on from the group's offsets.

        ``init_transactions`` of the new producer (same transactional.id) completes or aborts whatever
        the old one left open; the group's committed offsets then tell which (the offsets travel in
        the same transaction as the changelog), so the processor keeps or drops that state.
        """
        rt = self.rt
        self._recoveries += 1
        if self._recoveries > MAX_RECOVERIES:
            raise fatal_error(error, f"{where} (after {self._recoveries - 1} producer replacements)",
                              rt.transactional_id)  # fmt: skip
        log.warning("%s: %s: %s; replacing the producer", where, error.name(), error.str())
        consumer, _ = rt.clients_in_use()
        rt.replace_producer()
        txn, rt.txn = rt.txn, None
        if txn is None:
            return
        parts = [tp for tp in txn.first if tp in rt.partitions.assigned]
        committed = committed_offsets(consumer, parts, rt.settings, rt.transactional_id, rt.outage)
        at = {(tp.topic, tp.partition): tp.offset for tp in committed}
        if txn.next and all(at.get(tp) == o for tp, o in txn.next.items() if tp in at):
            rt.processor.committed()
            self._committed(txn, 0.0)
        else:
            rt.processor.aborted()
            rt.stats.transactions_aborted += 1
        for tp in parts:
            rt.seek(consumer, tp, at[tp] if at.get(tp, -1) >= 0 else txn.first[tp])

    def _committed(self, txn: Transaction, seconds: float) -> None:
        rt = self.rt
        rt.txn = None
        self._recoveries = 0
        report = txn.report(seconds)
        rt.stats.add(report, time.monotonic())
        rt.failures.committed(txn.next)
        rt.refusals.committed()
        if self._on_commit is not None:
            self._on_commit(report)
        if rt.processor.changelog_topics and time.monotonic() >= self._next_checkpoint:
            self._next_checkpoint = time.monotonic() + rt.settings.checkpoint_interval_s
            try:
                rt.checkpoint(rt.partitions.active())
            except FatalRuntimeError as exc:  # a checkpoint only shortens a later restore: try again later
                log.warning("checkpoint skipped: %s", exc)

"""The runtime's side of a consumer-group rebalance, and the restore of what it was assigned.

Cooperative-sticky assignment: only the partitions that move are revoked. ``on_assign`` first checks
that every input topic still has its changelog's partition count (partitions added to an input while
running: the open transaction is aborted, the new partitions are assigned paused, never processed, and
the loop stops with ``PartitionCountError``); then it pauses the new partitions that have state and
tells the processor; ``restore_step`` (each loop step) restores
a slice of their changelogs and resumes those that are done, at the offset of the first message
fetched while paused. ``on_revoke`` commits the open transaction (the runtime still owns the
partitions then) and checkpoints their state; ``on_lost`` (the group gave them away already)
aborts it. A callback never raises into librdkafka: its error is kept and raised by the loop.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from confluent_kafka import TopicPartition

from topology.records import TP
from topology.runtime.clients import ConsumerClient
from topology.runtime.errors import PartitionCountError
from topology.runtime.topics import AssignmentCheck

if TYPE_CHECKING:
    from topology.runtime.loop import ExactlyOnceRuntime

log = logging.getLogger("fraudstream.runtime")


class Rebalance:
    """The rebalance callbacks and the restore step of one ``ExactlyOnceRuntime``."""

    def __init__(self, rt: ExactlyOnceRuntime) -> None:
        self.rt = rt
        self.check = AssignmentCheck(rt.clients, rt.settings, rt.processor)

    def restore_step(self, consumer: ConsumerClient) -> None:
        """Start restoring newly assigned partitions, replay a slice, resume those that are done."""
        rt = self.rt
        p, restorer = rt.partitions, rt.restorer
        fresh = [tp for tp in sorted(p.restoring) if tp not in restorer.pending]
        ready = restorer.start(fresh) if fresh else []
        if restorer.pending:
            ready += restorer.step(rt.settings.restore_step_s)
            rt.stats.restored = restorer.restored
        for tp in ready:
            offset = p.restored(tp)
            if offset is not None:
                rt.seek(consumer, tp, offset)
            consumer.resume([TopicPartition(*tp)])

    def on_assign(self, consumer: ConsumerClient, partitions: list[TopicPartition]) -> None:
        rt = self.rt
        try:
            parts = [(tp.topic, tp.partition) for tp in partitions]
            self.check(parts)
            if not parts:
                return
            log.info("assigned %s", _fmt(parts))
            stateful = [tp for tp in parts if rt.processor.changelog_partitions(*tp)]
            rt.partitions.add(parts, stateful)
            rt.processor.assigned(parts)
            if stateful:
                # Paused until the loop has restored their state; assigned here so that pause applies.
                consumer.incremental_assign(partitions)
                consumer.pause([TopicPartition(*tp) for tp in stateful])
        except PartitionCountError as exc:
            self._stop_before(consumer, partitions, exc)
        except BaseException as exc:
            rt.callback_failed(exc)

    def _stop_before(self, consumer: ConsumerClient, partitions: list[TopicPartition], exc: BaseException) -> None:
        """Stop before anything of ``partitions`` is read: they are assigned paused (librdkafka would assign
        them unpaused after the callback otherwise), the open transaction is aborted (its records are read
        again by whoever runs next; the committed state stands) and the loop raises ``exc`` at its next step."""
        rt = self.rt
        try:
            if partitions:
                consumer.incremental_assign(partitions)
                consumer.pause(partitions)
            if rt.txn is not None and rt.can_commit():
                rt.abort("stopping: the input's partition count changed", logging.WARNING)
        except BaseException as failed:  # never into librdkafka; the partition-count error is the one to report
            log.warning("while stopping for the partition count: %r", failed)
        rt.callback_failed(exc)

    def on_revoke(self, consumer: ConsumerClient, partitions: list[TopicPartition]) -> None:
        rt = self.rt
        parts = [(tp.topic, tp.partition) for tp in partitions]
        try:
            if not parts:
                return
            log.info("revoked %s", _fmt(parts))
            if rt.txn is not None and rt.can_commit():
                rt.commit()  # we still own the partitions: finish the transaction before giving them up
            if rt.can_commit() and rt.processor.changelog_topics:
                rt.checkpoint([tp for tp in parts if rt.partitions.owns(tp)])
        except BaseException as exc:
            rt.callback_failed(exc)
        finally:
            self.forget(parts)

    def on_lost(self, consumer: ConsumerClient, partitions: list[TopicPartition]) -> None:
        rt = self.rt
        parts = [(tp.topic, tp.partition) for tp in partitions]
        try:
            log.warning("lost %s (session expired): aborting the open transaction", _fmt(parts))
            if rt.txn is not None and rt.can_commit():
                rt.txn.forget(set(parts))
                rt.abort("partitions lost")
        except BaseException as exc:
            rt.callback_failed(exc)
        finally:
            self.forget(parts)

    def forget(self, parts: list[TP]) -> None:
        rt = self.rt
        if rt.txn is not None:
            rt.txn.forget(set(parts))
        rt.partitions.remove(parts)
        if rt.order is not None:
            rt.order.drop(parts)
        rt.restorer.cancel(parts)
        rt.failures.forget(parts)
        rt.processor.revoked(parts)


def _fmt(parts: list[TP]) -> str:
    return ",".join(f"{t}[{p}]" for t, p in sorted(parts))

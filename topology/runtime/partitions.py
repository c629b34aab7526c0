"""Which input partitions the runtime owns, which of them are still restoring, where each goes on
(the group's committed offsets, read through an outage) and where a partition ends (its end offset,
read through a leader election)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Protocol

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from topology.records import TP
from topology.runtime.clients import ConsumerClient
from topology.runtime.errors import fatal_error, kafka_error
from topology.runtime.outage import Outage
from topology.runtime.settings import RuntimeSettings

log = logging.getLogger("fraudstream.runtime")


class Partitions:
    """The assignment as the runtime sees it.

    ``expected`` is, per partition, the next offset to process: a message below it was fetched
    before a seek (or was processed already) and is skipped. A partition that is restoring is
    owned but paused; a message of it fetched before the pause is skipped, and the first such
    offset is where it has to go on from once the restore is done.
    """

    def __init__(self) -> None:
        self.assigned: set[TP] = set()
        self.expected: dict[TP, int] = {}
        self.restoring: set[TP] = set()
        self._skipped: dict[TP, int] = {}  # restoring partition -> first offset fetched and skipped

    def add(self, parts: Iterable[TP], restoring: Iterable[TP]) -> None:
        for tp in parts:
            self.assigned.add(tp)
            self.expected.pop(tp, None)
        self.restoring.update(restoring)

    def remove(self, parts: Iterable[TP]) -> None:
        for tp in parts:
            self.assigned.discard(tp)
            self.expected.pop(tp, None)
            self.restoring.discard(tp)
            self._skipped.pop(tp, None)

    def owns(self, tp: TP) -> bool:
        """Whether messages of ``tp`` are processed now (assigned and not restoring)."""
        return tp in self.assigned and tp not in self.restoring

    def skipped(self, tp: TP, offset: int) -> None:
        """A message of a restoring partition was fetched and skipped."""
        if tp in self.restoring and tp not in self._skipped:
            self._skipped[tp] = offset

    def restored(self, tp: TP) -> int | None:
        """``tp`` is restored; returns the offset to seek to (``None``: nothing was skipped)."""
        self.restoring.discard(tp)
        return self._skipped.pop(tp, None)

    def active(self) -> list[TP]:
        """Assigned partitions that are not restoring, sorted."""
        return sorted(tp for tp in self.assigned if tp not in self.restoring)


def committed_offsets(
    consumer: ConsumerClient, parts: list[TP], s: RuntimeSettings, transactional_id: str, outage: Outage
) -> list[TopicPartition]:
    """The group's committed offsets of ``parts``, waiting out a broker outage (``outage_patience_s``)."""
    deadline = time.monotonic() + s.outage_patience_s
    while True:
        try:
            committed = consumer.committed([TopicPartition(*tp) for tp in parts], s.kafka_timeout_s)
            outage.back()
            return committed
        except KafkaException as exc:
            err = kafka_error(exc)
            if err.fatal() or (not err.retriable() and err.code() != KafkaError._TRANSPORT):
                raise fatal_error(err, "committed offsets", transactional_id) from exc
            if time.monotonic() > deadline:
                where = f"committed offsets (for {s.outage_patience_s:.0f} s)"
                raise fatal_error(err, where, transactional_id) from exc
            outage.lost(f"committed offsets: {err.str()}")
            time.sleep(1.0)


class WatermarkReader(Protocol):
    """What ``end_offset`` needs of a consumer (a ``ConsumerClient``, or any confluent-kafka ``Consumer``)."""

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float, cached: bool) -> tuple[int, int]: ...


# Errors waiting cannot cure: the broker answered and refuses this principal. ``end_offset`` raises them at once.
_REFUSED = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
    }
)


def end_offset(consumer: WatermarkReader, tp: TP, timeout_s: float) -> int:
    """The end offset of ``tp`` as ``consumer`` sees it (``read_committed``: the last stable offset, else the
    high watermark), asked of the broker (never a cached value).

    Any error but a fatal one or a refusal (``_REFUSED``) is asked again every 0.2 s for up to ``timeout_s``:
    a partition without a leader yet (just created, or a broker restarting) or a broker that does not answer
    for a moment. The error of the last try, or a refusal, is raised as the ``KafkaException`` it was.
    ``KafkaError.retriable()`` cannot tell them apart: confluent-kafka does not set it on this call's errors
    (seen: ``_ALL_BROKERS_DOWN`` unflagged).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return int(consumer.get_watermark_offsets(TopicPartition(*tp), timeout_s, False)[1])
        except KafkaException as exc:
            err = kafka_error(exc)
            if err.fatal() or err.code() in _REFUSED or time.monotonic() > deadline:
                raise
            log.debug("end offset of %s[%d]: %s, retrying", tp[0], tp[1], err.str())
            time.sleep(0.2)

"""Timestamp-synchronised reading: the partitions of a topic that feeds a later stage, merged in event time.

A consumer hands out records in fetch order: on a backlog, thousands of one partition, then
thousands of the next, hours of event time apart. A later stage reads what they cause from a
repartition topic, where the partitions' records interleave in that order; its stream time runs
ahead with the partition read first, and the others' records arrive late (measured on a 100,000
transaction backlog with fraud.yaml: 83% of the fan-in stage's input was more than its 1-minute
grace behind its stream time, and fan-in routed 43 of 50 incidents' payments where the offline
run routes 48).

``TimeOrder`` does what Kafka Streams' ``PartitionGroup`` does (``max.task.idle.ms``): it holds
the records of the ordered topics per partition and hands out the one with the lowest event time
first, as long as every owned partition of those topics has a record waiting. A partition with
none blocks the others only while it is known to have more to read (its position is behind its
high watermark, or that is not known yet), and for ``max_idle_ms`` at most; a partition that is
caught up never blocks. Event times come from the processor (``Processor.event_time``); a record
without one (undecodable) is handed out at once.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Protocol

from confluent_kafka import KafkaException, TopicPartition

from topology.records import TP, Processor
from topology.runtime.clients import MessageLike

log = logging.getLogger("fraudstream.runtime")

EventTime = Callable[[bytes | None], "int | None"]


class Fetching(Protocol):
    """What ``TimeOrder`` asks of the consumer (a ``Fetching`` is one)."""

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float, cached: bool) -> tuple[int, int]: ...
    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...
    def pause(self, partitions: list[TopicPartition]) -> None: ...
    def resume(self, partitions: list[TopicPartition]) -> None: ...


class TimeOrder:
    """Holds the records of ``topics`` and hands them out in event-time order across partitions."""

    def __init__(
        self,
        topics: Collection[str],
        event_time: EventTime,
        max_idle_ms: int,
        *,
        # A pause throws away what librdkafka fetched ahead for the partition and its resume fetches it again
        # (librdkafka issue 5343): pausing at 5,000 held cost fraud.yaml a third of its throughput over a
        # 1,000,000-record backlog (19,065 against 27,813 tx/s at 50,000; docs/benchmarks.md, run 11).
        per_partition: int = 50_000,
        max_held: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topics = frozenset(topics)
        self._event_time = event_time
        self._max_idle_s = max_idle_ms / 1000.0
        self.max_held = max_held  # records held at most; beyond it, the runtime stops consuming
        self.per_partition = per_partition  # a partition holding this many is paused until half are out
        self._clock = clock
        self._queues: dict[TP, deque[MessageLike]] = {}
        self._heap: list[tuple[int, int, TP]] = []  # (head's event time, tie-break, partition), non-empty queues
        self._seq = 0
        self._waiting: dict[TP, float] = {}  # empty partitions with more to read -> since when
        self._idle: set[TP] = set()  # waited for max_idle_ms: not waited for again until they get records
        self._paused: set[TP] = set()  # paused here (holding ``per_partition``): the fetcher serves the others
        self.held = 0
        self.idle_passes = 0  # times a partition was given up on after max_idle_ms (records may come late)

    @classmethod
    def of(cls, processor: Processor, max_idle_ms: int) -> TimeOrder | None:
        """The order of ``processor``'s ordered topics (``None``: it has none, or ``max_idle_ms`` is -1)."""
        topics = tuple(processor.ordered_topics)
        return cls(topics, processor.event_time, max_idle_ms) if topics and max_idle_ms >= 0 else None

    @property
    def full(self) -> bool:
        return self.held >= self.max_held

    def take(
        self,
        messages: Sequence[MessageLike],
        assigned: Iterable[TP],
        restoring: Collection[TP],
        consumer: Fetching,
        limit: int | None = None,
    ) -> list[MessageLike]:
        """``messages`` in processing order: those of other topics (or errors) first, then the held
        records of the ordered topics' partitions, lowest event time first, while no ``assigned``
        partition of them has to be waited for (one ``restoring`` is waited for like one behind), and
        at most ``limit`` in all (the rest stay held: the open transaction may take no more)."""
        out: list[MessageLike] = []
        owned = {tp for tp in assigned if tp[0] in self.topics}
        for m in messages:
            topic, partition = m.topic(), m.partition()
            tp = (topic, partition)
            if m.error() is not None or tp not in owned or tp in restoring:
                out.append(m)  # errors, other topics, and partitions not processed now (restoring, revoked)
                continue
            self._hold(tp, m)  # type: ignore[arg-type,unused-ignore]
        for tp, q in self._queues.items():
            if len(q) >= self.per_partition and tp not in self._paused:
                self._paused.add(tp)
                consumer.pause([TopicPartition(*tp)])
        self._merge(out, owned, consumer, limit)
        return out

    def drop(self, parts: Iterable[TP], consumer: Fetching | None = None) -> None:
        """Forget what is held for ``parts`` (sought back, revoked or lost: it will be fetched again); with
        ``consumer``, resume those paused here (sought back: fetching goes on from the new offset)."""
        gone = set(parts)
        paused = [TopicPartition(*tp) for tp in gone & self._paused]
        self._paused -= gone
        if paused and consumer is not None:
            consumer.resume(paused)
        for tp in gone:
            q = self._queues.pop(tp, None)
            if q is not None:
                self.held -= len(q)
            self._waiting.pop(tp, None)
            self._idle.discard(tp)
        if gone:
            self._heap = [e for e in self._heap if e[2] not in gone]
            heapq.heapify(self._heap)

    # ------------------------------------------------------------------ inside

    def _hold(self, tp: TP, m: MessageLike) -> None:
        q = self._queues.get(tp)
        if q is None:
            q = self._queues[tp] = deque()
        if not q:
            self._push(tp, m)
            self._waiting.pop(tp, None)
            self._idle.discard(tp)
        q.append(m)
        self.held += 1

    def _push(self, tp: TP, head: MessageLike) -> None:
        try:
            t = self._event_time(head.value())
        except Exception:  # e.g. the registry is down: ``process`` meets the error again and handles it
            t = None
        self._seq += 1
        heapq.heappush(self._heap, (-1 if t is None else t, self._seq, tp))

    def _merge(self, out: list[MessageLike], owned: set[TP], consumer: Fetching, limit: int | None) -> None:
        heap, queues = self._heap, self._queues
        for tp in [tp for tp in self._waiting if not _behind(consumer, tp)]:
            del self._waiting[tp]  # caught up since (nothing more to read there)
        for tp in owned:
            if not queues.get(tp) and tp not in self._waiting and tp not in self._idle and _behind(consumer, tp):
                self._waiting[tp] = self._clock()
        while heap and (limit is None or len(out) < limit):
            if self._waiting and self._must_wait(owned):
                return
            _, _, tp = heapq.heappop(heap)
            q = queues[tp]
            out.append(q.popleft())
            self.held -= 1
            if q:
                self._push(tp, q[0])
                if tp in self._paused and len(q) <= self.per_partition // 2:
                    self._paused.discard(tp)
                    consumer.resume([TopicPartition(*tp)])
            else:
                if tp in self._paused:
                    self._paused.discard(tp)
                    consumer.resume([TopicPartition(*tp)])
                if tp in owned and _behind(consumer, tp):
                    self._waiting[tp] = self._clock()

    def _must_wait(self, owned: set[TP]) -> bool:
        now = self._clock()
        for tp, since in list(self._waiting.items()):
            if tp not in owned:
                del self._waiting[tp]
            elif now - since >= self._max_idle_s or self.full:
                del self._waiting[tp]
                self._idle.add(tp)
                self.idle_passes += 1
                if self.idle_passes % 100 == 1:
                    log.info(
                        "event-time order: went on without %s[%d] after %.0f ms (%d held, %s); its next records "
                        "may be late for a later stage (%d times so far)", tp[0], tp[1], (now - since) * 1000,
                        self.held, "full" if self.full else "not full", self.idle_passes,
                    )  # fmt: skip
        return bool(self._waiting)


def _behind(consumer: Fetching, tp: TP) -> bool:
    """Whether ``tp`` may have more to read than was fetched: its position is more than one offset (a
    transaction marker) behind the high watermark last fetched, or either is not known yet."""
    part = TopicPartition(*tp)
    try:
        _, high = consumer.get_watermark_offsets(part, 0, True)
        position = consumer.position([part])[0].offset
    except (KafkaException, IndexError):
        return True
    if high < 0 or position < 0:
        return True
    return high - position > 1

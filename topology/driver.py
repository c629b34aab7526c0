"""An in-memory test driver, like Kafka Streams' ``TopologyTestDriver``: no broker.

It feeds records to the same ``TopologyProcessor`` the Kafka runtime runs (through
``process_batch``, so stateless topologies take the same batch path), keeps
every record it returns in per-topic logs (with partitions and offsets), feeds
repartition records back in (the next stage), and can ``restart`` with a fresh
processor that restores its state from the changelog logs, as after a crash.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from topology.processor import TopologyProcessor
from topology.records import Headers, OutRecord, RawRecord

Encoder = Callable[[Mapping[str, Any]], bytes]


@dataclass(frozen=True, slots=True)
class Written:
    """A record in a topic log."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int

    def header(self, name: str) -> bytes | None:
        """The last header ``name`` (None if absent)."""
        found = None
        for k, v in self.headers:
            if k == name:
                found = v
        return found

    def as_raw(self) -> RawRecord:
        return RawRecord(self.topic, self.partition, self.offset, self.key, self.value, self.timestamp_ms, self.headers)


def default_partition(key: bytes | None, partitions: int) -> int:
    """Partition of a keyed record in the driver (stable; not Kafka's murmur2, which tests do not need)."""
    return 0 if key is None else zlib.crc32(key) % partitions


class TopologyTestDriver:
    """Runs a processor over records piped in; ``partitions`` applies to every topic."""

    def __init__(
        self,
        processor: TopologyProcessor,
        *,
        partitions: int = 1,
        encoder: Encoder | None = None,
        decoder: Callable[[bytes | None], Mapping[str, Any]] | None = None,
        commit_every: int = 1,
    ) -> None:
        self.processor = processor
        self.partitions = partitions
        self.commit_every = commit_every
        self._uncommitted = 0
        self.encoder = encoder
        self.decoder = decoder
        self.logs: dict[str, list[Written]] = {}
        self._next_offset: dict[tuple[str, int], int] = {}
        self._read: dict[str, int] = {}
        self._clock = 0
        processor.assigned(self._all_partitions())

    def _all_partitions(self) -> list[tuple[str, int]]:
        return [(t, p) for t in self.processor.source_topics for p in range(self.partitions)]

    def _append(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
                headers: Headers, ts: int) -> Written:  # fmt: skip
        offset = self._next_offset.get((topic, partition), 0)
        self._next_offset[(topic, partition)] = offset + 1
        w = Written(topic, partition, offset, key, value, headers, ts)
        self.logs.setdefault(topic, []).append(w)
        return w

    # ------------------------------------------------------------ input

    def pipe(
        self,
        value: Mapping[str, Any] | bytes | None,
        *,
        key: bytes | str | None = None,
        topic: str | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers = (),
    ) -> list[OutRecord]:
        """Append one record to the source topic and process it (and everything it causes).

        A mapping is encoded with ``encoder``; its key defaults to its ``source_account``.
        Every ``commit_every`` pipes the driver commits: it writes what ``processor.flush()``
        returns (changelog records), as the Kafka runtime does before each commit.
        Returns every record written as a consequence, in order.
        """
        first = self._input(value, key, topic, partition, timestamp_ms, headers)
        produced = self._run([first])
        self._uncommitted += 1
        if self._uncommitted >= self.commit_every:
            produced.extend(self.commit())
        return produced

    def pipe_batch(
        self, values: Iterable[Mapping[str, Any] | bytes | None], *, topic: str | None = None
    ) -> list[OutRecord]:
        """Append every value to the source topic, then process them as one consumed batch, as the
        Kafka runtime does (``process_batch``: the batch path where the topology allows it).

        Keys, partitions and timestamps as in ``pipe``; commits every ``commit_every`` values.
        Returns every record written as a consequence, in order.
        """
        inputs = [self._input(v, None, topic, None, None, ()) for v in values]
        produced = self._run(inputs)
        self._uncommitted += len(inputs)
        if self._uncommitted >= self.commit_every:
            produced.extend(self.commit())
        return produced

    def _input(
        self,
        value: Mapping[str, Any] | bytes | None,
        key: bytes | str | None,
        topic: str | None,
        partition: int | None,
        timestamp_ms: int | None,
        headers: Headers,
    ) -> Written:
        if isinstance(value, Mapping):
            if self.encoder is None:
                raise ValueError("piping a mapping needs an encoder")
            if key is None and "source_account" in value:
                key = str(value["source_account"])
            value = self.encoder(value)
        k = key.encode() if isinstance(key, str) else key
        topic = topic or self.processor.source_topics[0]
        if partition is None:
            partition = default_partition(k, self.partitions)
        self._clock += 1
        ts = self._clock if timestamp_ms is None else timestamp_ms
        return self._append(topic, partition, k, value, headers, ts)

    def _run(self, inputs: list[Written]) -> list[OutRecord]:
        """Process ``inputs`` as one batch, then every repartition record they cause, in order."""
        produced: list[OutRecord] = []
        repartition = set(self.processor.repartition_topics)
        queue: deque[Written] = deque()
        batch = inputs
        while batch:
            for rec, outs in zip(batch, self.processor.process_batch([w.as_raw() for w in batch]), strict=True):
                for out in outs:
                    produced.append(out)
                    p = out.partition if out.partition is not None else default_partition(out.key, self.partitions)
                    ts_out = out.timestamp_ms if out.timestamp_ms is not None else rec.timestamp_ms
                    w = self._append(out.topic, p, out.key, out.value, out.headers, ts_out)
                    if out.topic in repartition:
                        queue.append(w)
            batch = [queue.popleft()] if queue else []
        return produced

    def commit(self) -> list[OutRecord]:
        """Write the processor's ``flush()`` (state changes since the last commit); returns them."""
        self._uncommitted = 0
        flush = getattr(self.processor, "flush", None)
        out: list[OutRecord] = [] if flush is None else flush()
        for o in out:
            p = o.partition if o.partition is not None else default_partition(o.key, self.partitions)
            self._append(o.topic, p, o.key, o.value, o.headers, o.timestamp_ms if o.timestamp_ms is not None else 0)
        return out

    def pipe_all(self, values: Iterable[Mapping[str, Any] | bytes | None]) -> None:
        """``pipe`` each value (one at a time: stateful topologies see each one's repartition records first)."""
        for v in values:
            self.pipe(v)

    # ------------------------------------------------------------ output

    def records(self, topic: str) -> list[Written]:
        """Every record written to ``topic`` so far (all partitions, in write order)."""
        return list(self.logs.get(topic, []))

    def read(self, topic: str) -> list[Written]:
        """Records of ``topic`` not read before (like a consumer that keeps its position)."""
        log = self.logs.get(topic, [])
        start = self._read.get(topic, 0)
        self._read[topic] = len(log)
        return log[start:]

    def read_values(self, topic: str) -> list[Mapping[str, Any]]:
        """Decoded values of the unread records of ``topic`` (needs ``decoder``)."""
        if self.decoder is None:
            raise ValueError("reading values needs a decoder")
        return [self.decoder(w.value) for w in self.read(topic)]

    # ------------------------------------------------------------ crash and restore

    def restart(self, processor: TopologyProcessor) -> int:
        """Continue with ``processor`` (a fresh instance, as after a crash right after a commit):
        restore its state from the changelog logs; returns the number of changelog records replayed.

        Records piped since the last commit stay in the logs, but their state changes are lost, so
        call it with ``commit_every=1`` or right after ``commit()``.
        """
        self.processor = processor
        parts = self._all_partitions()
        processor.assigned(parts)
        n = 0
        for topic, p in parts:
            for ctopic, cp in processor.changelog_partitions(topic, p):
                for w in self.logs.get(ctopic, []):
                    if w.partition == cp:
                        processor.restore(w.as_raw())
                        n += 1
        return n

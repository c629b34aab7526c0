"""An in-memory test driver, like Kafka Streams' ``TopologyTestDriver``: no broker, the real runtime.

It runs the same ``ExactlyOnceRuntime`` as production, over ``topology.testing.fakes`` clients:
records piped in are appended to a source topic of a ``FakeCluster``; the runtime consumes,
processes, produces and commits them in transactions (changelog records via ``flush``,
repartition records read back by the next stage once committed); ``restart`` abandons the
runtime as a crash would (its open transaction is aborted when the successor starts) and a fresh
processor restores its state from the changelogs through the runtime's own restore path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from topology.records import Headers, OutRecord, Processor, RawRecord, header
from topology.runtime import ExactlyOnceRuntime, RuntimeSettings
from topology.state import encode_group_key
from topology.testing.fakes import Entry, FakeClients, FakeCluster

Encoder = Callable[[Mapping[str, Any]], bytes]
P = TypeVar("P", bound=Processor)


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
        return header(self.headers, name)

    def as_raw(self) -> RawRecord:
        return RawRecord(self.topic, self.partition, self.offset, self.key, self.value, self.timestamp_ms, self.headers)


def driver_settings(**overrides: Any) -> RuntimeSettings:
    """Runtime settings for the driver: it decides when to commit; failures retry at once."""
    base: dict[str, Any] = dict(
        commit_interval_ms=10**12, max_batch=10**9, consume_batch=10**6, retry_backoff_ms=0,
        retry_backoff_max_ms=0, restore_step_s=3600.0, checkpoint_interval_s=0.0,
    )  # fmt: skip
    base.update(overrides)
    return RuntimeSettings("in-memory", "driver", "one", **base)


class TopologyTestDriver(Generic[P]):
    """Runs a processor over records piped in; ``partitions`` applies to every topic."""

    def __init__(
        self,
        processor: P,
        *,
        partitions: int = 1,
        encoder: Encoder | None = None,
        decoder: Callable[[bytes | None], Mapping[str, Any]] | None = None,
        commit_every: int = 1,
        settings: RuntimeSettings | None = None,
        key_fields: Sequence[str] = (),
    ) -> None:
        self.partitions = partitions
        self.key_fields = tuple(key_fields)  # a piped mapping's key is made of these fields unless given
        self.commit_every = commit_every
        self.encoder = encoder
        self.decoder = decoder
        self.cluster = FakeCluster(partitions)
        self.settings = settings or driver_settings()
        for t in processor.source_topics:
            self.cluster.create(t, partitions)
        self._uncommitted = 0
        self._read: dict[str, int] = {}
        self._clock = 0
        self.processor = processor
        self.runtime = self._start(processor)

    def _start(self, processor: P) -> ExactlyOnceRuntime:
        runtime = ExactlyOnceRuntime(processor, self.settings, clients=FakeClients(self.cluster))
        runtime.open()
        self._drive(runtime)
        return runtime

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

        A mapping is encoded with ``encoder``; its key defaults to its ``key_fields``.
        Every ``commit_every`` pipes the driver commits (and then the next stages read what the
        commit made visible). Returns every record written as a consequence, in order.
        """
        mark = len(self.cluster.order)
        self._input(value, key, topic, partition, timestamp_ms, headers)
        return self._piped(1, mark)

    def pipe_batch(
        self, values: Iterable[Mapping[str, Any] | bytes | None], *, topic: str | None = None
    ) -> list[OutRecord]:
        """Append every value to the source topic, then let the runtime consume them as one batch (the
        batch path where the topology allows it). Returns every record written as a consequence."""
        mark = len(self.cluster.order)
        n = 0
        for v in values:
            self._input(v, None, topic, None, None, ())
            n += 1
        return self._piped(n, mark)

    def pipe_all(self, values: Iterable[Mapping[str, Any] | bytes | None]) -> None:
        """``pipe`` each value (one at a time: stateful topologies see each one's repartition records first)."""
        for v in values:
            self.pipe(v)

    def _piped(self, n: int, mark: int) -> list[OutRecord]:
        self._drive(self.runtime)
        self._uncommitted += n
        if self._uncommitted >= self.commit_every:
            self._commit_all()
        return self._written_since(mark)

    def _input(
        self,
        value: Mapping[str, Any] | bytes | None,
        key: bytes | str | None,
        topic: str | None,
        partition: int | None,
        timestamp_ms: int | None,
        headers: Headers,
    ) -> None:
        if isinstance(value, Mapping):
            if self.encoder is None:
                raise ValueError("piping a mapping needs an encoder")
            if key is None and self.key_fields:
                key = self._key_of(value)
            value = self.encoder(value)
        k = key.encode() if isinstance(key, str) else key
        topic = topic or self.processor.source_topics[0]
        p = self.cluster.partition_of(topic, k, -1 if partition is None else partition)
        self._clock += 1
        ts = self._clock if timestamp_ms is None else timestamp_ms
        self.cluster.append((topic, p), Entry(k, value, headers, ts))

    def _key_of(self, value: Mapping[str, Any]) -> bytes | None:
        """The key of ``value`` from ``key_fields`` (as the processor keys them; ``None`` if one is null)."""
        vals = [value.get(f) for f in self.key_fields]
        if any(v is None for v in vals):
            return None
        return str(vals[0]).encode() if len(vals) == 1 else encode_group_key(vals)

    # ------------------------------------------------------------ running

    def _drive(self, runtime: ExactlyOnceRuntime, limit: int = 100_000) -> None:
        """Step the runtime until it has restored everything and read everything visible to it."""
        for _ in range(limit):
            runtime.step()
            held = runtime.order is not None and runtime.order.held > 0  # read, not yet processed
            if not runtime.partitions.restoring and not held and not self._unread(runtime):
                return
        raise RuntimeError("the runtime did not catch up")

    def _unread(self, runtime: ExactlyOnceRuntime) -> bool:
        consumer = runtime._consumer
        if consumer is None or not getattr(consumer, "assignment", None):
            return True
        for tp in consumer.assignment:  # type: ignore[attr-defined]
            position = consumer.positions.get(tp, 0)  # type: ignore[attr-defined]
            if position < self.cluster.end(tp, read_committed=True):
                return True
        return False

    def _commit_all(self) -> None:
        """Commit, then let later stages read what became visible, until nothing is left open."""
        self._uncommitted = 0
        while self.runtime.txn is not None:
            self.runtime.commit()
            self._drive(self.runtime)

    def commit(self) -> list[OutRecord]:
        """Commit what is open (and what later stages then process); returns the records written."""
        mark = len(self.cluster.order)
        self._commit_all()
        return self._written_since(mark)

    def restart(self, processor: P) -> int:
        """Continue with ``processor`` as after a crash: the current runtime is abandoned without a commit
        (its open transaction is aborted when the new one starts); the new one restores its state from the
        changelogs and re-reads the uncommitted input. Returns the number of changelog records replayed."""
        self.processor = processor
        self.runtime = self._start(processor)
        restored = self.runtime.stats.restored
        self._uncommitted = self.commit_every  # what the crashed one had open is processed again: commit it
        self._commit_all()
        return restored

    # ------------------------------------------------------------ output

    def _written(self, tp: tuple[str, int], offset: int) -> Written | None:
        e = self.cluster.logs[tp][offset]
        if e.control or (e.txn is not None and e.txn.state == "aborted"):
            return None
        return Written(tp[0], tp[1], offset, e.key, e.value, e.headers, e.timestamp_ms)

    def _written_since(self, mark: int) -> list[OutRecord]:
        out = []
        for tp, offset in self.cluster.order[mark:]:
            w = self._written(tp, offset)
            if w is not None and tp[0] != self.processor.source_topics[0]:
                out.append(OutRecord(w.topic, w.key, w.value, w.headers, w.partition, w.timestamp_ms))
        return out

    @property
    def logs(self) -> dict[str, list[Written]]:
        """Every topic's records (all partitions, in write order), aborted ones left out."""
        out: dict[str, list[Written]] = {}
        for tp, offset in self.cluster.order:
            w = self._written(tp, offset)
            if w is not None:
                out.setdefault(tp[0], []).append(w)
        return out

    def records(self, topic: str) -> list[Written]:
        """Every record written to ``topic`` so far (all partitions, in write order), aborted ones left out."""
        return self.logs.get(topic, [])

    def read(self, topic: str) -> list[Written]:
        """Records of ``topic`` not read before (like a consumer that keeps its position)."""
        log = self.records(topic)
        start = self._read.get(topic, 0)
        self._read[topic] = len(log)
        return log[start:]

    def read_values(self, topic: str) -> list[Mapping[str, Any]]:
        """Decoded values of the unread records of ``topic`` (needs ``decoder``)."""
        if self.decoder is None:
            raise ValueError("reading values needs a decoder")
        return [self.decoder(w.value) for w in self.read(topic)]

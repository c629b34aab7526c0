"""The open transaction: one producer, begun lazily, its offsets and counts (Kafka Streams' ``StreamsProducer``
and Quix Streams' ``Checkpoint`` are the models).

``TransactionalProducer`` owns the transactional producer: ``begin`` (on the first record),
``send`` (an output), ``commit(offsets, group)`` in numbered steps, ``abort``. ``Transaction``
is what one transaction has read and written: per partition the first offset read (where an
abort rewinds to: the last committed offset) and the next offset to commit, and the counts a
``CommitReport`` carries. A new ``Transaction`` replaces the old one after every commit or
abort, so nothing is reset by hand.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from topology.deadletter import ERROR_CLASS
from topology.records import TP, Kind, OutRecord, header
from topology.runtime.clients import ProducerClient
from topology.runtime.errors import kafka_error
from topology.runtime.outage import UNREACHABLE, Outage
from topology.runtime.stats import CommitReport, OutKey


@dataclass
class Transaction:
    """What the open transaction has read and written."""

    started: float = field(default_factory=time.monotonic)
    records: int = 0
    first: dict[TP, int] = field(default_factory=dict)  # first offset read = last committed offset
    next: dict[TP, int] = field(default_factory=dict)  # offsets to commit
    records_in: Counter[str] = field(default_factory=Counter)
    records_out: Counter[OutKey] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)

    def expired(self, interval_s: float, max_records: int) -> bool:
        """Whether it is time to commit."""
        return self.records >= max_records or time.monotonic() - self.started >= interval_s

    def forget(self, parts: set[TP]) -> None:
        """Partitions revoked or lost: no offsets of theirs are sent, nowhere to rewind."""
        for tp in parts:
            self.first.pop(tp, None)
            self.next.pop(tp, None)

    def report(self, seconds: float) -> CommitReport:
        return CommitReport(dict(self.records_in), dict(self.records_out), dict(self.dead_letters), seconds)


_DEAD_LETTER = Kind.DEAD_LETTER

# Transactional calls repeated through a broker outage (librdkafka resumes them); any other is given up.
_RESUMED = frozenset({"init_transactions", "abort_transaction"})


class TransactionalProducer:
    """The transactional producer of one runtime instance and its in-flight flag."""

    def __init__(self, producer: ProducerClient, timeout_s: float, patience_s: float, outage: Outage) -> None:
        self.producer = producer
        self.timeout_s = timeout_s
        self.patience_s = patience_s  # how long retriable errors (a broker outage) are waited out
        self.outage = outage  # the runtime's broker outage state: retried calls start and end one
        self.outages = outage.outages  # outages begun before this producer was made
        self.in_flight = False

    def init(self) -> None:
        """``init_transactions``: fences a zombie with the same transactional.id, settles its transaction."""
        self._retrying(lambda: self.producer.init_transactions(self.timeout_s), "init_transactions")
        self.outages = self.outage.outages  # an outage that init waited out is over for this producer

    def begin(self) -> None:
        self.producer.begin_transaction()
        self.in_flight = True

    def send(self, txn: Transaction, o: OutRecord, timestamp_ms: int) -> None:
        """Produce ``o`` in the transaction (``timestamp_ms`` when ``o`` has none) and count it."""
        self.send_all(txn, (o,), timestamp_ms)

    def send_all(self, txn: Transaction, outs: Iterable[OutRecord], timestamp_ms: int) -> None:
        """``send`` of each of ``outs``, in order. The hot path (once per input record, and per commit), so
        the produce call is made here, not through ``produce``: 1.44 -> 1.10 µs per input record of two
        outputs, measured 2026-12-07 over a no-op client (of that, counting ``records_out`` is 0.45)."""
        produce = self.producer.produce
        counts = txn.records_out
        for o in outs:
            part, ts, headers = o.partition, o.timestamp_ms, o.headers
            args = (o.topic, o.value, o.key, -1 if part is None else part, None, None,
                    timestamp_ms if ts is None else ts, list(headers) if headers else None)  # fmt: skip
            try:
                produce(*args)
            except BufferError:
                self._produce_waiting(args)
            counts[(o.topic, o.kind, o.labels)] += 1
            if o.kind is _DEAD_LETTER:
                raw = header(headers, ERROR_CLASS)
                txn.dead_letters["unknown" if raw is None else raw.decode("utf-8", "replace")] += 1

    def produce(
        self, topic: str, value: bytes | None, key: bytes | None, partition: int, ts: int,
        headers: list[tuple[str, bytes]] | None,
    ) -> None:  # fmt: skip
        """One ``produce``; when librdkafka's local queue is full, serve it until there is room."""
        self._produce_waiting((topic, value, key, partition, None, None, ts, headers))

    def _produce_waiting(self, args: tuple[Any, ...]) -> None:
        """The client's ``produce(*args)``, serving its queue (``poll``) for as long as it is full."""
        while True:
            try:
                self.producer.produce(*args)
                return
            except BufferError:
                self.producer.poll(0.05)

    def commit(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        """Commit: 1. send the consumed offsets into the transaction, 2. commit it. Raises ``KafkaException``."""
        if offsets:
            self._retrying(
                lambda: self.producer.send_offsets_to_transaction(offsets, group_metadata, self.timeout_s),
                "send_offsets_to_transaction",
            )
        # flush serves the delivery reports while it waits (commit_transaction would wait for the application
        # to poll them, and timed out after 30 s here after a refused produce request); what it leaves, the
        # commit waits for.
        self.producer.flush(self.timeout_s)
        self._retrying(lambda: self.producer.commit_transaction(self.timeout_s), "commit_transaction")
        self.in_flight = False

    def abort(self) -> None:
        """Abort the transaction in flight (raises ``KafkaException`` when even that fails)."""
        if self.in_flight:
            # abort_transaction waits for the application to serve the delivery reports of what it purges: in
            # one long call it timed out after 30 s here. Short calls, with the reports served between them
            # (_retrying polls), finish it; a timed-out abort may be called again (librdkafka resumes it).
            self._retrying(lambda: self.producer.abort_transaction(1.0), "abort_transaction")
        self.in_flight = False

    def _retrying(self, call: Callable[[], None], what: str) -> None:
        """Run a transactional call, repeating it after 0.5 s while librdkafka says the error is retriable,
        for up to ``patience_s``; the outage's start and end are logged once by ``outage``.

        Only ``init_transactions`` and ``abort_transaction`` are repeated through a broker outage. librdkafka
        may block for ever in another transactional call repeated after a timeout or a lost connection (its
        issues 5456/5511; seen here in ``send_offsets_to_transaction`` after a broker SIGKILL and restart),
        so such an error goes to the caller, which replaces the producer: the new one's init waits.
        """
        started = time.monotonic()
        while True:
            try:
                call()
                self.outage.back()
                return
            except KafkaException as exc:
                err = kafka_error(exc)
                if not err.retriable() or err.fatal() or time.monotonic() - started > self.patience_s:
                    raise
                if err.code() == KafkaError._TIMED_OUT and what == "abort_transaction" and not self.outage.down:
                    self.producer.poll(0.1)  # the delivery reports it waits for
                    continue
                unreachable = err.code() in (KafkaError._TIMED_OUT, *UNREACHABLE) or self.outage.down
                if unreachable and what not in _RESUMED:
                    self.outage.lost(f"{what}: {err.str()}", since=started)  # the call may have blocked long
                    raise
                self.outage.lost(f"{what}: {err.str()}; waited out for up to {self.patience_s:.0f} s")
                self.producer.poll(0)
                time.sleep(0.5)

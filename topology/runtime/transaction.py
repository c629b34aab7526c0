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

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from topology.deadletter import ERROR_CLASS
from topology.records import TP, Kind, OutRecord, header
from topology.runtime.clients import ProducerClient
from topology.runtime.errors import kafka_error
from topology.runtime.stats import CommitReport, OutKey

log = logging.getLogger("fraudstream.runtime")


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


class TransactionalProducer:
    """The transactional producer of one runtime instance and its in-flight flag."""

    def __init__(self, producer: ProducerClient, timeout_s: float, patience_s: float) -> None:
        self.producer = producer
        self.timeout_s = timeout_s
        self.patience_s = patience_s  # how long retriable errors (a broker outage) are waited out
        self.in_flight = False

    def init(self) -> None:
        """``init_transactions``: fences a zombie with the same transactional.id, settles its transaction."""
        retrying(lambda: self.producer.init_transactions(self.timeout_s), "init_transactions", self.patience_s)

    def begin(self) -> None:
        self.producer.begin_transaction()
        self.in_flight = True

    def send(self, txn: Transaction, o: OutRecord, timestamp_ms: int) -> None:
        """Produce ``o`` in the transaction (``timestamp_ms`` when ``o`` has none) and count it."""
        self.produce(
            o.topic, o.value, o.key, -1 if o.partition is None else o.partition,
            timestamp_ms if o.timestamp_ms is None else o.timestamp_ms, list(o.headers) if o.headers else None,
        )  # fmt: skip
        txn.records_out[(o.topic, o.kind, o.labels)] += 1
        if o.kind is Kind.DEAD_LETTER:
            raw = header(o.headers, ERROR_CLASS)
            txn.dead_letters["unknown" if raw is None else raw.decode("utf-8", "replace")] += 1

    def produce(
        self, topic: str, value: bytes | None, key: bytes | None, partition: int, ts: int,
        headers: list[tuple[str, bytes]] | None,
    ) -> None:  # fmt: skip
        """One ``produce``; when librdkafka's local queue is full, serve it until there is room."""
        args: tuple[Any, ...] = (topic, value, key, partition, None, None, ts, headers)
        while True:
            try:
                self.producer.produce(*args)
                return
            except BufferError:
                self.producer.poll(0.05)

    def commit(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        """Commit: 1. send the consumed offsets into the transaction, 2. commit it. Raises ``KafkaException``."""
        if offsets:
            retrying(
                lambda: self.producer.send_offsets_to_transaction(offsets, group_metadata, self.timeout_s),
                "send_offsets_to_transaction", self.patience_s,
            )  # fmt: skip
        retrying(lambda: self.producer.commit_transaction(self.timeout_s), "commit_transaction", self.patience_s)
        self.in_flight = False

    def abort(self) -> None:
        """Abort the transaction in flight (raises ``KafkaException`` when even that fails)."""
        if self.in_flight:
            retrying(lambda: self.producer.abort_transaction(self.timeout_s), "abort_transaction", self.patience_s)
        self.in_flight = False


def retrying(call: Callable[[], None], what: str, patience_s: float) -> None:
    """Run a transactional call, repeating it while librdkafka says the error is retriable (a timed-out
    call may be called again: librdkafka resumes it), for up to ``patience_s``: a broker outage is
    waited out, with one log line when it starts and one when it ends."""
    started = time.monotonic()
    waited = False
    while True:
        try:
            call()
            if waited:
                log.warning("%s: the broker answers again after %.0f s", what, time.monotonic() - started)
            return
        except KafkaException as exc:
            err = kafka_error(exc)
            if not err.retriable() or err.fatal() or time.monotonic() - started > patience_s:
                raise
            if err.code() == KafkaError._TIMED_OUT and what != "init_transactions":
                # librdkafka may block for ever in a transactional call retried after a timeout (its
                # issues 5456/5511, seen here after a broker restart): the caller replaces the producer.
                raise
            if not waited:
                waited = True
                log.warning("%s: %s; waiting for the broker (up to %.0f s)", what, err.str(), patience_s)
            time.sleep(0.5 if waited else 0.1)

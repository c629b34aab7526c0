"""One consumed batch through the processor, inside the open transaction (the loop's hot path).

Per message: skip it unless its partition is owned and the offset is the next expected one;
begin the transaction on the first record; route it by the processor's batch decision when it
has one (``route_batch``: stateless topologies), else ``process`` it; produce what comes out.
A failure aborts the transaction (``ExactlyOnceRuntime.abort``), waits, and raises ``Abort``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException

from topology.deadletter import REDUCTIONS
from topology.records import TP, Decision, Headers, Kind, RawRecord
from topology.runtime.clients import MessageLike
from topology.runtime.errors import FatalRuntimeError, kafka_error
from topology.runtime.failures import dead_letter
from topology.runtime.stats import OutKey
from topology.runtime.transaction import Transaction, TransactionalProducer

if TYPE_CHECKING:
    from topology.runtime.loop import ExactlyOnceRuntime

log = logging.getLogger("fraudstream.runtime")

Table = Mapping[int, tuple[str, list[tuple[str, bytes]], OutKey]]


class BatchProcessing:
    """Processes consumed batches for one runtime."""

    def __init__(self, runtime: ExactlyOnceRuntime) -> None:
        self.rt = runtime
        self._table_of: Mapping[int, Decision] | None = None
        self._table: Table = {}

    def table(self, decisions: Mapping[int, Decision]) -> Table:
        """Per decision code: (topic, headers as produce takes them, stats key); cached per decisions."""
        if decisions is not self._table_of:
            self._table_of = decisions
            self._table = {code: (t, list(h), (t, Kind.DECISION, labels)) for code, (t, h, labels) in decisions.items()}
        return self._table

    def process(self, messages: Sequence[MessageLike], producer: TransactionalProducer) -> None:
        """Process ``messages`` in the open transaction (raises ``Abort`` after a failure)."""
        rt = self.rt
        parts = rt.partitions
        expected = parts.expected
        if rt.stats.first_record_at is None:
            rt.stats.first_record_at = time.monotonic()
        codes, table, values = self._route(messages)
        decided: dict[int, int] = {}  # code -> records routed by the batch path
        # Partition bookkeeping once per run of messages of one partition (consume returns runs).
        run: TP | None = None
        ours = False
        floor = -1  # offsets below it are stale copies (fetched before a seek) or done
        txn: Transaction | None = None
        for index, m in enumerate(messages):
            if m.error() is not None:
                self._message_error(m)
                continue
            topic: str = m.topic()  # type: ignore[assignment]
            partition: int = m.partition()  # type: ignore[assignment]
            offset: int = m.offset()  # type: ignore[assignment]
            if run is None or partition != run[1] or topic != run[0]:
                if run is not None and txn is not None and floor > expected.get(run, -1):
                    expected[run] = txn.next[run] = floor
                run = (topic, partition)
                ours = parts.owns(run)
                floor = expected.get(run, -1)
                if not ours:
                    parts.skipped(run, offset)
            if not ours or offset < floor:
                continue  # fetched before a revoke, a seek or a pause: not ours to process
            if txn is None:
                txn = rt.begin()
            if run not in txn.first:
                txn.first[run] = offset
            ts = max(m.timestamp()[1], 0)
            code = -1 if codes is None else codes[index]
            try:
                if code >= 0:
                    d_topic, d_headers, _ = table[code]
                    hdrs = m.headers()
                    producer.produce(d_topic, values[index], m.key(), -1, ts,
                                     [*hdrs, *d_headers] if hdrs else d_headers)  # fmt: skip
                    decided[code] = decided.get(code, 0) + 1
                else:
                    self._one(txn, producer, _record(m, topic, partition, offset, ts))
            except FatalRuntimeError:
                raise
            except Exception as exc:
                self._failed(_record(m, topic, partition, offset, ts), exc, messages, index)
            floor = offset + 1
            txn.records_in[topic] += 1
            txn.records += 1
        if run is not None and txn is not None and floor > expected.get(run, -1):
            expected[run] = txn.next[run] = floor
        if txn is not None:
            for code, n in decided.items():
                txn.records_out[table[code][2]] += n

    def _route(self, messages: Sequence[MessageLike]) -> tuple[list[int] | None, Table, list[bytes | None]]:
        """The processor's batch decisions (a code per message, -1 = ``process`` it), if it has a batch path.
        Not while a record is being retried (the per-record path counts its failures)."""
        if self.rt.failures:
            return None, {}, []
        values = [m.value() for m in messages]
        routing = self.rt.processor.route_batch(values)
        if routing is None:
            return None, {}, values
        return routing.codes, self.table(routing.decisions), values

    def _one(self, txn: Transaction, producer: TransactionalProducer, record: RawRecord) -> None:
        rt = self.rt
        failure = rt.failures.exhausted(record)
        if failure is not None:
            self._give_up(txn, producer, record, failure.error, failure.count)
            return
        producer.send_all(txn, rt.processor.process(record), record.timestamp_ms)

    def _give_up(
        self, txn: Transaction, producer: TransactionalProducer, record: RawRecord, error: BaseException, count: int
    ) -> None:
        """Dead-letter ``record`` (reduced until it fits: ``deadletter.REDUCTIONS``), or stop."""
        rt = self.rt
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        if rt.settings.on_error == "fail" or rt.dlq_topic is None:
            rt.abort("giving up")
            raise FatalRuntimeError(f"record {where} failed {count} times, giving up: {type(error).__name__}: {error}")
        log.error("dead-lettering %s after %d failures: %s", where, count, error)
        # Each further failure of the dead letter itself (refused at commit) starts one reduction further.
        start = min(len(REDUCTIONS) - 1, max(0, count - rt.settings.max_retries - 1))
        for i, omit in enumerate(REDUCTIONS[start:], start):
            try:
                producer.send(txn, dead_letter(record, rt.dlq_topic, error, count, omit), record.timestamp_ms)
                return
            except KafkaException as exc:
                if kafka_error(exc).code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise
                if i + 1 < len(REDUCTIONS):
                    log.warning("the dead letter of %s is too large for the producer: written without its %s",
                                where, ", ".join(REDUCTIONS[i + 1]))  # fmt: skip
        raise FatalRuntimeError(f"record {where}: even its smallest dead letter is too large for the producer")

    def _failed(self, record: RawRecord, exc: Exception, batch: Sequence[MessageLike], index: int) -> None:
        """Abort the transaction after ``record`` failed; wait; raise ``Abort``."""
        from topology.runtime.loop import Abort

        rt = self.rt
        failed_already = False  # the transaction failed before this record (a produce request was refused)
        if isinstance(exc, KafkaException):
            err = kafka_error(exc)
            fatal = rt.fatal(err, "produce")
            if fatal is not None:
                raise fatal from exc
            failed_already = err.code() == KafkaError._STATE
        # Every partition of this batch goes back, also those whose records were not reached yet.
        txn = rt.txn
        if txn is not None:
            for m in batch[index:]:
                if m.error() is None:
                    tp: TP = (m.topic(), m.partition())  # type: ignore[assignment]
                    if rt.partitions.owns(tp) and tp not in txn.first:
                        txn.first[tp] = m.offset()  # type: ignore[assignment]
        if failed_already:  # not this record's fault: the commit reports the refusal, aborts and rewinds
            if rt.commit():
                raise FatalRuntimeError(f"a produce failed ({exc}) but its transaction committed")
            raise Abort
        rt.stats.retries += 1
        wait = rt.failures.failed(record, exc)
        # A transient error (the registry is down) is retried until it works; its outage is logged once.
        level = logging.DEBUG if isinstance(exc, rt.settings.transient_errors) else logging.INFO
        rt.abort(f"processing error on {record.topic}[{record.partition}]@{record.offset}", level)
        if wait > 0:
            time.sleep(wait)
        raise Abort

    def _message_error(self, m: MessageLike) -> None:
        error = m.error()
        assert error is not None
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise FatalRuntimeError(f"fatal Kafka error in consume: {error.name()}: {error.str()}")
        log.warning("consumer: %s", error)


_RAW_FIELDS = ("topic", "partition", "offset", "key", "value", "timestamp_ms", "headers")
if tuple(f.name for f in dataclasses.fields(RawRecord)) != _RAW_FIELDS:
    raise ImportError("RawRecord's fields changed: update topology.runtime.batch._record")
_NEW = object.__new__
_SET_TOPIC, _SET_PARTITION, _SET_OFFSET, _SET_KEY, _SET_VALUE, _SET_TS, _SET_HEADERS = (
    getattr(RawRecord, name).__set__ for name in _RAW_FIELDS
)


def _record(m: MessageLike, topic: str, partition: int, offset: int, ts: int) -> RawRecord:
    """``RawRecord(...)`` of a message at half the cost: the slots are set directly, not through the
    frozen dataclass ``__init__`` (one ``object.__setattr__`` call per field); same resulting value."""
    hdrs = m.headers()
    headers: Headers = tuple((k, v if v is not None else b"") for k, v in hdrs) if hdrs else ()
    r: RawRecord = _NEW(RawRecord)
    _SET_TOPIC(r, topic)
    _SET_PARTITION(r, partition)
    _SET_OFFSET(r, offset)
    _SET_KEY(r, m.key())
    _SET_VALUE(r, m.value())
    _SET_TS(r, ts)
    _SET_HEADERS(r, headers)
    return r

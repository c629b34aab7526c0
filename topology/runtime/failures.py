"""What the runtime does with a record that fails: retry with backoff, then dead-letter it or stop."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException

from topology import deadletter
from topology.records import TP, OutRecord, RawRecord
from topology.runtime.errors import FatalRuntimeError, backoff_seconds
from topology.runtime.outage import Outage
from topology.runtime.settings import RuntimeSettings

log = logging.getLogger("fraudstream.runtime")


def dead_letter(
    record: RawRecord, topic: str, error: BaseException, attempts: int, omit: tuple[str, ...] = ()
) -> OutRecord:
    """The dead letter of an input the processor kept failing on (reason ``retries-exhausted``), without
    the parts named in ``omit`` (``deadletter.REDUCTIONS``)."""
    return deadletter.dead_letter(
        topic, record.key, record.value, record.headers,
        deadletter.Source(record.topic, record.partition, record.offset),
        deadletter.Failure.of(error, "retries-exhausted"),
        extra=((deadletter.ERROR_ATTEMPTS, str(attempts).encode()),), omit=omit,
    )  # fmt: skip


@dataclass
class Failure:
    count: int
    error: BaseException


class Failures:
    """Failures per input record since its last commit, and consecutive transient failures."""

    def __init__(self, settings: RuntimeSettings) -> None:
        self._settings = settings
        self._by_record: dict[tuple[str, int, int], Failure] = {}
        self._transient = 0  # transient failures in a row (of the record at ``_transient_at``)
        self._transient_at: tuple[str, int, int] | None = None
        self.outage = Outage(settings.transient_source, log)  # transient errors: one line each way

    def __bool__(self) -> bool:
        return bool(self._by_record)

    def exhausted(self, record: RawRecord) -> Failure | None:
        """The failure of ``record`` when it failed more than ``max_retries`` times (give up on it)."""
        if not self._by_record:
            return None
        f = self._by_record.get((record.topic, record.partition, record.offset))
        return f if f is not None and f.count > self._settings.max_retries else None

    def failed(self, record: RawRecord, exc: BaseException) -> float:
        """Count a failure of ``record``; returns how long to wait before the retry (0: give up next time)."""
        s = self._settings
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        if isinstance(exc, s.transient_errors):
            self._transient += 1
            self._transient_at = (record.topic, record.partition, record.offset)
            self.outage.lost(f"processing {where}: {type(exc).__name__}: {exc}")
            log.debug("processing %s failed (transient, attempt %d)", where, self._transient)
            return backoff_seconds(self._transient, s.retry_backoff_ms, s.retry_backoff_max_ms)
        key = (record.topic, record.partition, record.offset)
        f = self._by_record.get(key) or Failure(0, exc)
        self._by_record[key] = f
        f.count += 1
        f.error = exc
        log.warning(
            "processing %s failed (%d/%d): %s: %s", where, f.count, s.max_retries, type(exc).__name__, exc
        )
        if f.count > s.max_retries:
            return 0.0
        return backoff_seconds(f.count, s.retry_backoff_ms, s.retry_backoff_max_ms)

    def committed(self, next_offsets: dict[TP, int]) -> None:
        """A commit moved past some failed records: forget them, and the transient streak once the record
        that failed transiently is committed (other partitions' commits meanwhile prove nothing)."""
        at = self._transient_at
        if at is not None and next_offsets.get((at[0], at[1]), 0) > at[2]:
            self._transient, self._transient_at = 0, None
            self.outage.back()
        if self._by_record:
            self._by_record = {
                k: f for k, f in self._by_record.items() if k[2] >= next_offsets.get((k[0], k[1]), 0)
            }

    def forget(self, parts: Iterable[TP]) -> None:
        gone = set(parts)
        if self._transient_at is not None and self._transient_at[:2] in gone:
            self._transient, self._transient_at = 0, None
        self._by_record = {k: f for k, f in self._by_record.items() if (k[0], k[1]) not in gone}


# Errors of a commit that one record in the transaction can cause (its produce request was refused).
_PER_RECORD = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD,
    KafkaError.POLICY_VIOLATION,
})  # fmt: skip


class Refusals:
    """Commits the broker refused (e.g. a record larger than a sink topic's ``max.message.bytes``).

    Such a failure shows only at commit, for the whole produce request, so the record is unknown. After
    each refusal the next transactions hold half as many input records, down to one: that record is then
    counted as failing (``Failures``), retried, and dead-lettered like any other. Commits double the limit
    back. ``max_refusals`` refusals in a row, whatever their cause, stop the runtime with the last error.
    """

    def __init__(self, settings: RuntimeSettings, failures: Failures, max_refusals: int = 50) -> None:
        self._settings = settings
        self._failures = failures
        self._max_refusals = max_refusals
        self.limit: int | None = None  # records per transaction at most while bisecting (None: max_batch)
        self.streak = 0

    @property
    def max_batch(self) -> int:
        return self._settings.max_batch if self.limit is None else self.limit

    def refused(self, records: int, first: dict[TP, int], error: KafkaError) -> None:
        """A commit of ``records`` input records (first offsets ``first``) was refused and aborted."""
        self.streak += 1
        if self.streak > self._max_refusals:
            raise FatalRuntimeError(
                f"the broker refused {self.streak - 1} commits in a row; the last: {error.name()}: {error.str()}"
            )
        if error.code() not in _PER_RECORD:
            return
        if records > 1:
            self.limit = max(1, records // 2)
            log.warning("commit refused (%s): next transactions hold at most %d records, to find the record",
                        error.name(), self.limit)  # fmt: skip
            return
        if len(first) == 1:
            ((topic, partition), offset) = next(iter(first.items()))
            culprit = RawRecord(topic, partition, offset, None, None, 0, ())
            self._failures.failed(culprit, KafkaException(error))

    def committed(self) -> None:
        self.streak = 0
        if self.limit is not None:
            self.limit = None if self.limit * 2 >= self._settings.max_batch else self.limit * 2

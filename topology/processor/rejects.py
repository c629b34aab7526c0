"""The dead-letter record of a record the processor rejects (it cannot be decoded or evaluated, or its
alert cannot be built): the original record's bytes and headers, the error, and the original record's
coordinates, also when it reaches a later stage through a repartition topic (``topology.deadletter``)."""

from __future__ import annotations

from topology.deadletter import Failure, Source, dead_letter
from topology.plan.model import Rule
from topology.processor.stages import INTERNAL
from topology.processor.timeguard import EventTimeSkew
from topology.records import H_KEY, H_ORIGIN, OutRecord, RawRecord, header


class EvaluationError(Exception):
    """A record whose rules cannot be evaluated (dead-lettered)."""


class DeadLetters:
    """The dead-letter records of one installed topology."""

    def __init__(
        self, dlq: str, repartition_topics: tuple[str, ...], decode_errors: tuple[type[Exception], ...],
        version_header: tuple[str, bytes],
    ) -> None:  # fmt: skip
        self.dlq = dlq
        self._repartition_topics = repartition_topics
        self._named = (*decode_errors, EventTimeSkew)  # errors named by their own class, the others EvaluationError
        self._version_header = version_header

    def of(self, record: RawRecord, exc: BaseException, reason: str, rule: Rule | None = None) -> OutRecord:
        """The dead-letter record of ``record``, rejected for ``exc`` (``reason``; ``rule``: the rule that raised)."""
        topic, partition, offset = record.topic, str(record.partition), str(record.offset)
        key, headers = record.key, record.headers
        origin = header(record.headers, H_ORIGIN) if record.topic in self._repartition_topics else None
        if origin is not None:  # from a repartition topic: name the original record
            topic, partition, offset = origin.decode().rsplit(":", 2)
            key = header(record.headers, H_KEY)
            headers = tuple(h for h in record.headers if h[0] not in INTERNAL)
        message = str(exc) or type(exc).__name__
        if rule is not None:
            message = f"rule {rule.ref}: {type(exc).__name__}: {message}"
        cls = type(exc).__name__ if isinstance(exc, self._named) else EvaluationError.__name__
        return dead_letter(
            self.dlq, key, record.value, headers, Source(topic, int(partition), int(offset)),
            Failure(cls, reason, message), extra=(self._version_header,), timestamp_ms=record.timestamp_ms,
        )  # fmt: skip

"""The dead-letter contract: the one builder of every record given up on, and the headers it writes.

A dead letter keeps the original key, value and headers, and adds, in this order:
``error.class`` (the exception's class name), ``error.reason`` (a short stable code such as
``not-wire-format``, ``evaluation`` or ``retries-exhausted``), ``error.message`` (at most
``MAX_MESSAGE`` characters), ``source.topic``, ``source.partition`` and ``source.offset`` (where
the input was read), then whatever the caller adds (``error.attempts``, a version header).

A dead letter too large for the producer (an input near the broker's limit, plus these headers) is
written with ``omit``: without its value (``error.omitted: value``, ``error.value.bytes``), then also
without the original headers, then also without the key, so that it always fits.
"""

from __future__ import annotations

from dataclasses import dataclass

from topology.records import Headers, Kind, OutRecord

ERROR_CLASS = "error.class"
ERROR_REASON = "error.reason"
ERROR_MESSAGE = "error.message"
ERROR_ATTEMPTS = "error.attempts"
ERROR_OMITTED = "error.omitted"  # a dead letter too large to write whole: what it leaves out ("value", ...)
ERROR_VALUE_BYTES = "error.value.bytes"  # ... and the size of the value it left out

REDUCTIONS: tuple[tuple[str, ...], ...] = ((), ("value",), ("value", "headers"), ("value", "headers", "key"))
"""What a dead letter leaves out, from the whole record to the smallest form (``dead_letter(omit=...)``)."""
SOURCE_TOPIC = "source.topic"
SOURCE_PARTITION = "source.partition"
SOURCE_OFFSET = "source.offset"
CONTRACT: tuple[str, ...] = (ERROR_CLASS, ERROR_REASON, ERROR_MESSAGE, SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET)
"""The headers every dead letter carries."""
MAX_MESSAGE = 2000


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record was read: the coordinates a dead letter names."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a record is given up on."""

    error_class: str
    reason: str
    message: str

    @classmethod
    def of(cls, error: BaseException, reason: str, message: str | None = None) -> Failure:
        """The failure of ``error`` (its class name; its text unless ``message`` is given)."""
        return cls(type(error).__name__, reason, str(error) if message is None else message)


def dead_letter(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    source: Source,
    failure: Failure,
    *,
    extra: Headers = (),
    timestamp_ms: int | None = None,
    omit: tuple[str, ...] = (),
) -> OutRecord:
    """The dead letter of the record ``key``/``value``/``headers`` read at ``source``, for ``topic``;
    without the parts named in ``omit`` (one of ``REDUCTIONS``), saying what it left out."""
    message = failure.message[:MAX_MESSAGE] or failure.error_class
    if omit:
        said = ((ERROR_OMITTED, ",".join(omit).encode()), (ERROR_VALUE_BYTES, str(len(value or b"")).encode()))
        extra = (*extra, *said)
        key, value = None if "key" in omit else key, None
        headers = () if "headers" in omit else headers
    return OutRecord(
        topic,
        key,
        value,
        (
            *headers,
            (ERROR_CLASS, failure.error_class.encode()),
            (ERROR_REASON, failure.reason.encode()),
            (ERROR_MESSAGE, message.encode("utf-8", errors="replace")),
            (SOURCE_TOPIC, source.topic.encode()),
            (SOURCE_PARTITION, str(source.partition).encode()),
            (SOURCE_OFFSET, str(source.offset).encode()),
            *extra,
        ),
        None,
        timestamp_ms,
        kind=Kind.DEAD_LETTER,
        labels=(failure.reason,),
    )

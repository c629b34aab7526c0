"""`fraudstream consume`: an Avro console consumer, like ``kafka-avro-console-consumer``.

Values are decoded from the Confluent wire format through the registry and
printed as one JSON object per line on stdout. Like the Kafka console consumer it reads a
topic through a consumer group, or one ``--partition`` from an ``--offset`` (no group). Decimals print as exact
strings, timestamps as ISO-8601 UTC, bytes as hex. With ``--print-key`` or
``--print-headers`` each line is an envelope
``{"partition", "offset", "key", "headers", "value"}``. A record that cannot be
decoded prints one error line on stderr (partition, offset, reason) and the
consumer goes on.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TextIO

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient

from services.config import KafkaSettings
from services.kafka import consumer_config
from topology.serde.decoder import AvroDecoder, DecodeError


def to_json(value: Any) -> Any:
    """JSON-ready form of a decoded Avro value (``json.dumps`` default hook)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, bytes | bytearray):
        return value.hex()
    raise TypeError(f"cannot print {type(value).__name__} as JSON")


def render(message: Message, record: dict[str, Any], *, print_key: bool, print_headers: bool) -> str:
    """One output line for a decoded record."""
    if not (print_key or print_headers):
        return json.dumps(record, default=to_json, ensure_ascii=False)
    envelope: dict[str, Any] = {"partition": message.partition(), "offset": message.offset()}
    if print_key:
        envelope["key"] = _text(message.key())
    if print_headers:
        raw_headers = message.headers() or []
        pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
        envelope["headers"] = {name: _text(raw) for name, raw in pairs}
    envelope["value"] = record
    return json.dumps(envelope, default=to_json, ensure_ascii=False)


def _text(raw: str | bytes | None) -> str | None:
    if raw is None or isinstance(raw, str):
        return raw
    return raw.decode("utf-8", errors="backslashreplace")


def parse_offset(text: str) -> int:
    """An ``--offset`` as a librdkafka start offset: ``earliest``, ``latest`` or an absolute offset N."""
    word = text.strip().lower()
    if word == "earliest":
        return OFFSET_BEGINNING
    if word == "latest":
        return OFFSET_END
    if not word.isdigit():
        raise ValueError(f"{text!r} is not an offset: use earliest, latest or a number (0 or more)")
    return int(word)


@dataclass
class ConsumeResult:
    """What a run printed."""

    printed: int = 0
    errors: int = 0


def consume(
    kafka: KafkaSettings,
    registry: SchemaRegistryClient,
    topic: str,
    *,
    group_id: str | None = None,
    from_beginning: bool = False,
    max_messages: int | None = None,
    idle_timeout_s: float | None = None,
    read_committed: bool = True,
    print_key: bool = False,
    print_headers: bool = False,
    partition: int | None = None,
    offset: int = OFFSET_END,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> ConsumeResult:
    """Print decoded records of ``topic`` until ``max_messages``, ``idle_timeout_s`` without records, or ``stop()``.

    Offsets are committed only with an explicit ``group_id`` (like the Kafka console consumer's own group).
    With ``partition``, that partition alone is read from ``offset`` (see ``parse_offset``), without a group.
    """
    if partition is not None and group_id is not None:
        raise ValueError("a group cannot be used with a partition: choose one")
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    commit = group_id is not None
    config = consumer_config(
        kafka,
        group_id or f"fraudstream-console-{uuid.uuid4().hex[:12]}",
        from_beginning=from_beginning,
        read_committed=read_committed,
        **{"enable.auto.commit": commit},
    )
    consumer = Consumer(config)
    decoder = AvroDecoder(registry)
    result = ConsumeResult()
    try:
        if partition is None:
            consumer.subscribe([topic])
        else:
            consumer.assign([TopicPartition(topic, partition, offset)])
        idle = 0.0
        while not stop() and (max_messages is None or result.printed + result.errors < max_messages):
            want = 500 if max_messages is None else min(500, max_messages - result.printed - result.errors)
            messages = consumer.consume(want, timeout=0.5)
            if not messages:
                idle += 0.5
                if idle_timeout_s is not None and idle >= idle_timeout_s:
                    break
                continue
            idle = 0.0
            _print(messages, decoder, result, out, err, print_key=print_key, print_headers=print_headers)
        out.flush()
    finally:
        consumer.close()
    return result


def _print(
    messages: list[Message], decoder: AvroDecoder, result: ConsumeResult, out: TextIO, err: TextIO, *,
    print_key: bool, print_headers: bool,
) -> None:  # fmt: skip
    """Print one consumed batch: a line per record on ``out``, a line per undecodable one on ``err``."""
    lines: list[str] = []
    for message in messages:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(error)
        try:
            record = decoder.decode(message.value())
        except DecodeError as exc:
            result.errors += 1
            print(
                f"ERROR partition={message.partition()} offset={message.offset()} reason={exc.reason}: {exc}",
                file=err,
            )
            continue
        lines.append(render(message, record, print_key=print_key, print_headers=print_headers))
    if lines:
        out.write("\n".join(lines) + "\n")
        result.printed += len(lines)

"""`fraudstream produce`: an Avro console producer, like ``kafka-avro-console-producer``.

Reads JSON lines (the exact-decimal JSON ``fraudstream consume`` prints: decimals as strings,
timestamps as ISO-8601, bytes as hex) and writes them in the Confluent wire format with the
topic's registered value schema (or a schema file). A line is a record, or an envelope with
``key``, ``value`` (and ``headers``) as ``consume --print-key`` prints it. The first line that does
not fit stops the run: it is reported with its line number and field, and not sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from confluent_kafka import KafkaError, Producer

from services.config import KafkaSettings
from services.kafka import producer_config
from topology.serde.decoder import AvroEncoder, EncodeError, describe_type

_ENVELOPE = frozenset({"partition", "offset", "key", "headers", "value"})


class LineError(ValueError):
    """A line that does not fit the schema (the message names the line and the field)."""


@dataclass
class ProduceResult:
    """What a run sent."""

    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def from_json(schema: Any, value: Any, path: str = "") -> Any:
    """The Avro value of ``schema`` for a JSON ``value`` as ``consume`` prints it; ``ValueError`` names ``path``."""
    if isinstance(schema, list):
        return _union(schema, value, path)
    kind = schema.get("type") if isinstance(schema, dict) else schema
    logical = schema.get("logicalType") if isinstance(schema, dict) else None
    if isinstance(kind, dict | list):
        return from_json(kind, value, path)
    if logical == "decimal" and isinstance(value, str | int):
        try:
            return Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"{path or 'value'}: {value!r} is not a decimal number") from None
    if logical in ("timestamp-millis", "timestamp-micros") and isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            raise ValueError(f"{path or 'value'}: {value!r} is not an ISO-8601 timestamp") from None
    if kind in ("bytes", "fixed") and isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise ValueError(f"{path or 'value'}: {value!r} is not hex bytes") from None
    if kind == "record" and isinstance(value, dict):
        return _record(schema, value, path)
    if kind == "array" and isinstance(value, list):
        return [from_json(schema["items"], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "map" and isinstance(value, dict):
        return {k: from_json(schema["values"], v, f"{path}.{k}") for k, v in value.items()}
    return value  # primitives and enums: checked by the encoder


def _record(schema: Mapping[str, Any], value: Mapping[str, Any], path: str) -> dict[str, Any]:
    fields = {f["name"]: f for f in schema["fields"]}
    unknown = [k for k in value if k not in fields]
    if unknown:
        raise ValueError(f"{path + '.' if path else ''}{unknown[0]}: not a field of {schema.get('name')}")
    return {k: from_json(fields[k]["type"], v, f"{path + '.' if path else ''}{k}") for k, v in value.items()}


def _union(branches: list[Any], value: Any, path: str) -> Any:
    if value is None:
        if "null" in branches:
            return None
        raise ValueError(f"{path or 'value'}: null does not fit {describe_type(branches)}")
    for branch in (b for b in branches if b != "null"):
        try:
            return from_json(branch, value, path)
        except ValueError:
            continue
    raise ValueError(f"{path or 'value'}: {value!r} does not fit {describe_type(branches)}")


@dataclass(frozen=True)
class Line:
    """One parsed input line: key, Avro value and headers."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]]


def encode_line(text: str, number: int, encoder: AvroEncoder, schema: Any, key_field: str | None) -> Line:
    """Line ``number`` encoded; ``LineError`` names the line and the field that does not fit."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError(f"line {number}: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(doc, dict):
        raise LineError(f"line {number}: expected a JSON object, got {type(doc).__name__}")
    envelope = "value" in doc and set(doc) <= _ENVELOPE
    record = doc["value"] if envelope else doc
    key: Any = doc.get("key") if envelope else None
    try:
        value = encoder.encode(from_json(schema, record))
    except (ValueError, TypeError) as exc:
        raise LineError(f"line {number}: field {exc}") from None
    except EncodeError as exc:
        raise LineError(f"line {number}: {exc}") from None
    if key_field is not None:
        if not isinstance(record, dict) or record.get(key_field) is None:
            raise LineError(f"line {number}: field {key_field!r} (the --key-field) is missing or null")
        key = record[key_field]
    headers = (doc.get("headers") or {}) if envelope else {}
    return Line(
        None if key is None else str(key).encode(),
        value,
        [(name, str(v).encode()) for name, v in headers.items() if v is not None],
    )


def produce(
    kafka: KafkaSettings, topic: str, lines: Iterable[str], encoder: AvroEncoder, schema: Any,
    *, key_field: str | None = None,
) -> ProduceResult:
    """Send every line to ``topic`` in order (idempotent producer); stops at the first ``LineError``
    (raised after the lines before it were delivered)."""
    result = ProduceResult()

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            result.failed += 1
            result.errors.append(err.str())
        else:
            result.sent += 1

    producer = Producer(producer_config(kafka, **{"linger.ms": 5, "compression.type": "none"}))
    try:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            line = encode_line(text, number, encoder, schema, key_field)
            while True:
                try:
                    producer.produce(topic, line.value, line.key, headers=line.headers, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
    finally:
        producer.flush(60)
    return result

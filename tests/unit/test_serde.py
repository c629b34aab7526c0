"""topology.serde.decoder: Confluent wire format round trips, every DecodeError reason, EncodeError naming the field."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from confluent_kafka.schema_registry import RegisteredSchema, Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro import parse_schema, schemaless_writer

import schemas
from topology.serde.decoder import (
    DECODE_REASONS,
    AvroDecoder,
    AvroEncoder,
    DecodeError,
    EncodeError,
    RegistryError,
    wire_header,
)

TX = schemas.schema_text("transaction")


def _registry() -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": "mock://serde-tests"})


def _tx(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "transaction_id": "t-1",
        "source_account": "ACC1",
        "target_account": "MER1",
        "amount": Decimal("1000.00"),
        "currency": "EUR",
        "event_time": datetime(2026, 1, 1, 12, 30, 15, 123000, tzinfo=UTC),
        "channel": "card",
        "country": "DE",
        "merchant_category": "5411",
    }
    record.update(overrides)
    return record


@pytest.fixture
def registry() -> SchemaRegistryClient:
    client = _registry()
    for subject in client.get_subjects():
        client.delete_subject(subject, permanent=True)
    return client


def test_round_trip_keeps_exact_decimals_and_times(registry: SchemaRegistryClient) -> None:
    encoder = AvroEncoder(registry, TX, "tx-value")
    decoder = AvroDecoder(registry)
    amounts = ["0.01", "0.10", "899.99", "900.00", "1000.00", "9999.99", "9999999999999999.99", "-12.34"]
    for text in amounts:
        value = encoder.encode(_tx(amount=Decimal(text)))
        assert value[:5] == wire_header(encoder.schema_id)
        decoded = decoder.decode(value)
        assert decoded["amount"] == Decimal(text)
        assert str(decoded["amount"]) == text
        assert decoded["event_time"] == datetime(2026, 1, 1, 12, 30, 15, 123000, tzinfo=UTC)


def test_optional_fields_default_to_null_and_int_times_are_millis(registry: SchemaRegistryClient) -> None:
    encoder = AvroEncoder(registry, TX, "tx-value")
    record = _tx(event_time=1_767_225_600_001)
    for name in ("channel", "country", "merchant_category"):
        del record[name]
    decoded = AvroDecoder(registry).decode(encoder.encode(record))
    assert decoded["channel"] is None and decoded["country"] is None and decoded["merchant_category"] is None
    assert decoded["event_time"] == datetime(2026, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)


def test_wire_format_is_readable_by_confluents_own_deserializer(registry: SchemaRegistryClient) -> None:
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    value = AvroEncoder(registry, TX, "tx-value").encode(_tx())
    decoded = AvroDeserializer(registry)(value, SerializationContext("tx", MessageField.VALUE))
    assert decoded is not None and decoded["amount"] == Decimal("1000.00")


class CountingRegistry:
    """Wraps a registry and counts ``get_schema`` calls."""

    def __init__(self, inner: SchemaRegistryClient) -> None:
        self.inner = inner
        self.calls = 0

    def get_schema(self, schema_id: int) -> Schema:
        self.calls += 1
        return self.inner.get_schema(schema_id)


def test_decoder_asks_the_registry_once_per_schema_id(registry: SchemaRegistryClient) -> None:
    value = AvroEncoder(registry, TX, "tx-value").encode(_tx())
    counting = CountingRegistry(registry)
    decoder = AvroDecoder(counting)  # type: ignore[arg-type]
    for _ in range(100):
        decoder.decode(value)
    assert counting.calls == 1
    missing = b"\x00\x00\x00\x07\x77" + value[5:]
    for _ in range(3):
        with pytest.raises(DecodeError):
            decoder.decode(missing)
    assert counting.calls == 2  # an unknown id is remembered too


def _reason(decoder: AvroDecoder, value: bytes | None) -> tuple[str, str]:
    with pytest.raises(DecodeError) as caught:
        decoder.decode(value)
    return caught.value.reason, str(caught.value)


def test_every_decode_error_reason(registry: SchemaRegistryClient) -> None:
    encoder = AvroEncoder(registry, TX, "tx-value")
    decoder = AvroDecoder(registry)
    good = encoder.encode(_tx())
    seen: set[str] = set()

    reason, message = _reason(decoder, None)
    assert reason == "null-value" and "tombstone" in message
    seen.add(reason)
    for bad, expected in [(b"", "empty"), (b"\x01" + good[1:], "0x01"), (b"\x00\x00\x01", "3 bytes")]:
        reason, message = _reason(decoder, bad)
        assert reason == "not-wire-format" and expected in message
        seen.add(reason)
    reason, message = _reason(decoder, b"\x00\x00\x00\x27\x0f" + good[5:])
    assert reason == "unknown-schema" and "9999" in message
    seen.add(reason)
    for cut in (6, 20, len(good) - 1):
        reason, message = _reason(decoder, good[:cut])
        assert reason == "truncated", (cut, message)
        seen.add(reason)
    reason, message = _reason(decoder, good + b"\x00")
    assert reason == "invalid-avro" and "trailing" in message
    reason, _ = _reason(decoder, good[:5] + b"\x01" + good[6:])  # string length -1
    assert reason == "invalid-avro"
    reason, message = _reason(decoder, good[:5] + b"\x04\xff\xfe" + good[8:])  # invalid UTF-8
    assert reason == "invalid-avro" and "UnicodeDecodeError" in message
    seen.add(reason)
    assert seen == set(DECODE_REASONS)


def test_non_avro_schema_id_is_unknown_schema(registry: SchemaRegistryClient) -> None:
    schema_id = registry.register_schema("json-value", Schema('{"type": "object"}', "JSON"))
    reason, message = _reason(AvroDecoder(registry), wire_header(schema_id) + b"\x02")
    assert reason == "unknown-schema" and "JSON" in message


class FailingRegistry:
    """A registry that answers every lookup with ``exc``."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def get_schema(self, schema_id: int) -> RegisteredSchema:
        raise self.exc


def test_unreachable_registry_is_not_blamed_on_the_record() -> None:
    value = wire_header(1) + b"\x02a"
    for exc in (ConnectionRefusedError("refused"), SchemaRegistryError(503, 50301, "unavailable")):
        decoder = AvroDecoder(FailingRegistry(exc))  # type: ignore[arg-type]
        with pytest.raises(RegistryError, match="schema id 1"):
            decoder.decode(value)


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"amount": 12.5}, "amount", "12.5 (float)"),
        ({"amount": Decimal("1.234")}, "amount", "Decimal('1.234')"),
        ({"amount": Decimal("12345678901234567.00")}, "amount", "too many digits for decimal(18,2)"),
        ({"amount": "10.00"}, "amount", "'10.00' (str)"),
        ({"currency": None}, "currency", "None (NoneType) does not fit string"),
        ({"country": 49}, "country", "49 (int) does not fit null|string"),
        ({"event_time": "yesterday"}, "event_time", "'yesterday'"),
        ({"chanel": "card"}, "chanel", "not in schema io.fraudstream.Transaction"),
    ],
)
def test_encode_error_names_field_and_value(
    registry: SchemaRegistryClient, overrides: dict[str, Any], field: str, fragment: str
) -> None:
    encoder = AvroEncoder(registry, TX, "tx-value")
    with pytest.raises(EncodeError) as caught:
        encoder.encode(_tx(**overrides))
    assert caught.value.field == field
    assert f"'{field}'" in str(caught.value) and fragment in str(caught.value)


def test_missing_required_field_is_named(registry: SchemaRegistryClient) -> None:
    record = _tx()
    del record["source_account"]
    with pytest.raises(EncodeError, match=r"'source_account' .* is missing and has no default"):
        AvroEncoder(registry, TX, "tx-value").encode(record)


def _evolved(extra_field: dict[str, Any]) -> str:
    schema = json.loads(TX)
    schema["fields"].append(extra_field)
    return json.dumps(schema)


def _write(schema_text: str, record: dict[str, Any], schema_id: int) -> bytes:
    buf = io.BytesIO()
    buf.write(wire_header(schema_id))
    schemaless_writer(buf, parse_schema(json.loads(schema_text)), record)
    return buf.getvalue()


def test_reader_schema_resolution_both_ways(registry: SchemaRegistryClient) -> None:
    v2 = _evolved({"name": "device", "type": "string", "default": "unknown", "doc": "Device id."})
    v1_id = registry.register_schema("evo-value", Schema(TX, "AVRO"))
    v2_id = registry.register_schema("evo2-value", Schema(v2, "AVRO"))
    # v1 reader, v2 data: the new field is skipped
    from_v2 = AvroDecoder(registry, reader_schema=TX).decode(_write(v2, _tx(device="pos-7"), v2_id))
    assert "device" not in from_v2 and from_v2["amount"] == Decimal("1000.00")
    # v2 reader, v1 data: the new field takes its default
    from_v1 = AvroDecoder(registry, reader_schema=v2).decode(_write(TX, _tx(), v1_id))
    assert from_v1["device"] == "unknown"


def test_reader_that_cannot_resolve_gives_invalid_avro(registry: SchemaRegistryClient) -> None:
    v2 = _evolved({"name": "device", "type": "string", "doc": "Device id, no default."})
    v1_id = registry.register_schema("evo-value", Schema(TX, "AVRO"))
    reason, _ = _reason(AvroDecoder(registry, reader_schema=v2), _write(TX, _tx(), v1_id))
    assert reason == "invalid-avro"


def test_an_unknown_schema_id_is_asked_again_after_its_ttl() -> None:
    text = schemas.schema_text("transaction")
    value = AvroEncoder(SchemaRegistryClient.new_client({"url": "mock://ttl-writer"}), text, "t-value").encode(_tx())
    registry = SchemaRegistryClient.new_client({"url": "mock://ttl-reader"})  # knows no schema yet
    now = [0.0]
    decoder = AvroDecoder(registry, text, unknown_ttl_s=10.0, clock=lambda: now[0])
    assert _reason(decoder, value)[0] == "unknown-schema"
    registry.register_schema("t-value", Schema(text, "AVRO"))  # registered a moment after its first record
    now[0] = 9.9
    assert _reason(decoder, value)[0] == "unknown-schema"  # remembered: no lookup per record
    now[0] = 10.0
    assert decoder.decode(value)["transaction_id"] == _tx()["transaction_id"]  # asked again, now known


class _FlakyRegistry:
    """Refuses while ``down``; counts the lookups that reached it."""

    def __init__(self, inner: SchemaRegistryClient) -> None:
        self.inner, self.down, self.calls = inner, True, 0

    def get_schema(self, schema_id: int) -> Schema:
        self.calls += 1
        if self.down:
            raise ConnectionRefusedError("refused")
        return self.inner.get_schema(schema_id)


def test_a_registry_that_failed_is_asked_again_with_backoff_not_once_per_record() -> None:
    text = schemas.schema_text("transaction")
    writer = SchemaRegistryClient.new_client({"url": "mock://flaky"})
    value = AvroEncoder(writer, text, "t-value").encode(_tx())
    registry, now = _FlakyRegistry(writer), [0.0]
    decoder = AvroDecoder(registry, text, clock=lambda: now[0])  # type: ignore[arg-type]
    for _ in range(50):  # a batch of records with a schema id not seen yet
        with pytest.raises(RegistryError, match="schema id 1"):
            decoder.decode(value)
    assert registry.calls == 1
    for at, calls in ((1.0, 2), (2.9, 2), (3.0, 3), (7.0, 4), (15.0, 5), (22.9, 5), (23.0, 6)):  # 1, 2, 4, 8, 8 s
        now[0] = at
        with pytest.raises(RegistryError):
            decoder.decode(value)
        assert registry.calls == calls, at
    registry.down = False
    now[0] = 31.0
    assert decoder.decode(value)["transaction_id"] == _tx()["transaction_id"]
    assert registry.calls == 7

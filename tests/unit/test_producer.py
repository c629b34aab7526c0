"""`fraudstream produce`: JSON lines as `consume` prints them, back to Avro; a bad line names line and field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from schemas import schema_text
from services.producer import LineError, encode_line, from_json
from topology.serde.decoder import AvroDecoder, AvroEncoder

SCHEMA = json.loads(schema_text("transaction"))
RECORD = {
    "transaction_id": "t1", "source_account": "ACC1", "target_account": "MER2", "amount": "1234.50",
    "currency": "EUR", "event_time": "2026-01-01T00:00:00.030Z", "channel": None, "country": "DE",
    "merchant_category": None,
}


REGISTRY = SchemaRegistryClient.new_client({"url": "mock://producer-tests"})


@pytest.fixture
def encoder() -> AvroEncoder:
    return AvroEncoder(REGISTRY, schema_text("transaction"), "t-value")


def test_consume_json_becomes_exact_avro_values() -> None:
    value = from_json(SCHEMA, RECORD)
    assert value["amount"] == Decimal("1234.50")
    assert value["event_time"] == datetime(2026, 1, 1, 0, 0, 0, 30_000, tzinfo=UTC)
    assert value["channel"] is None and value["country"] == "DE"


def test_envelope_and_key_field(encoder: AvroEncoder) -> None:
    envelope = json.dumps({"partition": 0, "offset": 5, "key": "k1", "headers": {"h": "v"}, "value": RECORD})
    line = encode_line(envelope, 1, encoder, SCHEMA, None)
    assert line.key == b"k1" and line.headers == [("h", b"v")]
    decoded = AvroDecoder(REGISTRY).decode(line.value)
    assert decoded["amount"] == Decimal("1234.50")
    assert encode_line(json.dumps(RECORD), 1, encoder, SCHEMA, "source_account").key == b"ACC1"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"amount": "12,5"}, "line 3: field amount: '12,5' is not a decimal number"),
        ({"amount": "1.234"}, "line 3: field 'amount'"),
        ({"event_time": "yesterday"}, "line 3: field event_time: 'yesterday' is not an ISO-8601 timestamp"),
        ({"channel": 5}, "line 3: field 'channel' = 5"),
        ({"colour": "red"}, "line 3: field colour: not a field of Transaction"),
        ({"currency": None}, "line 3: field 'currency'"),
    ],
)
def test_a_line_that_does_not_fit_names_line_and_field(
    encoder: AvroEncoder, change: dict[str, object], fragment: str
) -> None:
    with pytest.raises(LineError) as err:
        encode_line(json.dumps({**RECORD, **change}), 3, encoder, SCHEMA, None)
    assert fragment in str(err.value)


def test_not_json_and_missing_key_field(encoder: AvroEncoder) -> None:
    with pytest.raises(LineError, match="line 7: not JSON"):
        encode_line("{oops", 7, encoder, SCHEMA, None)
    with pytest.raises(LineError, match="line 2: field 'channel' \\(the --key-field\\) is missing or null"):
        encode_line(json.dumps(RECORD), 2, encoder, SCHEMA, "channel")

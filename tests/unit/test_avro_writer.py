"""topology.serde.writer: byte-identical to fastavro on seeded random records; anything else is left to fastavro."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from fastavro import parse_schema, schemaless_writer

import schemas
from services.generator.scenarios import ScenarioRates, StreamConfig, TransactionStream
from topology.serde.decoder import AvroEncoder, EncodeError
from topology.serde.writer import RecordWriter, compile_writer

PREFIX = b"\x00\x00\x00\x00\x07"

# Every type the writer covers, in every position it covers (union null first and last).
WIDE = {
    "type": "record",
    "name": "Wide",
    "namespace": "test",
    "fields": [
        {"name": "s", "type": "string"},
        {"name": "b", "type": "bytes"},
        {"name": "flag", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "n", "type": "long"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "money", "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}},
        {"name": "whole", "type": {"type": "bytes", "logicalType": "decimal", "precision": 5}},
        {"name": "fine", "type": {"type": "bytes", "logicalType": "decimal", "precision": 38, "scale": 10}},
        {"name": "os", "type": ["null", "string"], "default": None},
        {"name": "so", "type": ["string", "null"]},
        {"name": "on", "type": ["null", "long"], "default": None},
        {"name": "oi", "type": ["null", "int"], "default": None},
        {"name": "ob", "type": ["null", "boolean"], "default": None},
        {"name": "oy", "type": ["null", "bytes"], "default": None},
        {"name": "nl", "type": ["long", "null"]},
    ],
}

STRINGS = [
    "",
    "a",
    "EUR",
    "zürich €",
    "日本語",
    "🙂" * 3,
    "x" * 63,
    "x" * 64,
    "é" * 4095,
    "y" * 8191,
    "y" * 8192,
    "z" * 9000,
]
LONGS = [0, 1, -1, 63, 64, -64, -65, 127, 128, 1_767_225_600_000, -(1 << 31), (1 << 31) - 1, 1 << 31, -(1 << 31) - 1]
LONGS += [
    (1 << 55) - 1,
    1 << 55,
    -(1 << 55),
    -(1 << 55) - 1,
    (1 << 63) - 1,
    -(1 << 63),
    1 << 63,
    -(1 << 63) - 1,
    10**30,
]
DECIMALS = ["0", "-0", "0.00", "-0.00", "0.01", "-0.01", "1.5", "5", "-128", "-127.99", "127.99", "128.00", "0.10"]
DECIMALS += ["1E+2", "1.2E+3", "1.234", "9999999999999999.99", "-9999999999999999.99", "10000000000000000.00"]
DECIMALS += ["99999", "100000", "0.0000000001", "1E-7", "1E-11", "NaN", "-Infinity", "sNaN", "12345678901234567890.12"]
WRONG: list[Any] = [
    None,
    True,
    False,
    1.5,
    "1",
    b"\x01",
    bytearray(b"x"),
    datetime(2026, 1, 1, tzinfo=UTC),
    [1],
    ("string", "a"),
]


def _fastavro(parsed: Any, record: Any) -> bytes | Exception:
    buf = io.BytesIO()
    buf.write(PREFIX)
    try:
        schemaless_writer(buf, parsed, record)
    except Exception as exc:
        return exc
    return buf.getvalue()


def _value(rng: random.Random, field_type: Any, wild: bool) -> Any:
    """A value for ``field_type``: valid for it, or (``wild``) often an edge case or of another type."""
    if wild and rng.random() < 0.05:
        return rng.choice(WRONG)
    if isinstance(field_type, list):
        if rng.random() < 0.3:
            return None
        field_type = next(t for t in field_type if t != "null")
    if isinstance(field_type, dict):
        if field_type.get("type") == "array":
            items = [_value(rng, field_type["items"], wild) for _ in range(rng.choice([0, 1, 2, 20, 50]))]
            return tuple(items) if wild and rng.random() < 0.05 else items
        if field_type.get("type") == "record":
            return _records(rng, field_type, 1, wild)[0]
        if field_type.get("logicalType") == "decimal":
            if wild and rng.random() < 0.5:
                return Decimal(rng.choice(DECIMALS))
            precision, scale = field_type["precision"], field_type.get("scale", 0)
            exponent = -rng.randrange(scale + (2 if wild else 1))  # wild: one fraction digit too many
            digits = rng.randrange(1, max(precision - exponent - scale, 1) + (2 if wild else 1))
            coefficient = rng.randrange(-(10**digits) + 1, 10**digits)
            return Decimal(f"{coefficient}E{exponent}")  # exact (no context rounding)
        field_type = field_type["type"]
    if field_type == "string":
        if rng.random() < 0.5:
            return rng.choice(STRINGS)
        top = 0xE000 if wild else 0xD800  # wild: lone surrogates too
        return "".join(chr(rng.randrange(1, top)) for _ in range(rng.randrange(12)))
    if field_type == "bytes":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
    if field_type == "boolean":
        return rng.random() < 0.5
    if field_type == "double":
        if wild and rng.random() < 0.5:
            return rng.choice([0, 1, float("nan"), float("inf"), -0.0, 1e308, 5e-324])
        return rng.uniform(-1e6, 1e6)
    bits = 31 if field_type == "int" else 63
    if wild and rng.random() < 0.5:
        return rng.choice(LONGS)
    return rng.randrange(-(1 << bits), 1 << bits) >> rng.randrange(bits + 1)


def _records(rng: random.Random, schema: dict[str, Any], count: int, wild: bool) -> list[dict[str, Any]]:
    records = []
    for _ in range(count):
        record = {f["name"]: _value(rng, f["type"], False) for f in schema["fields"]}
        if wild:  # one or two fields get edge cases, other types, or go missing
            for f in rng.sample(schema["fields"], rng.randint(1, 2)):
                record[f["name"]] = _value(rng, f["type"], True)
            if rng.random() < 0.05:
                del record[rng.choice(list(record))]
        records.append(record)
    return records


def _check(writer: RecordWriter, parsed: Any, records: list[dict[str, Any]]) -> int:
    """Asserts the writer matches fastavro wherever it writes; returns how many records it wrote."""
    written = 0
    for record in records:
        ours = writer(record)
        if ours is not None:
            assert ours == _fastavro(parsed, record), record
            written += 1
    return written


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_records_are_byte_identical_to_fastavro(seed: int) -> None:
    parsed = parse_schema(WIDE)
    writer = compile_writer(parsed, PREFIX)
    assert writer is not None
    rng = random.Random(seed)
    valid = _records(rng, WIDE, 3000, wild=False)
    assert _check(writer, parsed, valid) == len(valid)  # every valid record is written here, not by fastavro
    wild = _records(rng, WIDE, 3000, wild=True)
    assert len(wild) // 3 < _check(writer, parsed, wild) < len(wild)


@pytest.mark.parametrize("seed", [4, 5])
def test_nested_records_arrays_and_doubles_are_byte_identical_to_fastavro(seed: int) -> None:
    """FraudAlert (nested records, arrays of records and of strings, a double), on random and wild values."""
    schema = json.loads(schemas.schema_text("fraud_alert"))
    parsed = parse_schema(schema)
    writer = compile_writer(parsed, PREFIX)
    assert writer is not None
    rng = random.Random(seed)
    valid = _records(rng, schema, 200, wild=False)
    assert _check(writer, parsed, valid) == len(valid)
    again = _records(random.Random(seed), schema, 200, wild=False)  # the same strings again: from the cache
    assert _check(writer, parsed, again) == len(again)
    wild = _records(rng, schema, 800, wild=True)
    assert len(wild) // 4 < _check(writer, parsed, wild) < len(wild)


def test_edge_values_are_written_as_fastavro_writes_them_or_left_to_it() -> None:
    parsed = parse_schema(WIDE)
    writer = compile_writer(parsed, PREFIX)
    assert writer is not None
    base = _records(random.Random(0), WIDE, 1, wild=False)[0]
    base.update(money=Decimal("1.00"), whole=Decimal("1"), fine=Decimal("1.0000000000"))
    assert writer(base) == _fastavro(parsed, base)
    written = 0
    cases: list[tuple[str, list[Any]]] = [
        ("s", [*STRINGS, "\ud800"]),
        ("os", [*STRINGS, None]),
        ("so", [*STRINGS, None]),
        ("n", LONGS),
        ("i", LONGS),
        ("on", [*LONGS, None]),
        ("oi", [*LONGS, None]),
        ("nl", [*LONGS, None]),
        ("ts", LONGS),
        ("money", [Decimal(d) for d in DECIMALS]),
        ("whole", [Decimal(d) for d in DECIMALS]),
        ("fine", [Decimal(d) for d in DECIMALS]),
        ("flag", [True, False]),
        ("ob", [True, False, None]),
        ("b", [b"", b"\x00", b"x" * 10_000]),
        ("oy", [b"", None]),
    ]
    for name, values in cases:
        for value in [*values, *WRONG]:
            record = {**base, name: value}
            ours = writer(record)
            if ours is not None:
                assert ours == _fastavro(parsed, record), (name, value)
                written += 1
    assert written > 150
    # left to fastavro: invalid UTF-8, out of range, not finite, too many digits, other Python types
    for name, value in [
        ("s", "\ud800"),
        ("os", "\udfff"),
        ("n", 1 << 63),
        ("n", -(1 << 63) - 1),
        ("i", 1 << 31),
        ("oi", -(1 << 31) - 1),
        ("money", Decimal("1.234")),
        ("money", Decimal("10000000000000000.00")),
        ("whole", Decimal("100000")),
        ("money", Decimal("NaN")),
        ("money", Decimal("-Infinity")),
        ("money", b"\x01"),
        ("money", 1),
        ("n", True),
        ("n", 1.0),
        ("flag", 1),
        ("flag", None),
        ("s", b"x"),
        ("ts", datetime(2026, 1, 1, tzinfo=UTC)),
        ("os", ("string", "a")),
    ]:
        assert writer({**base, name: value}) is None, (name, value)
    missing = dict(base)
    del missing["os"]
    assert writer(missing) is None
    assert writer({**base, "extra": 1}) is None  # fastavro would ignore it; AvroEncoder rejects it


def test_decimal_text_in_any_context_is_read_right() -> None:
    parsed = parse_schema(WIDE)
    writer = compile_writer(parsed, PREFIX)
    assert writer is not None
    base = _records(random.Random(0), WIDE, 1, wild=False)[0]
    with localcontext() as ctx:
        ctx.capitals = 0  # str() writes 1.2e+3
        for text in DECIMALS:
            for name in ("money", "whole", "fine"):
                record = {**base, name: Decimal(text)}
                ours = writer(record)
                if ours is not None:
                    assert ours == _fastavro(parsed, record), (name, text)


def test_schemas_outside_its_types_get_no_writer() -> None:
    def record(field_type: Any) -> Any:
        return parse_schema({"type": "record", "name": "R", "fields": [{"name": "f", "type": field_type}]})

    covered = compile_writer(record(["null", "string"]))
    assert covered is not None
    for field_type in ["double", {"type": "array", "items": "string"}, {"type": "record", "name": "In", "fields": []}]:
        assert compile_writer(record(field_type)) is not None, field_type
    for other in [
        "float",
        ["null", "string", "long"],
        ["string", "long"],
        {"type": "array", "items": "float"},
        {"type": "array", "items": {"type": "map", "values": "long"}},
        ["null", {"type": "array", "items": "string"}],
        {"type": "map", "values": "long"},
        {"type": "enum", "name": "E", "symbols": ["A"]},
        {"type": "fixed", "name": "F", "size": 2},
        {"type": "string", "logicalType": "uuid"},
        {"type": "int", "logicalType": "date"},
        {"type": "long", "logicalType": "timestamp-micros"},
        ["null", {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}],
        {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "float"}]},
    ]:
        assert compile_writer(record(other)) is None, other
    assert compile_writer(parse_schema("string")) is None


def _generated(count: int) -> list[Any]:
    rates = ScenarioRates(large_amount=5, card_testing=1, velocity=1, fan_in=0.5, fan_out=1, structuring=1)
    return TransactionStream(StreamConfig(seed=11, accounts=2000, merchants=100, rates=rates)).take(count)


def test_every_generated_transaction_and_label_is_written_by_it_as_fastavro_would() -> None:
    generated = _generated(5000)
    for name, records in [
        ("transaction", [g.record for g in generated]),
        ("transaction_label", [g.label() for g in generated]),
    ]:
        parsed = parse_schema(json.loads(schemas.schema_text(name)))
        writer = compile_writer(parsed, PREFIX)
        assert writer is not None
        assert _check(writer, parsed, records) == len(records)


@pytest.fixture
def encoders() -> Callable[[], tuple[AvroEncoder, AvroEncoder]]:
    def make() -> tuple[AvroEncoder, AvroEncoder]:
        registry = SchemaRegistryClient.new_client({"url": "mock://avro-writer-tests"})
        fast = AvroEncoder(registry, json.dumps(WIDE), "wide-value")
        plain = AvroEncoder(registry, json.dumps(WIDE), "wide-value")
        plain._fast = None  # the encoder as it was: fastavro for every record
        return fast, plain

    return make


def test_encoder_gives_the_same_bytes_and_the_same_errors_as_fastavro_alone(
    encoders: Callable[[], tuple[AvroEncoder, AvroEncoder]],
) -> None:
    fast, plain = encoders()
    errors = 0
    unknown_field = {**_records(random.Random(0), WIDE, 1, wild=False)[0], "x": 1}
    for record in [*_records(random.Random(5), WIDE, 3000, wild=True), unknown_field]:
        try:
            expected: bytes | str = plain.encode(record)
        except EncodeError as exc:
            expected = f"{exc} [{exc.field}]"
            errors += 1
        try:
            got: bytes | str = fast.encode(record)
        except EncodeError as exc:
            got = f"{exc} [{exc.field}]"
        assert got == expected
    assert errors > 100

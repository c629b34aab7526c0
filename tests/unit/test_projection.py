"""The projection decoder agrees with fastavro (AvroDecoder) on values and on DecodeError reasons.

Property tests with a seeded generator (random records, random schemas, every truncation,
flipped bytes): each input either decodes to equal projected values in both decoders or
fails in both with the same reason.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from fastavro import parse_schema, schemaless_writer

import schemas
from services.detector import FRAUD_TOPOLOGY, load_topology, loads_topology
from services.detector.alerts import FraudAlerts
from tests.unit.topology_support import TOPIC, TX_KEY, stream, tx
from topology.plan.expr import to_epoch_ms
from topology.plan.model import Aggregate, Rule, Window
from topology.processor import TopologyProcessor
from topology.serde.decoder import AvroDecoder, AvroEncoder, DecodeError, wire_header
from topology.serde.projection import ProjectedRecord, ProjectionDecoder, projection_of
from topology.testing.driver import TopologyTestDriver

TX = schemas.schema_text("transaction")
TX_FIELDS = [f["name"] for f in json.loads(TX)["fields"]]


def _registry(name: str) -> SchemaRegistryClient:
    client = SchemaRegistryClient.new_client({"url": f"mock://projection-{name}"})
    for subject in client.get_subjects():
        client.delete_subject(subject, permanent=True)
    return client


def _register(registry: SchemaRegistryClient, schema: Mapping[str, Any], subject: str) -> int:
    return registry.register_schema(subject, Schema(json.dumps(schema), "AVRO"))


def _write(schema: Mapping[str, Any], record: Mapping[str, Any], schema_id: int) -> bytes:
    buf = io.BytesIO()
    buf.write(wire_header(schema_id))
    schemaless_writer(buf, parse_schema(dict(schema)), dict(record))
    return buf.getvalue()


def _outcome(decode: Any, value: bytes | None) -> tuple[str, Any]:
    try:
        return "ok", decode(value)
    except DecodeError as exc:
        return exc.reason, str(exc)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return str(a) == str(b)  # same value and same exponent, as fastavro builds it
    return type(a) is type(b) and a == b


def _assert_agree(full: AvroDecoder, proj: ProjectionDecoder, value: bytes | None, fields: list[str]) -> str:
    """Both decoders agree on ``value``; returns the outcome (``ok`` or the reason)."""
    want, got = _outcome(full.decode, value), _outcome(proj.decode, value)
    assert want[0] == got[0], (value, want, got)
    if want[0] == "ok":
        for name in fields:
            expected = want[1][name]
            actual = got[1][name]
            if isinstance(actual, int) and isinstance(expected, datetime):
                expected = to_epoch_ms(expected)
            assert _same(expected, actual), (name, expected, actual)
    return want[0]


# ---------------------------------------------------------------- projection_of


def test_projection_of_the_fraud_topology() -> None:
    topology = load_topology(FRAUD_TOPOLOGY)
    p = projection_of(dataclasses.replace(topology, alerts=None))
    assert p is not None
    assert p.fields == {"amount", "source_account", "target_account", "event_time", "channel", "merchant_category"}
    # read as window time only (channel, merchant_category: expression-only too, but not timestamps)
    assert p.epoch_ms == {"event_time", "channel", "merchant_category"}
    # with an alerts topic, also what a FraudAlert copies
    assert topology.alerts is not None
    assert projection_of(topology) == p  # no alert writer: nothing more to read
    with_alerts = projection_of(topology, FraudAlerts(lambda doc: b""))
    assert with_alerts is not None and with_alerts.fields == p.fields | {"transaction_id"}
    assert with_alerts.epoch_ms == p.epoch_ms | {"transaction_id"}  # not a timestamp: read as is


def test_projection_of_a_stateless_rule_and_of_a_python_predicate() -> None:
    text = (
        "topology: t\nsource:\n  topic: in\n  key: [source_account]\n  time: event_time\ndlq: dlq\n"
        "rules:\n  - id: big\n    when: amount >= 900 and country == 'DE'\n"
        "branches:\n  - name: fraud\n    to: fraud\n    rules: [big]\n"
        "default_branch:\n  name: legit\n  to: legit\n"
    )
    p = projection_of(loads_topology(text, filename="<t>"))
    assert p is not None and p.fields == {"amount", "country", "source_account", "event_time"}
    with_python = stream("in", dlq="dlq").split().branch(lambda r: True, to="out").default_branch(to="rest")
    assert projection_of(with_python) is None


def test_a_timestamp_used_as_a_group_key_stays_a_datetime() -> None:
    agg = Aggregate("count", ("event_time",), Window("tumbling", 60_000), ">=", Decimal(2), name="per-ms")
    topology = stream("in", dlq="dlq").split().branch(Rule("r", agg), to="out").default_branch(to="rest")
    p = projection_of(topology)
    assert p is not None and "event_time" in p.fields and "event_time" not in p.epoch_ms


# ---------------------------------------------------------------- Transaction values


def _random_tx(rng: random.Random) -> dict[str, Any]:
    def text() -> str:
        alphabet = "abcXYZ019-_ éß€漢😀"
        return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 5, 32, 70, 200])))

    cents = rng.choice([0, 1, -1, 99, 90_000, 89_999, 12_345_678, -(10**17) + 1, 10**17 - 1, rng.randrange(10**9)])
    ms = rng.choice([0, -1, 1, 2**31, rng.randrange(-(10**12), 4 * 10**12), 253402300799999, -62135596800000])
    return {
        "transaction_id": text(),
        "source_account": text(),
        "target_account": text(),
        "amount": Decimal(cents).scaleb(-2),
        "currency": rng.choice(["EUR", "USD", ""]),
        "event_time": datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms),
        "channel": rng.choice([None, "card", text()]),
        "country": rng.choice([None, "DE"]),
        "merchant_category": rng.choice([None, "5411", text()]),
    }


TxSetup = tuple[AvroEncoder, AvroDecoder, ProjectionDecoder, ProjectionDecoder, list[bytes]]


@pytest.fixture(scope="module")
def tx_setup() -> TxSetup:
    registry = _registry("tx")
    encoder = AvroEncoder(registry, TX, f"{TOPIC}-value")
    rng = random.Random(20240301)
    values = [encoder.encode(_random_tx(rng)) for _ in range(400)]
    full = AvroDecoder(registry, TX)
    fraud = ProjectionDecoder.for_topology(registry, load_topology(FRAUD_TOPOLOGY), TX)
    everything = ProjectionDecoder(registry, None, reader_schema=TX)
    return encoder, full, fraud, everything, values


def test_random_transactions_decode_to_the_same_values(tx_setup: TxSetup) -> None:
    encoder, full, fraud, everything, values = tx_setup
    projection = projection_of(load_topology(FRAUD_TOPOLOGY))
    assert projection is not None
    for value in values:
        assert _assert_agree(full, fraud, value, sorted(projection.fields)) == "ok"
        assert _assert_agree(full, everything, value, TX_FIELDS) == "ok"
        assert dict(everything.decode(value)) == full.decode(value)  # whole record, datetimes included
    assert fraud.fast_path(encoder.schema_id) is True
    assert fraud.full_reads == 0 and everything.full_reads == 0


def test_every_truncation_fails_with_the_same_reason(tx_setup: TxSetup) -> None:
    _, full, fraud, _, values = tx_setup
    reasons = set()
    for value in values[:40]:
        for cut in range(len(value)):
            reasons.add(_assert_agree(full, fraud, value[:cut], []))
    assert reasons == {"not-wire-format", "truncated"}


def test_flipped_bytes_agree_with_fastavro(tx_setup: TxSetup) -> None:
    _, full, fraud, everything, values = tx_setup
    rng = random.Random(7)
    reasons = set()
    for value in values[:25]:
        for i in range(1, len(value)):
            for mask in (0x01, 0x80, 0xFF, rng.randrange(1, 256)):
                bad = value[:i] + bytes([value[i] ^ mask]) + value[i + 1 :]
                reasons.add(_assert_agree(full, fraud, bad, ["amount", "source_account", "target_account"]))
                _assert_agree(full, everything, bad, TX_FIELDS)
    assert {"ok", "truncated", "invalid-avro", "unknown-schema"} <= reasons


def test_crafted_bad_bytes(tx_setup: TxSetup) -> None:
    encoder, full, fraud, _, values = tx_setup
    head = wire_header(encoder.schema_id)
    cases = [
        None,
        b"",
        b"\x01\x00\x00\x00\x01",
        head + b"\x01",  # string length -1
        head + b"\x04\xff\xfe",  # invalid UTF-8
        head + b"\x80",  # varint cut in the middle
        head + b"\xff" * 12 + b"\x01",  # over-long varint (64-bit wrap-around)
        values[0] + b"\x00",  # trailing byte
    ]
    for value in cases:
        _assert_agree(full, fraud, value, [])


def test_timestamps_out_of_the_datetime_range_are_invalid(tx_setup: TxSetup) -> None:
    encoder, full, fraud, _, _ = tx_setup
    schema = json.loads(TX)
    for ms in (253402300799999 + 1, -62135596800000 - 1, 2**62, -(2**63)):
        record = {**tx(1), "event_time": ms}
        value = _write(schema, record, encoder.schema_id)
        assert _assert_agree(full, fraud, value, []) == "invalid-avro"


# ---------------------------------------------------------------- random schemas

_SCALARS: list[Any] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
    {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 3},
    {"type": "long", "logicalType": "timestamp-millis"},
]  # fmt: skip


def _random_schema(rng: random.Random, n: int) -> dict[str, Any]:
    fields = []
    for i in range(rng.randrange(1, 8)):
        t: Any = rng.choice(_SCALARS)
        if rng.random() < 0.35:
            t = rng.sample([s for s in _SCALARS if not isinstance(s, dict) or "logicalType" not in s], 2)
        fields.append({"name": f"f{i}", "type": t})
    return {"type": "record", "name": f"R{n}", "namespace": "test", "fields": fields}


def _random_value(rng: random.Random, t: Any) -> Any:
    if isinstance(t, list):
        return _random_value(rng, rng.choice(t))
    if isinstance(t, dict):
        if t["logicalType"] == "decimal":
            return Decimal(rng.randrange(-(10**9) + 1, 10**9)).scaleb(-3)
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=rng.randrange(-(10**13), 10**13))
    makers: dict[str, Callable[[], Any]] = {
        "null": lambda: None,
        "boolean": lambda: rng.random() < 0.5,
        "int": lambda: rng.randrange(-(2**31), 2**31),
        "long": lambda: rng.choice([0, -1, 2**63 - 1, -(2**63), rng.randrange(-(2**40), 2**40)]),
        "float": lambda: rng.choice([0.0, 1.5, -2.25, float("inf")]),
        "double": lambda: rng.choice([0.1, -1e300, float("nan"), rng.random()]),
        "bytes": lambda: rng.randbytes(rng.randrange(0, 20)),
        "string": lambda: "".join(rng.choice("ab€😀") for _ in range(rng.randrange(0, 12))),
    }
    return makers[t]()


def test_random_schemas_agree_on_values_and_on_corruption() -> None:
    registry = _registry("random")
    rng = random.Random(99)
    for n in range(60):
        schema = _random_schema(rng, n)
        schema_id = _register(registry, schema, f"random-{n}-value")
        names = [f["name"] for f in schema["fields"]]
        wanted = set(rng.sample(names, rng.randrange(0, len(names) + 1)))
        full = AvroDecoder(registry)
        proj = ProjectionDecoder(registry, wanted)
        everything = ProjectionDecoder(registry, None)
        for _ in range(10):
            record = {f["name"]: _random_value(rng, f["type"]) for f in schema["fields"]}
            value = _write(schema, record, schema_id)
            assert _assert_agree(full, proj, value, sorted(wanted)) == "ok"
            assert _assert_agree(full, everything, value, names) == "ok"
            for cut in range(5, len(value)):
                _assert_agree(full, proj, value[:cut], [])
            for i in range(5, len(value)):
                bad = value[:i] + bytes([value[i] ^ rng.randrange(1, 256)]) + value[i + 1 :]
                _assert_agree(full, proj, bad, sorted(wanted))
        assert proj.fast_path(schema_id) is True


# ---------------------------------------------------------------- fallback, resolution, laziness


def test_schemas_outside_the_fast_path_use_the_full_decoder() -> None:
    registry = _registry("fallback")
    schema = {
        "type": "record", "name": "WithEnum", "fields": [
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "amount", "type": "long"},
        ],
    }  # fmt: skip
    schema_id = _register(registry, schema, "fallback-value")
    value = _write(schema, {"kind": "B", "tags": ["x"], "amount": 5}, schema_id)
    proj = ProjectionDecoder(registry, {"amount"})
    assert proj.decode(value) == AvroDecoder(registry).decode(value)
    assert proj.decode(value)["amount"] == 5 and proj.fast_path(schema_id) is False
    assert _outcome(proj.decode, value[:-1])[0] == "truncated"


def test_reader_schema_defaults_and_resolution_fallback() -> None:
    registry = _registry("resolution")
    tx_schema = json.loads(TX)
    older = {**tx_schema, "fields": [f for f in tx_schema["fields"] if f["name"] not in ("country", "channel")]}
    older_id = _register(registry, older, "older-value")
    record = {k: v for k, v in tx(3, "950.00", merchant_category="5411").items()}
    value = _write(older, record, older_id)
    full = AvroDecoder(registry, TX)
    proj = ProjectionDecoder(registry, {"amount", "country", "merchant_category"}, reader_schema=TX)
    for _ in range(2):
        got = proj.decode(value)
        assert got["country"] is None and got["merchant_category"] == "5411" and got["amount"] == Decimal("950.00")
    assert proj.fast_path(older_id) is True
    assert dict(proj.decode(value)) == full.decode(value)
    # A writer field the reader does not have: fastavro's skipping rules, so the full decoder.
    extra = {**tx_schema, "fields": [*tx_schema["fields"], {"name": "note", "type": "string"}]}
    extra_id = _register(registry, extra, "extra-value")
    value = _write(extra, {**tx(4), "note": "hi"}, extra_id)
    assert proj.decode(value)["amount"] == full.decode(value)["amount"]
    assert proj.fast_path(extra_id) is False


def test_fields_outside_the_projection_decode_in_full_on_first_read(tx_setup: TxSetup) -> None:
    encoder, full, fraud, _, _ = tx_setup
    proj = ProjectionDecoder(fraud._registry, {"amount"}, reader_schema=TX)
    value = encoder.encode(tx(5, "12.34", channel="card"))
    proj.decode(value)
    rec = proj.decode(value)
    assert isinstance(rec, ProjectedRecord) and proj.full_reads == 0
    assert rec["amount"] == Decimal("12.34")
    assert proj.full_reads == 0
    assert rec["channel"] == "card" and proj.full_reads == 1
    assert rec["currency"] == "EUR" and proj.full_reads == 1  # decoded once
    with pytest.raises(KeyError):
        rec["no_such_field"]
    assert rec.get("no_such_field") is None and "transaction_id" in rec and len(rec) == len(TX_FIELDS)
    assert dict(rec) == full.decode(value)


# ---------------------------------------------------------------- the processor sees no difference


def test_the_fraud_topology_routes_identically_with_both_decoders() -> None:
    registry = _registry("driver")
    encoder = AvroEncoder(registry, TX, f"{TOPIC}-value")
    topology = load_topology(FRAUD_TOPOLOGY)
    rng = random.Random(5)
    inputs: list[Any] = []
    for n in range(300):
        amount = rng.choice(["1.00", "1.50", "750.00", "899.99", "900.00", "25.00"])
        record = tx(n, amount, source=f"acc-{n % 7}", target=f"shop-{n % 3}", minutes=n * 0.5)
        inputs.append(encoder.encode(record))
        if n % 37 == 0:
            inputs.append(inputs[-1][:-3])  # truncated: dead letter
        if n % 53 == 0:
            inputs.append(b"\x00\x00\x00\x27\x0f" + inputs[-1][5:])  # unknown schema id
    outputs = []
    for decoder in (AvroDecoder(registry, TX), ProjectionDecoder.for_topology(registry, topology, TX)):
        processor = TopologyProcessor(topology, decoder.decode, version="v")
        driver = TopologyTestDriver(processor, partitions=3, key_fields=TX_KEY)
        for value in inputs:
            driver.pipe(value, key=b"k")
        outputs.append({t: [(w.key, w.value, w.headers) for w in ws] for t, ws in driver.logs.items()})
    assert outputs[0] == outputs[1]
    assert outputs[0]["streaming.transactions.fraud"] and outputs[0]["streaming.transactions.dlq"]


def test_a_new_topology_keeps_the_alert_writers_fields_projected() -> None:
    registry = SchemaRegistryClient.new_client({"url": "mock://projection-alerts"})
    topology = load_topology(FRAUD_TOPOLOGY)
    alerts = FraudAlerts(lambda doc: b"")
    decoder = ProjectionDecoder.for_topology(registry, topology, TX, alerts)
    before = decoder._fields
    decoder.project(topology)  # what the processor does at every install
    assert decoder._fields == before and decoder._fields is not None and "transaction_id" in decoder._fields


def test_decimals_are_built_once_per_distinct_encoding_up_to_the_cache_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    from decimal import Decimal

    from topology.serde import projection

    monkeypatch.setattr(projection, "DECIMAL_CACHE", 2)
    of = projection._DecimalOf(18, 2)
    raws = [(n).to_bytes(4, "big", signed=True) for n in (12345, -7, 99900)]
    first = [of(r) for r in raws]
    assert first == [Decimal("123.45"), Decimal("-0.07"), Decimal("999.00")]
    assert of(raws[0]) is first[0] and of(raws[1]) is first[1]  # remembered
    assert of(raws[2]) == first[2] and of(raws[2]) is not first[2]  # beyond the bound: built each time

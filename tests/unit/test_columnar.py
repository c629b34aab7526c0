"""topology.batch.decode: batch decoding with polars agrees with the per-record decoder, and refuses what it refuses.

Every value the per-record ``AvroDecoder`` rejects (garbage, truncated, trailing bytes, bad union
index, invalid UTF-8 in any field, wrong magic byte, unknown schema id, tombstone, out-of-range
timestamp, decimal beyond its precision) must get ``-1`` (per record), and the good values of the
same batch must still be decoded, with the values fastavro gives.
"""

from __future__ import annotations

import io
import json
import random
from decimal import Decimal
from typing import Any

import polars as pl
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from fastavro import parse_schema, schemaless_writer

import schemas
from tests.unit.topology_support import tx
from topology.batch.decode import ColumnarDecoder, border_free_marker
from topology.serde.decoder import AvroDecoder, AvroEncoder, DecodeError, wire_header

TX = schemas.schema_text("transaction")


@pytest.fixture()
def registry() -> SchemaRegistryClient:
    client = SchemaRegistryClient.new_client({"url": "mock://columnar"})
    for subject in client.get_subjects():
        client.delete_subject(subject, permanent=True)
    return client


def _amount_cents(schema: Any) -> pl.Expr:
    """Each row's amount in cents, or -2 for a null channel (checks decoding, not routing)."""
    return pl.when(pl.col("channel").is_null()).then(-2).otherwise(pl.col("amount").to_physical().cast(pl.Int64))


def _expected(decoder: AvroDecoder, value: bytes | None) -> int:
    try:
        record = decoder.decode(value)
    except DecodeError:
        return -1
    if record["channel"] is None:
        return -2
    return int(record["amount"] * 100)


def _raw(schema_id: int, record: dict[str, Any], schema: str = TX) -> bytes:
    buf = io.BytesIO()
    buf.write(wire_header(schema_id))
    schemaless_writer(buf, parse_schema(json.loads(schema)), record)
    return buf.getvalue()


def _poison(good: bytes, encoder: AvroEncoder) -> dict[str, bytes | None]:
    as_long = json.loads(TX)
    for f in as_long["fields"]:
        if f["name"] == "event_time":
            f["type"] = "long"
    rec = dict(tx(1, "1.00", channel="online"))
    rec["event_time"] = 10**17  # beyond datetime.max
    utf8 = bytearray(good)
    utf8[utf8.index(b"tx-") + 1] = 0xFF  # in transaction_id, a field the rules never read
    big = dict(rec, event_time=1, amount=b"\x7f" + b"\xff" * 9)  # 20 digits > precision 18
    as_bytes = json.loads(json.dumps(as_long))
    for f in as_bytes["fields"]:
        if f["name"] == "amount":
            f["type"] = "bytes"
    poison = {
        "garbage": b"\x00" + encoder._header[1:] + b"\x13\x99garbage" * 3,
        "truncated": good[:-4],
        "trailing": good + b"\x00",
        "bad-union": good[:-10] + b"\x09" + good[-9:],  # channel's union index (good: channel "online")
        "utf8": bytes(utf8),
        "magic": b"\x01" + good[1:],
        "unknown-id": wire_header(9999) + good[5:],
        "tombstone": None,
        "empty": b"",
        "timestamp": _raw(encoder.schema_id, rec, json.dumps(as_long)),
        "precision": _raw(encoder.schema_id, big, json.dumps(as_bytes)),
    }
    assert set(poison) == set(POISON)
    return poison


def test_marker_is_border_free() -> None:
    for _ in range(20):
        m = border_free_marker()
        assert len(m) == 16
        assert all(m[t:] != m[: 16 - t] for t in range(1, 16))


def test_good_values_decode_like_fastavro(registry: SchemaRegistryClient) -> None:
    encoder = AvroEncoder(registry, TX, "t-value")
    reference = AvroDecoder(registry, TX)
    rng = random.Random(7)
    values = []
    for i in range(500):
        cents = rng.randint(-(10**17) + 1, 10**17 - 1) if i % 7 == 0 else rng.randint(1, 10**5)
        amount = Decimal(cents).scaleb(-2)
        channel = rng.choice([None, "online", "ünïcode", "x" * rng.randint(0, 300)])
        values.append(encoder.encode(tx(i, str(amount), channel=channel, country=rng.choice([None, "DE"]))))
    codes = ColumnarDecoder(registry, TX).evaluate(values, _amount_cents)
    assert codes == [_expected(reference, v) for v in values]
    assert -1 not in codes


POISON = ("garbage", "truncated", "trailing", "bad-union", "utf8", "magic", "unknown-id", "tombstone", "empty",
          "timestamp", "precision")  # fmt: skip


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(k, marks=pytest.mark.xfail(strict=True, reason="polars reads any non-null union index as T"))
        if k == "bad-union"
        else k
        for k in POISON
    ],
)
def test_poison_goes_per_record_and_neighbours_stay_decoded(registry: SchemaRegistryClient, kind: str) -> None:
    encoder = AvroEncoder(registry, TX, "t-value")
    reference = AvroDecoder(registry, TX)
    good = [encoder.encode(tx(i, f"{i}.25", channel="online")) for i in range(200)]
    bad = _poison(good[0], encoder)[kind]
    if kind == "precision":  # fastavro rounds it to 18 digits: valid, but only the per-record path rounds alike
        assert reference.decode(bad)["amount"].as_tuple().digits.__len__() <= 18
    else:
        with pytest.raises(DecodeError):
            reference.decode(bad)
    values = [*good[:97], bad, *good[97:]]
    decoder = ColumnarDecoder(registry, TX, min_chunk=8)
    codes = decoder.evaluate(values, _amount_cents)
    assert codes is not None
    assert codes[97] == -1, kind
    expected = [_expected(reference, v) for v in values]
    # every other value: decoded exactly, or (at most a small chunk around the poison) per record
    assert all(c == e or c == -1 for c, e in zip(codes[:97] + codes[98:], expected[:97] + expected[98:], strict=True))
    assert sum(c == -1 for c in codes) <= 8 + 1


def test_a_batch_of_poison_only_is_all_per_record(registry: SchemaRegistryClient) -> None:
    encoder = AvroEncoder(registry, TX, "t-value")
    good = encoder.encode(tx(1, "1.00"))
    values = [v for v in _poison(good, encoder).values()]
    codes = ColumnarDecoder(registry, TX, min_chunk=2).evaluate(values, _amount_cents)
    assert codes == [-1] * len(values)


def test_other_schema_ids_in_a_batch_go_per_record_or_decode_with_their_own_schema(
    registry: SchemaRegistryClient,
) -> None:
    v2 = json.loads(TX)
    v2["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    v2_id = registry.register_schema("t2-value", Schema(json.dumps(v2), "AVRO"))
    encoder = AvroEncoder(registry, TX, "t-value")
    reference = AvroDecoder(registry, TX)
    values = []
    for i in range(300):
        if i % 50 == 7:
            values.append(_raw(v2_id, {**tx(i, "3.00", channel="web"), "note": "n" * i}, json.dumps(v2)))
        else:
            values.append(encoder.encode(tx(i, "2.00", channel="online")))
    codes = ColumnarDecoder(registry, TX, min_chunk=4).evaluate(values, _amount_cents)
    assert codes is not None
    for i, (c, v) in enumerate(zip(codes, values, strict=True)):
        assert c == _expected(reference, v) or c == -1
        if i % 50 == 7:
            assert c == -1  # v2 has a field the reader schema lacks: fastavro's resolution decides
    assert codes.count(-1) < 100


def test_reader_defaults_fill_fields_an_older_writer_lacks(registry: SchemaRegistryClient) -> None:
    v0 = json.loads(TX)
    v0["fields"] = [f for f in v0["fields"] if f["name"] != "merchant_category"]
    v0_id = registry.register_schema("t0-value", Schema(json.dumps(v0), "AVRO"))
    values = [_raw(v0_id, tx(i, "1.00", channel="online"), json.dumps(v0)) for i in range(10)]
    codes = ColumnarDecoder(registry, TX).evaluate(
        values, lambda schema: pl.when(pl.col("merchant_category").is_null()).then(1).otherwise(0)
    )
    assert codes == [1] * 10


def test_a_compile_that_refuses_the_schema_refuses_the_batch(registry: SchemaRegistryClient) -> None:
    encoder = AvroEncoder(registry, TX, "t-value")
    assert ColumnarDecoder(registry, TX).evaluate([encoder.encode(tx(1))], lambda schema: None) is None


def test_a_polars_panic_past_read_avro_sends_the_batch_to_the_per_record_path(
    registry: SchemaRegistryClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from polars.exceptions import PanicException

    encoder = AvroEncoder(registry, TX, "t-value")
    columnar = ColumnarDecoder(registry, TX)
    values = [encoder.encode(tx(i)) for i in range(40)]
    assert columnar.evaluate(values, _amount_cents) is not None

    def panic(self: pl.DataFrame, *args: Any, **kwargs: Any) -> pl.DataFrame:
        raise PanicException("called `Option::unwrap()` on a `None` value")

    monkeypatch.setattr(pl.DataFrame, "select", panic)
    assert not issubclass(PanicException, Exception)  # what a bare `except Exception` would let through
    assert columnar.evaluate(values, _amount_cents) is None  # None: every record of it per record
    assert columnar.evaluate(values, _amount_cents) is None
    assert columnar.failed_batches == 2
    assert [r.message for r in caplog.records].count(
        "batch decoding failed (PanicException: called `Option::unwrap()` on a `None` value; 1 batches so far): "
        "these records go through the per-record path"
    ) == 1

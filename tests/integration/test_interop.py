"""Interoperability with Confluent-authored serdes: ``@confluentinc/schemaregistry`` (npm, pinned in
``tests/interop``, installed by ``make test``) decodes what fraudstream writes, and fraudstream decodes
what Confluent's serializer writes: exact decimals, timestamps, nulls in optional fields, a schema
evolved to v2. Bytes pass between the two through Kafka via confluent-kafka (the JS client has no Kafka).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from schemas import SCHEMA_DIR
from services.consumer import to_json
from services.kafka import check_broker, consumer_config, end_offsets, ensure_topics, producer_config, registry_client
from tests.conftest import Endpoints
from tests.integration.eos_support import ROOT, Detector, Topics, read_until, stateless_topology
from topology.serde.decoder import AvroDecoder, AvroEncoder

pytestmark = pytest.mark.integration

INTEROP = ROOT / "tests" / "interop"


def confluent(mode: str, stack: Endpoints, topic: str, lines: list[str]) -> list[str]:
    """Lines through Confluent's JS serde (``decode``: hex values -> JSON; ``encode``: JSON -> hex)."""
    node = shutil.which("node")
    assert node, "Node.js is needed for the interop tests"
    assert (INTEROP / "node_modules" / "@confluentinc" / "schemaregistry").is_dir(), "run `make interop-deps`"
    proc = subprocess.run([node, str(INTEROP / "serde.js"), mode, stack.registry_url, topic], input="\n".join(lines),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def fraudstream(stack: Endpoints, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers, "SCHEMA_REGISTRY_URL": stack.registry_url}
    return subprocess.run([sys.executable, "-m", "services", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def raw_values(stack: Endpoints, topic: str) -> list[bytes]:
    consumer = Consumer(consumer_config(stack.kafka, f"fraudstream-interop-{topic}"))
    try:
        end = end_offsets(consumer, topic, [0])[0]
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out: list[bytes] = []
        while len(out) < end:
            out += [m.value() or b"" for m in consumer.consume(500, 1.0) if m.error() is None]
        return out
    finally:
        consumer.close()


def as_json(record: dict[str, Any]) -> dict[str, Any]:
    """A decoded record in consume's JSON form."""
    result: dict[str, Any] = json.loads(json.dumps(record, default=to_json))
    return result


def test_what_fraudstream_writes_confluent_decodes_and_back(stack: Endpoints, unique: str) -> None:
    tx, labels = f"interop-{unique}.transactions", f"interop-{unique}.labels"
    gen = fraudstream(stack, "generate", "--count", "60", "--rate", "0", "--seed", "8", "--topic", tx,
                      "--labels-topic", labels, "--partitions", "1", "--fraud", "large_amount=100")
    assert gen.returncode == 0, gen.stderr
    decoder = AvroDecoder(registry_client(stack.kafka))
    for topic in (tx, labels):
        values = raw_values(stack, topic)
        ours = [as_json(decoder.decode(v)) for v in values]
        assert [json.loads(line) for line in confluent("decode", stack, topic, [v.hex() for v in values])] == ours
        # Confluent's serializer, given the same records, writes the same bytes.
        assert confluent("encode", stack, topic, [json.dumps(r) for r in ours]) == [v.hex() for v in values]
    records = [as_json(decoder.decode(v)) for v in raw_values(stack, tx)]
    assert any(r["merchant_category"] is None for r in records) and any(r["merchant_category"] for r in records)
    assert any(float(r["amount"]) >= 900 for r in records)


def test_what_confluent_writes_fraudstream_consumes(stack: Endpoints, unique: str) -> None:
    topic = f"interop-{unique}.written-by-confluent"
    registry = registry_client(stack.kafka)
    AvroEncoder(registry, (SCHEMA_DIR / "transaction.avsc").read_text(), f"{topic}-value")  # registers v1
    records = [
        {"transaction_id": "c1", "source_account": "ACC1", "target_account": "MER1", "amount": "0.01",
         "currency": "EUR", "event_time": "2026-03-01T12:00:00.001Z", "channel": None, "country": None,
         "merchant_category": None},
        {"transaction_id": "c2", "source_account": "ACC2", "target_account": "ACC3", "amount": "9999999999999999.99",
         "currency": "CHF", "event_time": "1999-12-31T23:59:59.999Z", "channel": "card", "country": "CH",
         "merchant_category": "5411"},
    ]
    _produce_hex(stack, topic, confluent("encode", stack, topic, [json.dumps(r) for r in records]))
    consumed = fraudstream(stack, "consume", "--topic", topic, "--from-beginning", "--max-messages", "2")
    assert consumed.returncode == 0, consumed.stderr
    assert [json.loads(line) for line in consumed.stdout.splitlines()] == records


def test_a_schema_evolved_to_v2_both_ways(stack: Endpoints, unique: str) -> None:
    topic = f"interop-{unique}.alerts"
    registry = registry_client(stack.kafka)
    history = SCHEMA_DIR / "history" / "fraud_alert"
    alert: dict[str, Any] = {
             "transaction_id": "a1", "source_account": "ACC1", "target_account": "MER1", "amount": "-12.50",
             "event_time": "2026-01-01T00:00:00.000Z", "rules": [{"id": "velocity", "version": 2}],
             "score": 0.75, "detector_version": "0.1.0+test",
             "evidence": [{"rule_id": "velocity", "aggregate": "n", "function": "count", "value": None,
                           "op": ">=", "threshold": "5"}]}
    v1 = AvroEncoder(registry, (history / "v1.avsc").read_text(), f"{topic}-value")
    written_v1 = v1.encode(_from_json(alert))
    newer = {**alert, "evidence": [{**alert["evidence"][0], "value": "7", "transactions": ["t0", "t1"]}]}
    v2 = AvroEncoder(registry, (history / "v2.avsc").read_text(), f"{topic}-value")
    assert v2.schema_id != v1.schema_id
    decoded = confluent("decode", stack, topic, [written_v1.hex(), v2.encode(_from_json(newer)).hex()])
    assert [json.loads(line) for line in decoded] == [alert, newer]  # each with its writer's schema
    # Confluent writes with the latest version (v2); fraudstream decodes it, and reads v1 with v2's default.
    by_confluent = confluent("encode", stack, topic, [json.dumps(newer)])
    _produce_hex(stack, topic, [written_v1.hex(), *by_confluent])
    decoder = AvroDecoder(registry, (history / "v2.avsc").read_text())
    assert [as_json(decoder.decode(v)) for v in raw_values(stack, topic)] == [
        {**alert, "evidence": [{**alert["evidence"][0], "transactions": []}]}, newer]


def _from_json(record: dict[str, Any]) -> dict[str, Any]:
    from services.producer import from_json

    value: dict[str, Any] = from_json(json.loads((SCHEMA_DIR / "history" / "fraud_alert" / "v2.avsc").read_text()),
                                      record)
    return value


def _produce_hex(stack: Endpoints, topic: str, values: list[str]) -> None:
    ensure_topics(check_broker(stack.kafka), [topic], partitions=1)
    producer = Producer(producer_config(stack.kafka))
    for value in values:
        producer.produce(topic, bytes.fromhex(value))
    assert producer.flush(30) == 0


def test_the_detector_routes_what_confluent_serialized_exactly_once(
    stack: Endpoints, unique: str, tmp_path: Path
) -> None:
    t = Topics.make(f"cf{unique}")
    records = [
        {"transaction_id": f"cf-{i}", "source_account": f"ACC{i % 3}", "target_account": "MER1",
         "amount": amount, "currency": "EUR", "event_time": f"2026-03-01T12:00:{i:02d}.000Z",
         "channel": "online" if i % 2 else None, "country": None, "merchant_category": None}
        for i, amount in enumerate(["0.01", "899.99", "900.00", "12.50", "9999999999999999.99", "450.00"])
    ]  # fmt: skip
    AvroEncoder(registry_client(stack.kafka), (SCHEMA_DIR / "transaction.avsc").read_text(), f"{t.transactions}-value")
    _produce_hex(stack, t.transactions, confluent("encode", stack, t.transactions, [json.dumps(r) for r in records]))
    topology = tmp_path / "topology.yaml"
    topology.write_text(stateless_topology(t))
    detector = Detector(stack.bootstrap_servers, stack.registry_url, topology, t.application_id, "a",
                        tmp_path / "detector.log")  # fmt: skip
    try:
        out = read_until(stack.bootstrap_servers, t.outputs, "read_committed", len(records), timeout_s=60)
    finally:
        detector.signal(signal.SIGTERM)
        assert detector.wait() == 0, detector.output()[-3000:]
    routed = {o.transaction_id(): o.topic for o in out if o.topic != t.dlq}
    assert len(out) == len(records) == len(routed)  # every record once, none dead-lettered
    assert routed == {r["transaction_id"]: t.fraud if Decimal(str(r["amount"])) >= 900 else t.legit for r in records}

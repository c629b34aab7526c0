"""Poison input: malformed records interleaved with good ones all end in the DLQ (original bytes,
error and source headers) in the same transactions as the routed good ones; each fraud decision
has exactly one committed FraudAlert on the alerts topic."""

from __future__ import annotations

import io
import json
import signal
import time
from collections import Counter
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient

from schemas import schema_text
from tests.conftest import Endpoints
from tests.integration.eos_support import (
    POISON_REASONS,
    Detector,
    Topics,
    committed_offsets,
    create_topics,
    produce_transactions,
    read_all,
    stateless_topology,
)

pytestmark = pytest.mark.integration


def _input_value(bootstrap: str, topic: str, partition: int, offset: int) -> bytes | None:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "eos-poison-check", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, partition, offset)])
        for _ in range(50):
            for m in c.consume(1, 0.5):
                if m.error() is None:
                    assert m.offset() == offset
                    return m.value()
        raise AssertionError(f"no record at {topic}[{partition}]@{offset}")
    finally:
        c.close()


def test_malformed_records_go_to_the_dlq_and_good_ones_are_routed(
    stack: Endpoints, unique: str, tmp_path: Path
) -> None:
    t = Topics.make(unique)
    create_topics(stack.bootstrap_servers, [t.transactions], 3)
    registry = SchemaRegistryClient({"url": stack.registry_url})
    sent, poison = produce_transactions(
        stack.bootstrap_servers, registry, t.transactions, 8_000, seed=5, poison_every=200
    )
    assert len(poison) == 40
    topology = tmp_path / "topology.yaml"
    alerts = f"eos-{unique}.alerts"
    topology.write_text(stateless_topology(t).replace(f"dlq: {t.dlq}\n", f"dlq: {t.dlq}\nalerts: {alerts}\n", 1))
    d = Detector(stack.bootstrap_servers, stack.registry_url, topology, t.application_id, "poison",
                 tmp_path / "detector.log")
    total = len(sent) + len(poison)
    deadline = time.monotonic() + 120
    while committed_offsets(stack.bootstrap_servers, t.application_id, t.transactions) < total:
        assert time.monotonic() < deadline and d.proc.poll() is None, d.output()[-3000:]
        time.sleep(0.5)
    d.signal(signal.SIGTERM)
    assert d.wait() == 0, d.output()[-3000:]
    assert "dlq 40" in d.output()  # the stats line counts dead letters

    out = read_all(stack.bootstrap_servers, (*t.outputs, alerts), "read_committed")
    alert_schema = fastavro.parse_schema(json.loads(schema_text("fraud_alert")))
    decoded = [fastavro.schemaless_reader(io.BytesIO((o.value or b"")[5:]), alert_schema, None)
               for o in out if o.topic == alerts]  # fmt: skip
    out = [o for o in out if o.topic != alerts]
    dead = [o for o in out if o.topic == t.dlq]
    assert len(dead) == len(poison)
    assert Counter(o.value for o in dead) == Counter(poison)
    reasons = Counter(o.headers["error.reason"].decode() for o in dead)
    assert reasons == Counter({r: 10 for r in POISON_REASONS})
    for o in dead:
        assert o.headers["error.class"] == b"DecodeError"
        assert o.headers["error.message"]
        assert o.headers["source.topic"] == t.transactions.encode()
        partition, offset = int(o.headers["source.partition"]), int(o.headers["source.offset"])
        assert _input_value(stack.bootstrap_servers, t.transactions, partition, offset) == o.value
    for o in dead[:3]:
        assert o.key is not None and o.key.startswith(b"acct-")  # original key kept

    routed = [o for o in out if o.topic != t.dlq]
    by_id = {s.transaction_id: s for s in sent}
    # exactly one committed alert per committed fraud record, with the deciding rule
    fraud_ids = Counter(o.transaction_id() for o in routed if o.topic == t.fraud)
    assert fraud_ids and Counter(a["transaction_id"] for a in decoded) == fraud_ids  # type: ignore[call-overload,index]
    for a in decoded:
        assert isinstance(a, dict)
        assert a["rules"] == [{"id": "large-amount", "version": 1}] and a["score"] == 1.0
        assert a["amount"] == by_id[a["transaction_id"]].amount
    assert Counter(o.transaction_id() for o in routed) == Counter(by_id.keys())
    for o in routed:
        fraud = by_id[o.transaction_id()].amount >= 900
        assert o.topic == (t.fraud if fraud else t.legit)
        assert o.headers["fraudstream.branch"] == (b"fraud" if fraud else b"legit")
        assert o.headers["fraudstream.rules"] == (b"large-amount@1" if fraud else b"")
        assert o.headers["fraudstream.detector.version"]

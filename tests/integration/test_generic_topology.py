"""The generic engine on real Kafka: the readings topology (no payments: its own Avro schema in the
registry, its own topics, key and time field, one windowed rule) run by the exactly-once runtime."""

from __future__ import annotations

from collections import Counter

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient

from tests.conftest import Endpoints
from tests.integration.eos_support import create_topics, read_all
from tests.unit.generic_topology import READING, in_yaml, readings
from topology.processor import TopologyProcessor
from topology.runtime import ExactlyOnceRuntime, RuntimeSettings
from topology.serde.decoder import AvroDecoder, AvroEncoder

pytestmark = pytest.mark.integration


def test_the_runtime_runs_a_topology_that_is_not_about_fraud(stack: Endpoints, unique: str) -> None:
    names = (f"plant-{unique}", f"plant.readings.{unique}", f"plant.alarms.{unique}", f"plant.normal.{unique}",
             f"plant.dlq.{unique}")  # fmt: skip
    name, source, alarms, normal, dlq = names
    topology = in_yaml(*names)
    create_topics(stack.bootstrap_servers, [source], 2)
    registry = SchemaRegistryClient({"url": stack.registry_url})
    encode = AvroEncoder(registry, READING, f"{source}-value").encode
    rows = readings()
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "enable.idempotence": True})
    for value, _ in rows:
        producer.produce(source, encode(value), value["sensor"].encode())
    producer.produce(source, b"not avro", b"s9")
    assert producer.flush(30) == 0

    decode = AvroDecoder(registry, READING).decode
    processor = TopologyProcessor(topology, decode, version="plant-1")
    settings = RuntimeSettings(bootstrap_servers=stack.bootstrap_servers, application_id=name, instance_id="a",
                               session_timeout_ms=6000)  # fmt: skip
    runtime = ExactlyOnceRuntime(processor, settings)
    runtime.run(stop=lambda: runtime.stats.records_in_by_topic[source] >= len(rows) + 1)

    out = read_all(stack.bootstrap_servers, (alarms, normal, dlq), "read_committed")
    got = Counter((o.topic, decode(o.value)["celsius"]) for o in out if o.topic != dlq)
    want = Counter((alarms if b == "alarm" else normal, v["celsius"]) for v, b in rows)
    assert got == want
    (dead,) = [o for o in out if o.topic == dlq]
    assert dead.value == b"not avro" and dead.headers["error.reason"] == b"not-wire-format"
    changelog = read_all(stack.bootstrap_servers, processor.changelog_topics, "read_committed")
    assert changelog, "the windowed rule kept no state in its changelog"

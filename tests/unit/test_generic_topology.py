"""``topology/`` is a generic engine: a topology of machine readings (its own schema, topics, key and
time field) is built by the DSL and by YAML alike and routed by the driver over the real runtime code."""

from __future__ import annotations

from confluent_kafka.schema_registry import SchemaRegistryClient

from topology.processor import TopologyProcessor
from topology.serde.decoder import AvroDecoder, AvroEncoder
from topology.testing.driver import TopologyTestDriver

from .generic_topology import READING, in_python, in_yaml, readings

NAMES = ("plant", "plant.readings", "plant.alarms", "plant.normal", "plant.dlq")


def test_the_dsl_and_yaml_build_the_same_topology() -> None:
    assert in_python(*NAMES) == in_yaml(*NAMES)
    t = in_yaml(*NAMES)
    assert (t.source, t.source_key, t.time_field, len(t.stores)) == ("plant.readings", ("sensor",), "at", 1)


def test_the_driver_routes_readings_by_their_own_rules() -> None:
    registry = SchemaRegistryClient.new_client({"url": "mock://generic"})
    encoder = AvroEncoder(registry, READING, "plant.readings-value")
    decode = AvroDecoder(registry, READING).decode
    processor = TopologyProcessor(in_yaml(*NAMES), decode, version="p1")
    d = TopologyTestDriver(processor, partitions=2, encoder=encoder.encode, key_fields=("sensor",))
    rows = readings()
    d.pipe_all(value for value, _ in rows)
    for topic, branch in (("plant.alarms", "alarm"), ("plant.normal", "normal")):
        got = sorted((decode(r.value)["sensor"], decode(r.value)["celsius"]) for r in d.records(topic))
        assert got == sorted((v["sensor"], v["celsius"]) for v, b in rows if b == branch), topic
    (flapping,) = [r for r in d.records("plant.alarms") if dict(r.headers)["fraudstream.rules"] == b"flapping@1"]
    assert flapping.key == b"s3"
    assert d.records("plant.dlq") == []

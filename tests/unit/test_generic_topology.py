"""``topology/`` is a generic engine: a topology of machine readings (its own schema, topics, key and
time field) is built by the DSL and by YAML alike and routed by the driver over the real runtime code."""

from __future__ import annotations

import re
from pathlib import Path

from confluent_kafka.schema_registry import SchemaRegistryClient

from topology.processor import TopologyProcessor
from topology.serde.decoder import AvroDecoder, AvroEncoder
from topology.testing.driver import TopologyTestDriver

from .generic_topology import READING, in_python, in_yaml, readings

NAMES = ("plant", "plant.readings", "plant.alarms", "plant.normal", "plant.dlq")
ENGINE = Path(__file__).resolve().parents[2] / "topology"
# What would tie the engine to the Transaction: its field names, a built-in field set, its schema file,
# or an import of the application's packages (the project's schemas, the services).
TRANSACTION_WORDS = re.compile(
    r"source_account|target_account|transaction_id|merchant_category|TRANSACTION_FIELDS|transaction_fields"
    r"|transaction\.avsc|^\s*(from|import)\s+(schemas|services)\b"
)


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


def test_the_engine_knows_nothing_of_transactions() -> None:
    modules = sorted(ENGINE.rglob("*.py"))
    assert ENGINE / "plan" / "expr.py" in modules and len(modules) > 30
    found = [
        f"{path.relative_to(ENGINE.parent)}:{n}: {line.strip()}"
        for path in modules
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if TRANSACTION_WORDS.search(line)
    ]
    assert found == []

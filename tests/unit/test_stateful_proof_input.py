"""The stateful proofs' input (tests/integration/stateful_support.py), checked without a broker.

The crash and rebalance proofs compare decisions of different runs over one input. That is only
sound if the input's decisions do not depend on how input partitions interleave on the
repartition topic (fan-in's stage). Here the in-memory driver decides the same input in two very
different interleavings (record order, and partition after partition) and must agree, with every
rule of fraud.yaml firing.
"""

from __future__ import annotations

import io
from collections import Counter

from confluent_kafka.schema_registry import SchemaRegistryClient
from fastavro import schemaless_reader

from schemas import schema_text
from services.detector import loads_topology
from tests.integration.eos_support import TX_SCHEMA, Topics
from tests.integration.stateful_support import Tx, scenario_transactions, stateful_topology
from topology.processor import TopologyProcessor
from topology.serde.decoder import AvroDecoder, AvroEncoder
from topology.testing.driver import TopologyTestDriver

PARTITIONS = 3


def _decide(txs: list[Tx]) -> dict[str, tuple[str, bytes | None, bytes | None]]:
    registry = SchemaRegistryClient.new_client({"url": "mock://stateful-proof-input"})
    t = Topics.make("unit")
    topology = loads_topology(stateful_topology(t))
    encoder = AvroEncoder(registry, schema_text("transaction"), f"{t.transactions}-value")
    decoder = AvroDecoder(registry, schema_text("transaction"))
    driver = TopologyTestDriver(TopologyProcessor(topology, decoder.decode, version="t"), partitions=PARTITIONS)
    for tx in txs:
        driver.pipe(encoder.encode(tx.record), key=tx.record["source_account"], partition=tx.partition)
    out = {}
    for topic in (t.fraud, t.legit):
        for w in driver.records(topic):
            buf = io.BytesIO(w.value or b"")
            buf.seek(5)
            record = schemaless_reader(buf, TX_SCHEMA, None)
            assert isinstance(record, dict)
            out[record["transaction_id"]] = (topic, w.header("fraudstream.rules"), w.header("fraudstream.evidence"))
    return out


def test_decisions_do_not_depend_on_how_partitions_interleave() -> None:
    txs = scenario_transactions(4_000, seed=5, partitions=PARTITIONS)
    assert {tx.partition for tx in txs} == set(range(PARTITIONS))
    in_order = _decide(txs)
    partition_after_partition = _decide(sorted(txs, key=lambda tx: tx.partition))
    assert len(in_order) == len(txs)
    assert in_order == partition_after_partition
    fired: Counter[str] = Counter()
    for _, rules, _ in in_order.values():
        fired.update(r.split("@")[0] for r in (rules or b"").decode().split(",") if r)
    assert set(fired) == {"large-amount", "velocity", "card-testing", "fan-in", "fan-out", "structuring"}, fired


def test_the_input_is_the_same_for_the_same_seed_and_partitioned_by_source_account() -> None:
    a = scenario_transactions(500, seed=9, partitions=PARTITIONS)
    assert a == scenario_transactions(500, seed=9, partitions=PARTITIONS)
    for tx in a:
        assert tx.partition == int(tx.record["source_account"].rsplit("-", 1)[1]) % PARTITIONS

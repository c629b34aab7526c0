"""A changelog whose partition count differs from its input topic's stops the detector, on real Kafka.

The state of input partition N is changelog partition N. At start: the input topic has 3 partitions and
the first stage's changelog 2 (as after the input grew from 2 to 3): ``fraudstream detect`` must exit
with a clear message naming both topics and counts, before it consumes anything or creates a topic.
While running: partitions are added to the input; the detector must stop at the assignment of the new
one, before it reads it, with everything it committed decided exactly once.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_INVALID, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions

from services.detector import load_topology
from services.kafka import registry_client
from tests.conftest import Endpoints
from tests.integration.eos_support import Detector, Topics, create_topics, read_all
from tests.integration.stateful_support import Sender, Tx, decisions, scenario_transactions, stateful_topology
from topology.processor import TopologyProcessor

pytestmark = pytest.mark.integration


def test_a_changelog_with_another_partition_count_than_its_input_stops_the_detector_clearly(
    stack: Endpoints, unique: str, tmp_path: Path
) -> None:
    t = Topics.make(unique)
    topology = tmp_path / "topology.yaml"
    topology.write_text(stateful_topology(t), encoding="utf-8")
    plan = dataclasses.replace(load_topology(topology), name=t.application_id)  # as detect names it
    first, second = TopologyProcessor(plan, lambda v: {}, version="t").changelog_topics
    create_topics(stack.bootstrap_servers, [t.transactions], 3)
    create_topics(stack.bootstrap_servers, [first], 2)
    d = Detector(stack.bootstrap_servers, stack.registry_url, topology, t.application_id, "one", tmp_path / "d.log")
    try:
        rc = d.wait(120)
    finally:
        d.kill()
    out = d.output()
    assert rc == 4, out[-3000:]  # PartitionCountError: not the exit code of other fatal errors (2)
    assert f"{t.transactions} has 3 partitions but its changelog {first} has 2" in out, out[-3000:]
    assert "start the application anew" in out
    topics = AdminClient({"bootstrap.servers": stack.bootstrap_servers}).list_topics(timeout=30).topics
    assert second not in topics and t.legit not in topics  # it stopped before creating anything


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (-1: none); read_uncommitted, never joining the group."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "isolation.level": "read_uncommitted",
                  "enable.auto.commit": False})  # fmt: skip
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        return {tp.partition: -1 if tp.offset == OFFSET_INVALID else tp.offset for tp in got}
    finally:
        c.close()


def test_an_input_that_gains_partitions_while_the_detector_runs_stops_it_with_what_it_committed_intact(
    stack: Endpoints, unique: str, tmp_path: Path
) -> None:
    t = Topics.make(unique)
    topology = tmp_path / "topology.yaml"
    topology.write_text(stateful_topology(t), encoding="utf-8")
    create_topics(stack.bootstrap_servers, [t.transactions], 2)
    sender = Sender(stack.bootstrap_servers, registry_client(stack.kafka), t.transactions)
    txs = scenario_transactions(4_000, seed=13, partitions=2)
    sender.send(txs[:600])
    d = Detector(
        stack.bootstrap_servers, stack.registry_url, topology, t.application_id, "one", tmp_path / "d.log",
        env={"KAFKA_CONFIG_TOPIC_METADATA_REFRESH_INTERVAL_MS": "1000"},  # sees the new partition within ~1 s
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while sum(max(o, 0) for o in _committed(stack.bootstrap_servers, t.application_id, t.transactions,
                                                2).values()) < 600:  # fmt: skip
            assert d.alive(), d.output()[-3000:]
            assert time.monotonic() < deadline, f"600 inputs not committed in 60 s:\n{d.output()[-3000:]}"
            time.sleep(0.3)

        # Live input while the input grows (so a transaction is open then, most likely): 800 tx/s.
        def send_live() -> None:
            for i in range(600, len(txs), 40):
                sender.send(txs[i : i + 40])
                time.sleep(0.05)

        live = threading.Thread(target=send_live)
        live.start()
        admin = AdminClient({"bootstrap.servers": stack.bootstrap_servers})
        admin.create_partitions([NewPartitions(t.transactions, 3)])[t.transactions].result(timeout=30)
        new = [Tx(2, {**tx.record, "transaction_id": f"new-partition-{i}"}) for i, tx in enumerate(txs[:50])]
        Sender(stack.bootstrap_servers, registry_client(stack.kafka), t.transactions).send(new)  # new metadata
        rc = d.wait(30)
        live.join(30)
    finally:
        d.kill()
    out = d.output()
    assert rc == 4, out[-3000:]
    assert "partitions were added to an input topic while the detector ran" in out, out[-3000:]
    assert f"{t.transactions} has 3 partitions but its changelog" in out and "has 2" in out, out[-3000:]

    # Input committed = decided (legit/fraud) or, for fraud.yaml's fan-in stage, handed to the repartition
    # topic in the same transaction and not read by that stage yet; each exactly once, nothing past that.
    group, bootstrap = t.application_id, stack.bootstrap_servers
    committed = _committed(bootstrap, group, t.transactions, 3)
    assert committed[2] == -1, committed  # nothing of the new partition was committed
    inputs = read_all(bootstrap, (t.transactions,), "read_uncommitted")
    before = {o.transaction_id() for o in inputs if o.partition < 2 and o.offset < committed[o.partition]}
    assert len(before) >= 600, committed
    decided, seen = decisions(read_all(bootstrap, t.outputs, "read_committed"), t)
    assert max(seen.values()) == 1, f"decided twice: {[i for i, n in seen.items() if n > 1][:5]}"
    plan = dataclasses.replace(load_topology(topology), name=group)
    (repartition,) = set(TopologyProcessor(plan, lambda v: {}, version="t").source_topics) - {t.transactions}
    staged = _committed(bootstrap, group, repartition, 2)
    pending = [o.transaction_id() for o in read_all(bootstrap, (repartition,), "read_committed")
               if o.offset >= staged[o.partition]]  # fmt: skip
    assert len(pending) == len(set(pending)) and not set(pending) & set(decided), "staged twice"
    assert set(decided) | set(pending) == before, (
        f"{len(before - set(decided) - set(pending))} committed inputs neither decided nor staged, "
        f"{len((set(decided) | set(pending)) - before)} past the committed offsets"
    )

"""A changelog whose partition count differs from its input topic's stops the detector at start, on real Kafka.

The state of input partition N is changelog partition N. Here the input topic has 3 partitions and the
first stage's changelog 2 (as after the input grew from 2 to 3): ``fraudstream detect`` must exit with
a clear message naming both topics and counts, before it consumes anything or creates a topic.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from services.detector import load_topology
from tests.conftest import Endpoints
from tests.integration.eos_support import Detector, Topics, create_topics
from tests.integration.stateful_support import stateful_topology
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
    assert rc == 2, out[-3000:]
    assert f"{t.transactions} has 3 partitions but its changelog {first} has 2" in out, out[-3000:]
    assert "start the application anew" in out
    topics = AdminClient({"bootstrap.servers": stack.bootstrap_servers}).list_topics(timeout=30).topics
    assert second not in topics and t.legit not in topics  # it stopped before creating anything

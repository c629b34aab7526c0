"""The state benchmark's pure parts (no broker): the restored store's topology, real template values, the report."""

from __future__ import annotations

import json

from services.bench.detector import Throughput
from services.bench.state import STORE_RULE, Restore, StateReport, store_topology, template_values
from topology.processor import TopologyProcessor
from topology.records import RawRecord


def test_store_topology_keeps_only_the_restored_rule_on_the_bench_topics() -> None:
    topology = store_topology("bench-x")
    assert [r.id for r in topology.rules] == [STORE_RULE]
    assert topology.source == "bench-x.transactions"
    assert topology.stores and {s.rule.id for s in topology.stores} == {STORE_RULE}
    assert len({s.changelog_topic for s in topology.stores}) == 1  # one changelog: one value per key


def test_template_values_are_changelog_values_a_fresh_processor_restores() -> None:
    topology = store_topology("bench-y")
    values = template_values(topology, accounts=200, transactions=1_000)
    assert len(values) > 50  # one latest value per account seen
    processor = TopologyProcessor(topology, lambda v: {}, version="t")
    (changelog,) = processor.changelog_topics
    processor.assigned([(topology.source, 0)])
    for i, value in enumerate(values):
        processor.restore(RawRecord(changelog, 0, i, f"k{i}".encode(), value, 0, ()))
    assert [s.size() for s in processor.stores.values()] == [len(values)] * len(processor.stores)


def test_report_json_has_rates_and_the_stateful_to_stateless_ratio() -> None:
    report = StateReport({"cpus": 2}, keys=10, count=100, partitions=3)
    report.restore = Restore(10, 3, 2, 70.0, 0.1, 0.5, 10, 10, 0.2)
    report.results = [Throughput("stateful", 100, 2.0, 5), Throughput("stateless", 100, 1.0, 5)]
    doc = json.loads(json.dumps(report.as_json()))
    assert doc["restore"]["keys_per_second"] == 20.0
    assert [r["per_second"] for r in doc["results"]] == [50.0, 100.0]
    assert doc["stateful_vs_stateless"] == 0.5

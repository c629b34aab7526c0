"""The detector service's pure parts: version string, stats line, metrics hook (no broker)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.config import DetectorSettings, KafkaSettings
from services.detector.service import StatsLine, _metrics_hook, _runtime_settings, detector_version, late_by_rule
from services.metrics import Metrics
from topology.plan.dsl import sliding
from topology.plan.model import Topology
from topology.records import Kind
from topology.runtime import CommitReport, RuntimeStats

from .topology_support import TX, stream


def _two_rules() -> Topology:
    """Rule ``velocity`` (one store of that name) and ``pair`` (two aggregates: stores ``pair-0``, ``pair-1``)."""
    w = sliding("10m", grace="1m")
    velocity = TX.rule("velocity", TX.count(by="source_account", window=w) >= 5)
    pair = TX.rule("pair", TX.all_of(TX.count(by="source_account", window=w) >= 3,
                                     TX.sum("amount", by="source_account", window=w) >= 100))  # fmt: skip
    split = stream(dlq="dlq", name="app").split().branch([velocity, pair], to="fraud", name="fraud")
    return split.default_branch(to="legit", name="legit")


def test_version_names_code_and_topology() -> None:
    a, b = detector_version("rules: a"), detector_version("rules: b")
    assert a != b and a.split("+")[0] == b.split("+")[0]
    assert detector_version("rules: a") == a


def test_stats_line_shows_rates_branches_dlq_and_commit_latency() -> None:
    stats = RuntimeStats()
    line = StatsLine("in")
    assert "commit n/a" in line(stats, 100.0)
    stats.add(CommitReport(
        {"in": 2000, "in-repartition": 300},
        {("fraud", Kind.DECISION, ("fraud", "big@1")): 90, ("legit", Kind.DECISION, ("legit",)): 1900,
         ("dlq", Kind.DEAD_LETTER, ("decode",)): 10, ("in-repartition", Kind.REPARTITION, ()): 300,
         ("c", Kind.CHANGELOG, ()): 500},
        {"DecodeError": 10}, 0.01,
    ), 101.0)  # fmt: skip
    stats.commit_seconds.append(0.02)
    text = line(stats, 102.0)
    assert "in 2,000 (1,000/s) (+300 re-read from repartition topics) |" in text  # each input counted once
    assert "decided fraud 90 legit 1,900 |" in text and "dlq 10" in text
    assert "also wrote repartition 300, changelog 500 |" in text
    assert "p50 10.0 ms" in text and "p99 20.0 ms" in text


def test_metrics_hook_counts_committed_records() -> None:
    metrics = Metrics(service="detector")
    late = {"velocity": 2, "pair-0": 1, "pair-1": 4}
    hook = _metrics_hook(metrics, late, _two_rules)
    hook(CommitReport(
        {"in": 3},
        {("fraud", Kind.DECISION, ("fraud", "large-amount@1")): 1, ("legit", Kind.DECISION, ("legit",)): 1,
         ("dlq", Kind.DEAD_LETTER, ("decode",)): 1},
        {"DecodeError": 1},
        0.012,
    ))
    text = metrics.render()[0].decode()
    assert 'fraudstream_records_in_total{topic="in"} 3.0' in text
    assert 'fraudstream_rule_hits_total{rule="large-amount@1"} 1.0' in text
    assert 'fraudstream_dlq_records_total{error_class="DecodeError"} 1.0' in text
    assert 'fraudstream_records_out_total{branch="dead-letter",topic="dlq"} 1.0' in text
    assert 'fraudstream_transactions_total{outcome="committed"} 1.0' in text
    assert 'fraudstream_late_records{store="velocity"} 2.0' in text
    assert 'fraudstream_late_records{store="pair-1"} 4.0' in text
    assert 'fraudstream_late_records_by_rule{rule="velocity"} 2.0' in text
    assert 'fraudstream_late_records_by_rule{rule="pair"} 5.0' in text  # both stores of its aggregates


def test_late_records_per_rule_follow_the_plan_and_leave_out_stores_no_rule_has() -> None:
    topology = _two_rules()
    assert sorted(s.name for s in topology.stores) == ["pair-0", "pair-1", "velocity"]
    assert late_by_rule({"pair-1": 3, "gone": 7}, topology) == {"pair": 3}
    assert late_by_rule({}, topology) == {}


def test_the_store_is_typed_config_memory_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DetectorSettings().store == "memory"
    monkeypatch.setenv("FRAUDSTREAM_DETECTOR_STORE", "rocksdb")
    assert DetectorSettings().store == "rocksdb"
    assert DetectorSettings.with_overrides(store="memory").store == "memory"  # a flag wins
    monkeypatch.setenv("FRAUDSTREAM_DETECTOR_STORE", "leveldb")
    with pytest.raises(ValidationError):
        DetectorSettings()


def test_the_runtime_takes_the_detector_settings_of_its_own_names_as_they_are() -> None:
    settings = DetectorSettings.with_overrides(
        instance_id="i1", max_batch=7, on_error="fail", gc_threshold=5, static_membership=True, partitions=3
    )
    runtime = _runtime_settings(settings, KafkaSettings.only(bootstrap_servers="k:1"), "dlq", None)
    assert (runtime.instance_id, runtime.max_batch, runtime.on_error, runtime.gc_threshold) == ("i1", 7, "fail", 5)
    assert (runtime.application_id, runtime.commit_interval_ms) == ("fraudstream-detector", 25)
    assert runtime.group_instance_id == "fraudstream-detector-i1" and runtime.topic_partitions == 3
    assert (runtime.bootstrap_servers, runtime.dlq_topic) == ("k:1", "dlq")

"""services/rules/feed.py without a broker: rule records name the rule set in force; an idle feed ends an outage."""

from __future__ import annotations

import logging
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from services.config import KafkaSettings
from services.detector import loads_topology
from services.rules.feed import RuleApplier, RulesFeed, rules_version
from topology.processor import TopologyProcessor
from topology.records import RawRecord

BASE = """\
topology: t
source: {topic: tx, schema: transaction, key: [source_account], time: event_time}
dlq: dlq
rules:
  - {id: large, version: 1, when: amount >= 900}
branches:
  - {name: fraud, to: fraud, rules: [large]}
default_branch: {name: legit, to: legit}
"""


def _processor() -> TopologyProcessor:
    values = {b"small": {"amount": Decimal("10.00")}, b"big": {"amount": Decimal("6000.00")}}

    def decode(value: bytes | None) -> dict[str, Any]:
        return values[value or b""]

    return TopologyProcessor(loads_topology(BASE), decode, version="1.0+abc")


def _decided(p: TopologyProcessor, value: bytes) -> dict[str, bytes]:
    (out,) = p.process(RawRecord("tx", 0, 0, b"k", value, 0, ()))
    return dict(out.headers)


def rule(version: int, when: str) -> tuple[str, dict[str, Any]]:
    return "new", {"id": "new", "version": version, "definition": f"when: {when}"}


def test_every_decision_names_the_rule_set_in_force() -> None:
    p = _processor()
    assert _decided(p, b"small")["fraudstream.detector.version"] == b"1.0+abc"
    applier = RuleApplier(p)
    applier.apply([rule(1, "amount >= 5000")])
    v1 = p.version
    assert v1.startswith("1.0+abc.rules-") and v1 == rules_version("1.0+abc", p.topology)
    headers = _decided(p, b"big")
    assert headers["fraudstream.detector.version"] == v1.encode()
    assert headers["fraudstream.rules"] == b"large@1,new@1"
    assert _decided(p, b"small")["fraudstream.detector.version"] == v1.encode()  # the default branch too

    applier.apply([rule(2, "amount >= 5")])
    assert p.version != v1
    assert _decided(p, b"small")["fraudstream.detector.version"] == p.version.encode()


def test_the_version_depends_on_the_rule_set_only() -> None:
    a, b = _processor(), _processor()
    on_a, on_b = RuleApplier(a), RuleApplier(b)
    on_a.apply([rule(1, "amount >= 5000"), rule(2, "amount >= 5")])
    on_b.apply([rule(2, "amount >= 5")])
    assert a.version == b.version  # same rules in force, same version, on any instance
    before = a.version
    on_a.apply([("bad", {"id": "bad", "version": 1, "definition": "when: nope > 1"})])  # rejected
    assert a.version == before
    on_a.apply([("new", None)])  # removed: the rule set in force is the topology file's again
    assert a.version == "1.0+abc"
    assert _decided(a, b"big")["fraudstream.rules"] == b"large@1"
    on_a.apply([rule(3, "amount >= 5")])
    assert a.version == rules_version("1.0+abc", a.topology) != before  # another rule set, another version


def test_hostile_rules_are_counted_and_the_rules_in_force_stay() -> None:
    p = _processor()
    applier = RuleApplier(p)
    applier.apply([rule(2, "amount >= 5")])
    before = (p.version, p.topology)
    applier.apply([
        ("new", {"id": "new", "version": 3, "definition": "when: amount >= 1\x07"}),
        ("new", {"id": "new", "version": 4, "definition": "when: " + "(" * 3000 + "amount >= 1" + ")" * 3000}),
        ("new", {"id": "new", "version": "x", "definition": "when: amount >= 1"}),
    ])  # fmt: skip
    assert applier.rejected == 3
    assert (p.version, p.topology) == before  # version 2 of "new" still decides
    assert _decided(p, b"big")["fraudstream.rules"] == b"large@1,new@2"


class _IdleConsumer:
    """A consumer of an assigned, idle rules topic whose metadata requests fail while ``broker_up`` is False."""

    def __init__(self) -> None:
        self.broker_up = True
        self.lookups = 0

    def list_topics(self, topic: str, timeout: float) -> Any:
        self.lookups += 1
        if not self.broker_up:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "all brokers down"))
        meta = SimpleNamespace(error=None, partitions={0: None})
        return SimpleNamespace(topics={topic: meta})

    def assign(self, partitions: list[Any]) -> None:
        pass

    def consume(self, n: int, timeout: float) -> list[Any]:
        return []


def test_an_idle_feed_logs_the_end_of_a_broker_outage(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    consumer = _IdleConsumer()
    feed = RulesFeed(KafkaSettings(), "rules", registry=object(), consumer=consumer, clock=lambda: now[0])
    assert feed.poll() == [] and consumer.lookups == 1  # the assignment's lookup; no probe while reachable
    assert feed.poll() == [] and consumer.lookups == 1
    consumer.broker_up = False
    caplog.set_level(logging.WARNING, "fraudstream.rules")
    feed.outage.client_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "all brokers down"))
    for _ in range(5):  # still down: at most one probe a second
        now[0] += 0.3
        assert feed.poll() == []
    assert feed.outage.down and consumer.lookups == 1 + 2
    consumer.broker_up = True
    now[0] += 1.0
    assert feed.poll() == []  # no rule record arrives: the probe's answer ends the outage
    assert not feed.outage.down
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "unreachable" in lines[0] and "reachable again after 2.5 s" in lines[1]
    before = consumer.lookups
    now[0] += 5.0
    feed.poll()
    assert consumer.lookups == before  # reachable again: no more probes

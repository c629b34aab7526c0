"""A rule version published to the rules topic while the detector runs decides the later transactions."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from services.kafka import registry_client
from services.rules.feed import publish
from tests.integration.eos_support import (
    Detector,
    connection,
    produce_transactions,
    read_until,
    rules_topology,
)

pytestmark = pytest.mark.integration


def test_rule_version_change_applies_without_restart(
    stack: object, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap, url = stack.bootstrap_servers, stack.registry_url  # type: ignore[attr-defined]
    t, rules_topic, topology = rules_topology(bootstrap, url, f"rules-{unique}", tmp_path, 2)
    publish(connection(bootstrap, url), rules_topic, "broken",
            {"id": "broken", "version": 1, "definition": "when: nope > 1"})
    monkeypatch.setenv("FRAUDSTREAM_DETECTOR_RULES_TOPIC", rules_topic)
    det = Detector(bootstrap, url, topology, t.application_id, "a", tmp_path / "detector.log")
    try:
        det.wait_for_log("rule big@1 applied")
        det.wait_for_log("rule broken@1 rejected")
        registry = registry_client(connection(bootstrap, url))
        first, _ = produce_transactions(bootstrap, registry, t.transactions, 200, seed=1)
        out = read_until(bootstrap, t.outputs, "read_committed", len(first), timeout_s=30)
        publish(connection(bootstrap, url), rules_topic, "big",
                {"id": "big", "version": 2, "definition": "when: amount >= 100"})
        det.wait_for_log("rule big@2 applied")
        second, _ = produce_transactions(bootstrap, registry, t.transactions, 200, seed=2)
        out = read_until(bootstrap, t.outputs, "read_committed", len(first) + len(second), timeout_s=30)
    finally:
        det.signal(signal.SIGTERM)
        det.wait()
    by_id = {o.transaction_id(): o for o in out if o.topic in (t.fraud, t.legit)}
    for s in first:
        rules = by_id[s.transaction_id].headers.get("fraudstream.rules", b"").decode()
        assert "big@2" not in rules
        assert ("big@1" in rules) == (s.amount >= 5000)
    for s in second:
        o = by_id[s.transaction_id]
        rules = o.headers.get("fraudstream.rules", b"").decode()
        assert ("big@2" in rules) == (s.amount >= 100), (s, rules)
        assert (o.topic == t.fraud) == (s.amount >= 100)
        assert "big@1" not in rules



def test_hostile_rules_topic_records_neither_stop_the_detector_nor_its_restarts(
    stack: object, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from confluent_kafka import Producer

    bootstrap, url = stack.bootstrap_servers, stack.registry_url  # type: ignore[attr-defined]
    t, rules_topic, topology = rules_topology(bootstrap, url, f"hostile-{unique}", tmp_path, 2)
    kafka = connection(bootstrap, url)
    publish(kafka, rules_topic, "ctl", {"id": "ctl", "version": 1, "definition": "when: amount >= 1\x07"})
    publish(kafka, rules_topic, "deep", {"id": "deep", "version": 1,
                                         "definition": "when: " + "(" * 3000 + "amount >= 1" + ")" * 3000})
    raw = Producer({"bootstrap.servers": bootstrap})
    raw.produce(rules_topic, key=b"junk", value=b"\x00not a rule")  # not Avro in the wire format
    assert raw.flush(30) == 0
    monkeypatch.setenv("FRAUDSTREAM_DETECTOR_RULES_TOPIC", rules_topic)
    registry = registry_client(kafka)
    sent = 0
    for run in ("first", "restarted"):
        det = Detector(bootstrap, url, topology, t.application_id, "a", tmp_path / f"{run}.log")
        try:
            det.wait_for_log("rule ctl@1 rejected")
            det.wait_for_log("rule deep@1 rejected")
            det.wait_for_log("rule junk rejected")
            batch, _ = produce_transactions(bootstrap, registry, t.transactions, 100, seed=len(run))
            sent += len(batch)
            read_until(bootstrap, t.outputs, "read_committed", sent, timeout_s=30)  # it still decides
        finally:
            det.signal(signal.SIGTERM)
            assert det.wait() == 0, det.output()[-3000:]
    assert "control character U+0007" in det.output() and "nested too deeply" in det.output()

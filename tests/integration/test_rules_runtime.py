"""A rule version published to the rules topic while the detector runs decides the later transactions."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from services.kafka import registry_client
from services.rules.feed import publish
from tests.integration.eos_support import (
    Detector,
    Topics,
    create_topics,
    produce_transactions,
    read_all,
    stateless_topology,
)

pytestmark = pytest.mark.integration


def _wait_log(det: Detector, text: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in det.log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not logged:\n{det.log.read_text(errors='replace')[-3000:]}")


def test_rule_version_change_applies_without_restart(
    stack: object, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap, url = stack.bootstrap_servers, stack.registry_url  # type: ignore[attr-defined]
    t = Topics.make(f"rules-{unique}")
    rules_topic = f"rules-{unique}.rules"
    create_topics(bootstrap, [t.transactions], 2)
    topology = tmp_path / "topology.yaml"
    topology.write_text(stateless_topology(t))
    publish(bootstrap, url, rules_topic, "big", {"id": "big", "version": 1, "definition": "when: amount >= 5000"})
    publish(bootstrap, url, rules_topic, "broken", {"id": "broken", "version": 1, "definition": "when: nope > 1"})
    monkeypatch.setenv("FRAUDSTREAM_DETECTOR_RULES_TOPIC", rules_topic)
    det = Detector(bootstrap, url, topology, t.application_id, "a", tmp_path / "detector.log")
    try:
        _wait_log(det, "rule big@1 applied")
        _wait_log(det, "rule broken@1 rejected")
        registry = registry_client(url)
        first, _ = produce_transactions(bootstrap, registry, t.transactions, 200, seed=1)
        out = _wait_outputs(bootstrap, t, len(first))
        publish(bootstrap, url, rules_topic, "big", {"id": "big", "version": 2, "definition": "when: amount >= 100"})
        _wait_log(det, "rule big@2 applied")
        second, _ = produce_transactions(bootstrap, registry, t.transactions, 200, seed=2)
        out = _wait_outputs(bootstrap, t, len(first) + len(second))
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


def _wait_outputs(bootstrap: str, t: Topics, count: int) -> list:  # type: ignore[type-arg]
    deadline = time.monotonic() + 30
    while True:
        out = read_all(bootstrap, t.outputs, "read_committed")
        if len(out) >= count or time.monotonic() > deadline:
            assert len(out) == count
            return out
        time.sleep(0.5)

"""A rule change published while a transaction is open applies only after that transaction.

The detector runs with one input partition, ``--max-batch 100`` and a commit interval far longer
than the test, so each transaction holds exactly 100 consecutive input records. The new rule
version is published while the first transaction is open (50 records in, visible to a
read_uncommitted reader) and given time to be read; the transaction is then filled up. Every
decision of the first transaction must name the old version, every later one the new version.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from services.kafka import registry_client
from services.rules.feed import publish
from tests.integration.eos_support import (
    Detector,
    Sent,
    connection,
    produce_transactions,
    read_until,
    rules_topology,
)

pytestmark = pytest.mark.integration


def test_rule_change_waits_for_the_open_transaction_to_end(
    stack: object, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap, url = stack.bootstrap_servers, stack.registry_url  # type: ignore[attr-defined]
    t, rules_topic, topology = rules_topology(bootstrap, url, f"rulesboundary-{unique}", tmp_path, 1)
    monkeypatch.setenv("FRAUDSTREAM_DETECTOR_RULES_TOPIC", rules_topic)
    det = Detector(
        bootstrap, url, topology, t.application_id, "a", tmp_path / "detector.log",
        "--max-batch", "100", "--commit-interval-ms", "600000", "--transaction-timeout-ms", "900000",
        "--stats-interval-s", "0.2",  # the runtime's tick runs every 0.2 s
    )  # fmt: skip
    registry = registry_client(connection(bootstrap, url))
    try:
        det.wait_for_log("rule big@1 applied")
        first, _ = produce_transactions(bootstrap, registry, t.transactions, 50, seed=1)
        read_until(bootstrap, (t.legit, t.fraud), "read_uncommitted", 50)  # processed, in the open transaction
        publish(connection(bootstrap, url), rules_topic, "big",
                {"id": "big", "version": 2, "definition": "when: amount >= 100"})
        # Time for the detector to read the new version (several ticks); it must not apply it yet.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not det.logged("rule big@2 applied"):
            time.sleep(0.2)
        second, _ = produce_transactions(bootstrap, registry, t.transactions, 50, seed=2)
        read_until(bootstrap, (t.legit, t.fraud), "read_committed", 100)  # the first transaction, committed
        det.wait_for_log("rule big@2 applied")
        third, _ = produce_transactions(bootstrap, registry, t.transactions, 100, seed=3)
        out = read_until(bootstrap, (t.legit, t.fraud), "read_committed", 200)
    finally:
        det.signal(signal.SIGTERM)
        det.wait()
    by_id = {o.transaction_id(): o for o in out}

    def rules(s: Sent) -> str:
        return by_id[s.transaction_id].headers.get("fraudstream.rules", b"").decode()

    for s in [*first, *second]:  # one transaction: one rule set, the one in force when it began
        assert ("big@1" in rules(s)) == (s.amount >= 5000), (s, rules(s))
        assert "big@2" not in rules(s), (s, rules(s))
    for s in third:
        assert ("big@2" in rules(s)) == (s.amount >= 100), (s, rules(s))
        assert "big@1" not in rules(s), (s, rules(s))

    def version(s: Sent) -> bytes:
        return by_id[s.transaction_id].headers["fraudstream.detector.version"]

    # Every record names the rule set that decided it: one per transaction, another after the change.
    assert len({version(s) for s in [*first, *second]}) == 1
    assert len({version(s) for s in third}) == 1
    assert version(first[0]) != version(third[0])

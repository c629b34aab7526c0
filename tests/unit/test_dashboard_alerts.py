"""services.dashboard alerts, catalog and health: the queue, the drill-down, evidence text and health counts."""

from __future__ import annotations

import json
from typing import Any

from services.dashboard.alerts import AlertQueue, SeenIndex, evidence_items
from services.dashboard.catalog import RuleCatalog, evidence_text
from services.dashboard.health import Health, percentile
from services.dashboard.hub import Hub, TopicRoles, make_event
from services.detector import FRAUD_TOPOLOGY, load_topology

ROLES = TopicRoles(legit="L", fraud="F", alerts="A", dlq="D")
EVIDENCE = {"velocity@3": [
    {"aggregate": "velocity-many", "function": "count", "value": "10", "op": ">=", "threshold": "10",
     "transactions": ["t1", "t2"]},
    {"aggregate": "velocity-sum", "function": "sum", "value": None, "op": ">=", "threshold": "1200"},
]}


def event(topic: str, offset: int, tid: str, account: str = "AC1", headers: list[Any] | None = None,
          record: dict[str, Any] | None = None, produced_ms: int | None = None) -> dict[str, Any]:
    rec = {"transaction_id": tid, "source_account": account, "target_account": "M", "amount": "5.00"}
    return make_event(ROLES, topic=topic, partition=0, offset=offset, key=account.encode(),
                      headers=headers or [], record={**rec, **(record or {})}, received_ms=1000 + offset,
                      produced_ms=produced_ms)


def fraud(offset: int, tid: str) -> dict[str, Any]:
    return event("F", offset, tid, headers=[("fraudstream.branch", b"fraud"), ("fraudstream.rules", b"velocity@3"),
                                          ("fraudstream.evidence", json.dumps(EVIDENCE).encode()),
                                          ("fraudstream.detector.version", b"v1")])


def test_evidence_from_the_header_or_from_the_alert_record() -> None:
    from_header = evidence_items(["velocity@3"], json.dumps(EVIDENCE), {})
    assert [(i["rule"], i["aggregate"]) for i in from_header] == [("velocity@3", "velocity-many"),
                                                                   ("velocity@3", "velocity-sum")]
    alert = {"evidence": [{"rule_id": "velocity", "aggregate": "a", "function": "count", "value": "5"}]}
    assert evidence_items(["velocity@3"], None, alert) == [
        {"rule": "velocity@3", "aggregate": "a", "function": "count", "value": "5"}]
    assert evidence_items(["x@1"], "not json", {}) == []


def test_queue_merges_a_decision_and_its_alert_and_stays_bounded() -> None:
    queue = AlertQueue(capacity=2)
    queue.add(fraud(1, "t9"))
    queue.add(event("A", 2, "t9", headers=[("fraudstream.rules", b"velocity@3")],
                    record={"evidence": [], "score": 1.0}))
    assert queue.add(event("L", 3, "legit")) is None
    assert len(queue) == 1
    entry = queue.get("t9")
    assert entry is not None and entry["kinds"] == ["fraud", "alert"] and entry["rules"] == ["velocity@3"]
    assert entry["evidence"][0]["aggregate"] == "velocity-many" and entry["version"] == "v1"
    queue.add(fraud(4, "t10"))
    queue.add(fraud(5, "t11"))
    assert [row["key"] for row in queue.rows()] == ["t11", "t10"]  # newest first, the oldest evicted


def test_seen_index_by_id_and_account_is_bounded() -> None:
    seen = SeenIndex(capacity=3, per_account=2)
    for i in range(4):
        seen.add(event("L", i, f"t{i}", account="AC1" if i < 3 else "AC2"))
    seen.add(event("D", 9, "dead"))  # not a decision
    assert list(seen.by_id) == ["t1", "t2", "t3"]
    assert [e["tx"]["transaction_id"] for e in seen.account("AC1")] == ["t2", "t1"]
    assert [r["event"] is None for r in seen.lookup(["t0", "t3"])] == [True, False]


def test_detail_names_rules_evidence_related_and_account_rows() -> None:
    hub = Hub(recent=10, client_buffer=10, history_s=10, catalog=RuleCatalog(load_topology(FRAUD_TOPOLOGY)))
    hub.publish(event("L", 1, "t1"))
    hub.publish(fraud(2, "t3"))
    detail = hub.detail("t3")
    assert detail is not None
    rule = detail["rules_fired"][0]
    assert rule["ref"] == "velocity@3" and rule["source"] == "topology file"
    assert rule["description"].startswith("A burst of spending")
    assert [e["text"] for e in detail["evidence"]] == ["count 10 \u2265 10 in sliding 3m",
                                                        "sum late \u2265 1200 in sliding 3m"]
    assert [(r["transaction_id"], r["event"] is not None) for r in detail["related"]] == [("t1", True),
                                                                                          ("t2", False)]
    assert [e["tx"]["transaction_id"] for e in detail["account_recent"]] == ["t3", "t1"]
    assert hub.detail("nope") is None


def test_catalog_learns_run_time_rules_and_says_when_it_does_not_know_one() -> None:
    catalog = RuleCatalog()
    catalog.learn([("big", {"id": "big", "version": 2, "description": "large", "definition": "when: amount >= 5"}),
                   ("bad", {"id": "bad", "version": 1, "definition": "not: a rule"}), ("gone", None)])
    assert catalog.describe("big@2")["source"] == "rules topic"
    assert catalog.describe("big@2")["description"] == "large"
    assert catalog.describe("bad@1")["source"].startswith("unknown")
    assert catalog.ids() == ["big"]
    assert evidence_text({"function": "count", "value": "3", "op": "<", "threshold": "4"}, {}) == "count 3 < 4"


def test_health_counts_dead_letters_latency_and_versions() -> None:
    health = Health(last_dead=2)
    for i, reason in enumerate([b"not-wire-format", b"evaluation", b"evaluation"]):
        health.observe(event("D", i, f"d{i}", headers=[
            ("error.class", b"DecodeError"), ("error.reason", reason), ("source.topic", b"in"),
            ("source.partition", b"1"), ("source.offset", str(40 + i).encode()),
            ("fraudstream.detector.version", b"v1")]))
    for i in range(100):
        health.observe(event("L", i, f"t{i}", produced_ms=1000))  # seen at 1000 + i: latency i ms
    snap = health.snapshot()
    dead = snap["dead_letters"]
    assert dead["total"] == 3 and dead["by_reason"] == {"evaluation": 2, "not-wire-format": 1}
    assert [d["source_offset"] for d in dead["last"]] == ["42", "41"]
    assert snap["latency_ms"] == {"p50": 49, "p99": 98, "samples": 100}
    assert snap["versions"][0]["version"] == "v1" and snap["versions"][0]["records"] == 3
    assert percentile([], 0.5) is None and percentile([7], 0.99) == 7

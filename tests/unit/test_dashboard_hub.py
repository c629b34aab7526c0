"""services.dashboard.hub: events from decoded records, counters, history, bounded per-browser buffers."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

from services.dashboard.hub import Client, Event, Hub, TopicRoles, jsonable, make_event
from services.metrics import Metrics

ROLES = TopicRoles(legit="L", fraud="F", alerts="A")


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def tx(**over: Any) -> dict[str, Any]:
    record = {
        "transaction_id": "t1", "source_account": "AC1", "target_account": "M-1",
        "amount": Decimal("12.30"), "currency": "EUR",
        "event_time": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "channel": None, "country": "DE", "merchant_category": "5411",
    }
    return {**record, **over}


def event(topic: str, offset: int = 0, rules: bytes = b"", **over: Any) -> Event:
    headers = [("fraudstream.branch", b"fraud" if topic == "F" else b"legit"), ("fraudstream.rules", rules)]
    return make_event(ROLES, topic=topic, partition=0, offset=offset, key=b"AC1", headers=headers,
                      record=tx(**over), received_ms=1)


def test_make_event_is_json_ready_and_keeps_decision() -> None:
    ev = event("F", 7, rules=b"big@1,night@2", extra_field=b"\x01x")
    assert ev["kind"] == "fraud" and ev["branch"] == "fraud" and ev["rules"] == ["big@1", "night@2"]
    assert ev["tx"]["amount"] == "12.30"
    assert ev["tx"]["event_time"] == "2026-01-02T03:04:05+00:00"
    assert ev["extra"] == {"extra_field": "\x01x"}
    assert ev["id"] == "F:0:7" and ev["key"] == "AC1"
    json.dumps(ev)  # nothing left that JSON cannot carry


def test_markup_in_fields_is_passed_through_as_plain_data() -> None:
    ev = event("L", merchant_category="<script>alert(1)</script>")
    # The server sends data, not HTML: the browser writes it with textContent.
    assert ev["tx"]["merchant_category"] == "<script>alert(1)</script>"


def test_undecodable_record_becomes_an_error_event() -> None:
    ev = make_event(ROLES, topic="L", partition=1, offset=2, key=None, headers=None, record=None,
                    error="not-wire-format: first byte is 0x7b")
    assert ev["kind"] == "error" and ev["error"].startswith("not-wire-format") and ev["key"] is None


def test_jsonable_nested() -> None:
    assert jsonable({"a": [Decimal("1.50"), dt.date(2026, 1, 1)], "b": (b"x",)}) == {
        "a": ["1.50", "2026-01-01"], "b": ["x"],
    }


def test_counters_rules_and_snapshot_newest_first() -> None:
    hub = Hub(recent=3, client_buffer=10, history_s=60, clock=FakeClock(100.0))
    hub.publish(event("L", 0))
    hub.publish(event("F", 1, rules=b"big@1"))
    hub.publish(event("F", 2, rules=b"big@1,night@2"))
    hub.publish(event("A", 3))
    snap = hub.snapshot()
    assert snap["totals"]["decisions"] == 3 and snap["totals"]["fraud"] == 2 and snap["totals"]["alerts"] == 1
    assert abs(snap["totals"]["fraud_rate"] - 2 / 3) < 1e-9
    assert snap["rules"] == {"big@1": 2, "(default)": 1, "night@2": 1}
    assert [e["offset"] for e in snap["recent"]] == [3, 2, 1]  # bounded to 3, newest first


def test_history_one_point_per_second_with_empty_seconds() -> None:
    clock = FakeClock(100.2)
    hub = Hub(recent=10, client_buffer=10, history_s=5, clock=clock)
    hub.publish(event("L"))
    hub.publish(event("F"))
    clock.t = 101.5
    hub.publish(event("L"))
    clock.t = 104.0
    hub.tick()
    assert list(hub.history) == [(100, 2, 1, {}), (101, 1, 0, {}), (102, 0, 0, {}), (103, 0, 0, {})]
    clock.t = 200.0
    hub.tick()
    assert len(hub.history) == 5 and hub.history[-1] == (199, 0, 0, {})


def test_slow_browser_drops_oldest_and_never_blocks_publish() -> None:
    metrics = Metrics("dashboard")
    hub = Hub(recent=10, client_buffer=3, history_s=60, metrics=metrics)
    slow = hub.subscribe()
    for i in range(10):
        hub.publish(event("L", i))  # returns at once although nobody reads
    assert [e["offset"] for e in slow.events] == [7, 8, 9]
    assert slow.dropped == 7 and hub.totals.dropped == 7
    assert metrics.registry.get_sample_value("fraudstream_sse_dropped_events_total") == 7
    assert slow.wake.is_set()
    assert [e["offset"] for e in slow.drain(2)] == [7, 8]
    hub.unsubscribe(slow)
    assert metrics.registry.get_sample_value("fraudstream_sse_clients") == 0


def test_client_drain_empties_in_order() -> None:
    client = Client(capacity=5)
    for i in range(4):
        assert client.offer({"i": i})
    assert [e["i"] for e in client.drain(10)] == [0, 1, 2, 3]
    assert client.drain(10) == []


def test_a_real_fraud_alert_becomes_an_alert_event() -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from schemas import schema_text
    from topology.serde.decoder import AvroDecoder, AvroEncoder

    registry = SchemaRegistryClient.new_client({"url": "mock://dashboard-alert"})
    alert = {
        "transaction_id": "t9", "source_account": "AC1", "target_account": "M-1", "amount": Decimal("950.00"),
        "event_time": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "rules": [{"id": "velocity", "version": 2}],
        "evidence": [{"rule_id": "velocity", "aggregate": "velocity", "function": "count", "value": "6",
                      "op": ">=", "threshold": "6"}],
        "score": 1.0, "detector_version": "0.1+abc",
    }  # fmt: skip
    value = AvroEncoder(registry, schema_text("fraud_alert"), "A-value").encode(alert)
    ev = make_event(
        ROLES, topic="A", partition=0, offset=3, key=b"t9", headers=[("fraudstream.rules", b"velocity@2")],
        record=AvroDecoder(registry).decode(value),
    )  # fmt: skip
    assert ev["kind"] == "alert" and ev["rules"] == ["velocity@2"]
    assert ev["tx"]["transaction_id"] == "t9" and ev["tx"]["amount"] == "950.00"
    assert ev["extra"]["evidence"][0]["value"] == "6" and ev["extra"]["score"] == 1.0
    json.dumps(ev)  # ready for the browser
    hub = Hub(recent=3, client_buffer=10, history_s=60, clock=FakeClock(100.0))
    hub.publish(ev)
    snap = hub.snapshot()
    assert snap["totals"]["alerts"] == 1 and snap["totals"]["decisions"] == 0
    assert snap["rules"] == {}  # alerts do not count as decisions of a rule

"""The system's health as the dashboard observes it: dead letters, latency, detector versions, consumer lag.

Dead letters come from the DLQ topic's headers; latency is the time a decision
was seen here minus its record timestamp (the detector keeps the input's
timestamp on its output, so this is "event produced -> decision visible");
versions come from the ``fraudstream.detector.version`` header. Lag and the
detector group's members come from the AdminClient (``probe_group``), run off
the event loop. A detector instance's transactional id is not in its records, so
instances are the group's members and versions are what records name.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

Event = dict[str, Any]

ADMIN_TIMEOUT_S = 5.0


def percentile(sorted_values: list[int], q: float) -> int | None:
    """The nearest-rank ``q`` percentile (0 < q <= 1) of sorted values, or ``None`` when empty."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 1))))
    return sorted_values[rank - 1]


class Health:
    """Counts and samples behind the health panel; ``group`` is set by the probe."""

    def __init__(self, *, last_dead: int = 10, samples: int = 2048, group_id: str = "") -> None:
        self.dead_by_reason: Counter[str] = Counter()
        self.last_dead: deque[dict[str, Any]] = deque(maxlen=last_dead)
        self.latencies: deque[int] = deque(maxlen=samples)
        self.versions: dict[str, dict[str, Any]] = {}
        self.group: dict[str, Any] = {"group_id": group_id, "probed_ms": None}

    def observe(self, event: Event) -> None:
        """Take what an event says about health: a dead letter, a decision's latency and detector version."""
        kind = event["kind"]
        if kind == "dead-letter":
            dead = event["dead_letter"]
            self.dead_by_reason[dead["reason"]] += 1
            self.last_dead.append({**dead, "id": event["id"], "received_ms": event["received_ms"],
                                   "transaction_id": event["tx"].get("transaction_id")})
        if kind in ("legit", "fraud"):
            produced = event.get("produced_ms")
            if isinstance(produced, int) and produced > 0:
                self.latencies.append(max(0, event["received_ms"] - produced))
        version = event.get("version")
        if version and kind in ("legit", "fraud", "alert", "dead-letter"):
            seen = self.versions.setdefault(version, {"version": version, "records": 0, "last_ms": 0})
            seen["records"] += 1
            seen["last_ms"] = max(seen["last_ms"], event["received_ms"])

    def snapshot(self) -> dict[str, Any]:
        """The health panel's data (JSON-ready)."""
        lat = sorted(self.latencies)
        return {
            "dead_letters": {"total": sum(self.dead_by_reason.values()),
                             "by_reason": dict(self.dead_by_reason.most_common()),
                             "last": list(reversed(self.last_dead))},
            "latency_ms": {"p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99), "samples": len(lat)},
            "versions": sorted(self.versions.values(), key=lambda v: -v["last_ms"]),
            "group": self.group,
        }


def probe_group(admin: AdminClient, group_id: str, now_ms: int) -> dict[str, Any]:
    """The group's committed offsets against the partitions' ends (lag), and its members; blocking."""
    out: dict[str, Any] = {"group_id": group_id, "probed_ms": now_ms, "error": None}
    try:
        request = [ConsumerGroupTopicPartitions(group_id)]
        committed = admin.list_consumer_group_offsets(request)[group_id].result(ADMIN_TIMEOUT_S)
        parts = [tp for tp in committed.topic_partitions or () if tp.offset >= 0]
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        ends = admin.list_offsets({TopicPartition(tp.topic, tp.partition): latest for tp in parts})
        rows = []
        for tp in parts:
            end = ends[TopicPartition(tp.topic, tp.partition)].result(ADMIN_TIMEOUT_S).offset
            rows.append({"topic": tp.topic, "partition": tp.partition, "committed": tp.offset, "end": end,
                         "lag": max(0, end - tp.offset)})
        rows.sort(key=lambda r: (r["topic"], r["partition"]))
        out["partitions"] = rows
        out["lag"] = sum(r["lag"] for r in rows) if rows else None
        description = admin.describe_consumer_groups([group_id])[group_id].result(ADMIN_TIMEOUT_S)
        out["state"] = str(getattr(description.state, "name", description.state))
        out["members"] = [
            {"client_id": m.client_id, "host": m.host, "instance": m.group_instance_id,
             "partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in (m.assignment.topic_partitions or ()))}
            for m in description.members
        ]
    except Exception as exc:  # any broker answer that is not a result: shown, the probe runs again
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out

"""The dashboard's state, free of Kafka and HTTP: events, counters, history, and per-browser buffers.

Consumers ``publish`` events; each connected browser is a ``Client`` with a
bounded buffer. A full buffer drops its oldest event (counted), so a slow
browser never slows the consumers. Everything runs on one event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from services.dashboard.alerts import AlertQueue, SeenIndex, alert_detail, evidence_items
from services.dashboard.catalog import RuleCatalog
from services.dashboard.health import Health
from services.metrics import HeaderList, Metrics, header, rule_ids
from topology.deadletter import ERROR_CLASS, ERROR_MESSAGE, ERROR_REASON, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC
from topology.records import H_BRANCH, H_EVIDENCE, H_RULES, H_VERSION

Event = dict[str, Any]

# Transaction fields shown in the list, in order; anything else is kept under "extra".
TX_FIELDS = (
    "transaction_id", "source_account", "target_account", "amount", "currency", "event_time",
    "channel", "country", "merchant_category",
)


def jsonable(value: Any) -> Any:
    """A JSON-ready copy of a decoded Avro value (Decimal and bytes as text, datetimes as ISO-8601)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


@dataclass(frozen=True)
class TopicRoles:
    """Which topic is which: the kind of an event comes from the topic it was read from."""

    legit: str
    fraud: str
    alerts: str
    dlq: str = ""  # the dead-letter topic ("" = not watched)

    def kind(self, topic: str) -> str:
        kinds = {self.legit: "legit", self.fraud: "fraud", self.alerts: "alert"}
        if self.dlq:
            kinds[self.dlq] = "dead-letter"
        return kinds.get(topic, "other")


def dead_letter_of(hdrs: HeaderList) -> dict[str, Any]:
    """Why and from where a dead-lettered record came, from its headers."""
    hdrs = list(hdrs)
    cls = header(hdrs, ERROR_CLASS)
    return {
        "reason": header(hdrs, ERROR_REASON) or cls or "unknown",
        "class": cls,
        "message": header(hdrs, ERROR_MESSAGE),
        "source_topic": header(hdrs, SOURCE_TOPIC),
        "source_partition": header(hdrs, SOURCE_PARTITION),
        "source_offset": header(hdrs, SOURCE_OFFSET),
    }


def make_event(
    roles: TopicRoles,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    headers: HeaderList | None,
    record: Mapping[str, Any] | None,
    error: str | None = None,
    received_ms: int | None = None,
    produced_ms: int | None = None,
) -> Event:
    """One event for the browser: where it was read, the decision headers, and the decoded record.

    ``record=None`` with ``error`` set makes an "error" event (undecodable record), shown but not counted
    as a decision; a dead-lettered record stays a "dead-letter" event, decodable or not.
    ``produced_ms`` is the record's timestamp (for the latency).
    """
    hdrs = list(headers or ())
    data = jsonable(dict(record)) if record is not None else {}
    tx = {name: data.pop(name, None) for name in TX_FIELDS}
    kind = roles.kind(topic)
    if error is not None and kind != "dead-letter":
        kind = "error"
    rules = rule_ids(header(hdrs, H_RULES))
    return {
        "id": f"{topic}:{partition}:{offset}",
        "kind": kind,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": None if key is None else key.decode("utf-8", errors="replace"),
        "branch": header(hdrs, H_BRANCH),
        "rules": rules,
        "version": header(hdrs, H_VERSION),
        "evidence": evidence_items(rules, header(hdrs, H_EVIDENCE), data) if kind in ("fraud", "alert") else [],
        "dead_letter": dead_letter_of(hdrs) if kind == "dead-letter" else None,
        "tx": tx,
        "extra": data,
        "error": error,
        "received_ms": received_ms if received_ms is not None else int(time.time() * 1000),
        "produced_ms": produced_ms,
    }


@dataclass(eq=False)
class Client:
    """One connected browser: a bounded buffer of events, and a wake-up for its writer."""

    capacity: int
    events: deque[Event] = field(init=False)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: int = 0
    stats_pending: bool = False
    closed: bool = False

    def __post_init__(self) -> None:
        self.events = deque(maxlen=self.capacity)

    def offer(self, event: Event) -> bool:
        """Queue ``event``; drop the oldest when full. False when something was dropped."""
        full = len(self.events) == self.capacity
        if full:
            self.dropped += 1
        self.events.append(event)  # a deque with maxlen drops the oldest by itself
        self.wake.set()
        return not full

    def drain(self, limit: int) -> list[Event]:
        """Take up to ``limit`` queued events, oldest first."""
        out: list[Event] = []
        while self.events and len(out) < limit:
            out.append(self.events.popleft())
        if not self.events and not self.stats_pending:
            self.wake.clear()
        return out


@dataclass
class Totals:
    legit: int = 0
    fraud: int = 0
    alerts: int = 0
    errors: int = 0
    dead_letters: int = 0
    other: int = 0
    dropped: int = 0


class Hub:
    """Fan-out of events to browsers, plus the counters and the per-second history they all see."""

    def __init__(
        self,
        *,
        recent: int,
        client_buffer: int,
        history_s: int,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        queue: int = 5000,
        catalog: RuleCatalog | None = None,
        health: Health | None = None,
    ) -> None:
        self.recent: deque[Event] = deque(maxlen=recent)
        self.queue = AlertQueue(queue)
        self.seen = SeenIndex(capacity=max(4 * queue, 20_000))
        self.catalog = catalog or RuleCatalog()
        self.health = health or Health()
        self.client_buffer = client_buffer
        self.clients: set[Client] = set()
        self.totals = Totals()
        self.rules: Counter[str] = Counter()
        # One point per second: [unix second, decisions, fraud decisions, {rule id: fraud decisions}].
        self.history: deque[tuple[int, int, int, dict[str, int]]] = deque(maxlen=history_s)
        self._clock = clock
        self._second = int(clock())
        self._tx = 0
        self._fraud = 0
        self._rule_hits: Counter[str] = Counter()
        self.metrics = metrics
        self.closing = asyncio.Event()

    def subscribe(self) -> Client:
        client = Client(self.client_buffer)
        self.clients.add(client)
        if self.metrics:
            self.metrics.sse_clients.set(len(self.clients))
        return client

    def unsubscribe(self, client: Client) -> None:
        client.closed = True
        self.clients.discard(client)
        if self.metrics:
            self.metrics.sse_clients.set(len(self.clients))

    def publish(self, event: Event) -> None:
        """Count ``event``, keep it among the recent ones, and offer it to every browser."""
        self._roll()
        kind = event["kind"]
        if kind == "legit":
            self.totals.legit += 1
            self._tx += 1
        elif kind == "fraud":
            self.totals.fraud += 1
            self._tx += 1
            self._fraud += 1
        elif kind == "alert":
            self.totals.alerts += 1
        elif kind == "error":
            self.totals.errors += 1
        elif kind == "dead-letter":
            self.totals.dead_letters += 1
        else:
            self.totals.other += 1
        if kind in ("legit", "fraud"):
            for rule in event["rules"] or ["(default)"]:
                self.rules[rule] += 1
        if kind == "fraud":
            self._rule_hits.update(ref.split("@", 1)[0] for ref in event["rules"])
        self.queue.add(event)
        self.seen.add(event)
        self.health.observe(event)
        self.recent.append(event)
        for client in self.clients:
            if not client.offer(event):
                self.totals.dropped += 1
                if self.metrics:
                    self.metrics.sse_dropped.inc()

    def _roll(self) -> None:
        """Close the seconds that have passed (empty seconds count as zero)."""
        now = int(self._clock())
        if now <= self._second:
            return
        self.history.append((self._second, self._tx, self._fraud, dict(self._rule_hits)))
        gap = min(now - self._second - 1, self.history.maxlen or 0)
        for i in range(gap):
            self.history.append((now - gap + i, 0, 0, {}))
        self._second, self._tx, self._fraud = now, 0, 0
        self._rule_hits = Counter()

    def tick(self) -> None:
        """Once a second: close the past second and tell every browser the new stats."""
        self._roll()
        for client in self.clients:
            client.stats_pending = True
            client.wake.set()

    def stats(self) -> dict[str, Any]:
        t = self.totals
        decided = t.legit + t.fraud
        return {
            "totals": {
                "decisions": decided, "legit": t.legit, "fraud": t.fraud, "alerts": t.alerts,
                "errors": t.errors, "dead_letters": t.dead_letters, "dropped": t.dropped,
                "clients": len(self.clients), "fraud_rate": (t.fraud / decided) if decided else 0.0,
                "queued": len(self.queue),
            },
            "rules": dict(self.rules.most_common()),
            "history": [list(point) for point in self.history],
            "health": self.health.snapshot(),
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything a newly connected browser needs: stats, the recent events and the alert queue, newest first."""
        return {
            **self.stats(), "history_s": self.history.maxlen, "recent": list(reversed(self.recent)),
            "queue": self.queue.rows(), "queue_capacity": self.queue.capacity, "rule_ids": self.catalog.ids(),
        }

    def detail(self, key: str) -> dict[str, Any] | None:
        """The drill-down of the queued alert ``key`` (its transaction id), or ``None`` when not queued."""
        entry = self.queue.get(key)
        return None if entry is None else alert_detail(entry, self.catalog, self.seen)

    def close(self) -> None:
        """Tell every browser's writer to finish (server shutdown)."""
        self.closing.set()
        for client in self.clients:
            client.wake.set()

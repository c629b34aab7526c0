"""Prometheus metrics shared by every service, each service with its own registry.

A service makes one ``Metrics(service="detector")`` and passes it where counting
happens; nothing here is module-global, so tests can make as many as they like.
Expose it either on its own port (``metrics.serve(port)``, for the synchronous
generator and detector: prometheus_client's HTTP server runs in one daemon
thread that ``MetricsServer.close()`` stops) or from an existing web server
(``metrics.render()``, for the aiohttp dashboard and alerts).

Every metric is named ``fraudstream_*``. Prometheus adds ``job``/``instance``,
so no metric carries a service label; ``fraudstream_service_info`` says which
service and instance answers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

from topology.deadletter import ERROR_CLASS
from topology.records import H_BRANCH, H_RULES, Kind, OutRecord
from topology.records import header as record_header

# Commit latencies of a Kafka transaction are milliseconds to seconds.
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Webhook posts: tens of milliseconds to the client timeout.
POST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HeaderList = Iterable[tuple[str, str | bytes | None]]


def header(headers: HeaderList | None, name: str) -> str | None:
    """``topology.records.header`` as text (UTF-8, undecodable bytes replaced), for consumed headers."""
    raw = record_header([(k, v.encode() if isinstance(v, str) else v) for k, v in headers or ()], name)
    return None if raw is None else raw.decode("utf-8", errors="replace")


def rule_ids(rules_header: str | None) -> list[str]:
    """The ``rule_id@version`` entries of a ``fraudstream.rules`` header (empty for the default branch)."""
    if not rules_header:
        return []
    return [part.strip() for part in rules_header.split(",") if part.strip()]


class Metrics:
    """The metrics of one service, in one private ``CollectorRegistry``."""

    def __init__(self, service: str, instance: str = "", registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.info = Gauge(
            "fraudstream_service_info", "Which fraudstream service answers (always 1).",
            ["service", "instance"], registry=self.registry,
        )  # fmt: skip
        self.info.labels(service, instance).set(1)
        self._pipeline(self.registry)
        self._detector(self.registry)
        self._generator(self.registry)
        self._watchers(self.registry)

    def _pipeline(self, r: CollectorRegistry) -> None:
        """What came in, where it went (every service that consumes or decides)."""
        self.records_in = Counter("fraudstream_records_in", "Records consumed, by topic.", ["topic"], registry=r)
        self.records_out = Counter(
            "fraudstream_records_out", "Records produced, by topic and decided branch.",
            ["topic", "branch"], registry=r,
        )  # fmt: skip
        self.dlq = Counter(
            "fraudstream_dlq_records", "Records sent to a dead-letter topic, by error class.",
            ["error_class"], registry=r,
        )  # fmt: skip
        self.rule_hits = Counter("fraudstream_rule_hits", "Decisions per rule (rule_id@version).", ["rule"], registry=r)
        self.consumer_lag = Gauge(
            "fraudstream_consumer_lag", "Records behind the end of the partition (librdkafka statistics).",
            ["topic", "partition"], registry=r,
        )  # fmt: skip

    def _detector(self, r: CollectorRegistry) -> None:
        """Transactions, late records and refused rules (the detector)."""
        self.commit_latency = Histogram(
            "fraudstream_transaction_commit_seconds", "Time to commit one Kafka transaction (send offsets + commit).",
            registry=r, buckets=COMMIT_BUCKETS,
        )  # fmt: skip
        self.transactions = Counter(
            "fraudstream_transactions", "Kafka transactions ended, by outcome (committed/aborted).",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.late_records = Gauge(
            "fraudstream_late_records", "Records too late for every window of a store since start (not "
            "aggregated there; a retried transaction counts its records again), by store (rule).",
            ["store"], registry=r,
        )  # fmt: skip
        self.late_records_by_rule = Gauge(
            "fraudstream_late_records_by_rule", "fraudstream_late_records per rule id: the sum over the stores "
            "of the rule's aggregates (a record late for two of them counts twice).", ["rule"], registry=r,
        )  # fmt: skip
        self.rules_rejected = Gauge(
            "fraudstream_rules_rejected", "Rules-topic records refused since start (not a rule, or a change "
            "the running topology cannot take); the rules in force stay as they were.", registry=r,
        )  # fmt: skip

    def _generator(self, r: CollectorRegistry) -> None:
        self.generated = Counter("fraudstream_generator_records", "Transactions produced by the generator.", registry=r)
        self.generator_target_rate = Gauge(
            "fraudstream_generator_target_rate", "Configured generator rate (records/s; 0 = unthrottled).", registry=r
        )
        self.generator_rate = Gauge(
            "fraudstream_generator_rate", "Measured generator rate over the last report interval (records/s).",
            registry=r,
        )  # fmt: skip

    def _watchers(self, r: CollectorRegistry) -> None:
        """Consumers that decode records (dashboard, alerts), the dashboard's browsers, the alerts' webhook."""
        self.decode_errors = Counter(
            "fraudstream_decode_errors", "Records that could not be decoded, by topic.", ["topic"], registry=r,
        )  # fmt: skip
        self.sse_clients = Gauge("fraudstream_sse_clients", "Connected dashboard browsers.", registry=r)
        self.sse_dropped = Counter(
            "fraudstream_sse_dropped_events", "Events dropped (oldest first) for slow dashboard browsers.", registry=r
        )
        self.alerts_posted = Counter("fraudstream_alerts_posted", "Alerts accepted by the webhook.", registry=r)
        self.alert_attempts_failed = Counter(
            "fraudstream_alert_attempts_failed", "Webhook attempts that failed (each retry counts).", registry=r
        )
        self.alerts_dead_lettered = Counter(
            "fraudstream_alerts_dead_lettered", "Alerts given up on and dead-lettered (or logged).", registry=r
        )
        self.alert_post_latency = Histogram(
            "fraudstream_alert_post_seconds", "Time of one webhook attempt.", registry=r, buckets=POST_BUCKETS
        )

    def count_outputs(self, records: Iterable[OutRecord], dlq_topic: str | None = None) -> None:
        """Count produced records: per topic and branch, rule hits, and dead letters (after a commit)."""
        for record in records:
            self.count_decision(record.topic, record.headers, dlq_topic=dlq_topic)

    def count_decision(self, topic: str, headers: HeaderList | None, dlq_topic: str | None = None) -> None:
        """Count one routed record from its topic and its ``fraudstream.*`` / ``error.class`` headers."""
        hdrs = list(headers or ())
        if dlq_topic is not None and topic == dlq_topic:
            self.dlq.labels(header(hdrs, ERROR_CLASS) or "unknown").inc()
            self.records_out.labels(topic, Kind.DEAD_LETTER.value).inc()
            return
        self.records_out.labels(topic, header(hdrs, H_BRANCH) or "").inc()
        for rule in rule_ids(header(hdrs, H_RULES)):
            self.rule_hits.labels(rule).inc()

    def on_stats(self, stats_json: str) -> None:
        """librdkafka ``stats_cb``: set the consumer lag of every assigned partition.

        Use with ``{"statistics.interval.ms": 5000, "stats_cb": metrics.on_stats}``;
        librdkafka reports -1 while it does not know the lag yet, which is skipped.
        """
        stats = json.loads(stats_json)
        for topic, tstats in (stats.get("topics") or {}).items():
            for partition, pstats in (tstats.get("partitions") or {}).items():
                lag = pstats.get("consumer_lag", -1)
                if partition == "-1" or lag is None or lag < 0:
                    continue
                self.consumer_lag.labels(topic, partition).set(lag)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type, for a web framework's ``/metrics`` handler."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def serve(self, port: int, addr: str = "0.0.0.0") -> MetricsServer:
        """Serve ``/metrics`` on ``addr:port`` (0 picks a free port) in one daemon thread."""
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        return MetricsServer(server, thread)


@dataclass
class MetricsServer:
    """A running prometheus_client HTTP server; ``close()`` stops its thread."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

"""Compose the detector: topology file + Avro decoder + processor + exactly-once runtime.

The runtime knows nothing about fraud; this module gives it the fraud topology,
the registry-backed decoder, a stats line and (optionally) Prometheus metrics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from types import FrameType
from typing import Any

from schemas import schema_text
from services.config import DetectorSettings, KafkaSettings
from services.detector import FRAUD_TOPOLOGY, load_topology
from services.detector.alerts import FraudAlerts
from services.metrics import Metrics
from topology.batch.decode import ColumnarDecoder
from topology.plan.model import Topology
from topology.processor import TopologyProcessor
from topology.processor.timeguard import EventTimeGuard
from topology.records import Kind
from topology.runtime import CommitReport, ExactlyOnceRuntime, RuntimeSettings, RuntimeStats
from topology.serde.decoder import RegistryError
from topology.serde.projection import ProjectionDecoder

log = logging.getLogger("fraudstream.detector")

def detector_version(topology_text: str) -> str:
    """``<package version>+<topology digest>``: names the code and the rules that decided."""
    try:
        base = package_version("fraudstream")
    except PackageNotFoundError:
        base = "0+unknown"
    return f"{base}+{hashlib.sha256(topology_text.encode()).hexdigest()[:8]}"


def build_runtime(
    settings: DetectorSettings,
    kafka: KafkaSettings,
    *,
    metrics: Metrics | None = None,
    registry: Any = None,
) -> ExactlyOnceRuntime:
    """The runtime running the topology of ``settings`` (registry client: from ``kafka`` unless given)."""
    from services.kafka import registry_client

    path = Path(settings.topology_file) if settings.topology_file is not None else FRAUD_TOPOLOGY
    # Internal topics (changelogs, repartitions) are named after the application id, as in Kafka Streams,
    # so two applications (or a test and the demo) never share state.
    topology = dataclasses.replace(load_topology(path), name=settings.application_id)
    version = detector_version(path.read_text(encoding="utf-8"))
    # Builds only the fields the rules read (whole record still validated): see topology/serde/projection.py.
    registry = registry or registry_client(kafka)
    alerts = FraudAlerts.for_topic(registry, topology.alerts) if topology.alerts is not None else None
    decoder = ProjectionDecoder.for_topology(registry, topology, schema_text("transaction"), alerts)
    # Stateless topologies also route whole consumed batches (polars decode + vectorised rules).
    columnar = ColumnarDecoder(registry, schema_text("transaction")) if settings.batch_decode else None
    state = None
    if settings.store == "rocksdb":
        from topology.state.rocksdb import KVState

        directory = settings.state_dir / settings.application_id / settings.instance_id
        state = KVState(directory, cache_keys=settings.store_cache_keys)
    guard = EventTimeGuard(
        int(settings.max_event_lead_s * 1000) or None, int(settings.max_stream_lead_s * 1000) or None
    )
    processor = TopologyProcessor(
        topology, decoder, version=version, alerts=alerts, columnar=columnar, state=state, time_guard=guard
    )
    runtime_settings = _runtime_settings(settings, kafka, topology.dlq, metrics)
    log.info(
        "detector %s: topology %s (%s), version %s, %s state stores", runtime_settings.transactional_id,
        topology.name, path, version, settings.store,
    )
    hook = None if metrics is None else _metrics_hook(metrics, processor.late_by_store, lambda: processor.topology)
    return ExactlyOnceRuntime(processor, runtime_settings, on_commit=hook)


# The detector settings the runtime takes as they are, under the same name.
_RUNTIME_AS_IS = (
    "application_id", "instance_id", "commit_interval_ms", "max_batch", "consume_batch", "transaction_timeout_ms",
    "session_timeout_ms", "max_retries", "outage_patience_s", "max_task_idle_ms", "gc_threshold", "on_error",
)


def _runtime_settings(
    settings: DetectorSettings, kafka: KafkaSettings, dlq: str, metrics: Metrics | None
) -> RuntimeSettings:
    """The runtime's settings from the detector's and Kafka's (the consumer's statistics feed ``metrics``)."""
    consumer_extra: dict[str, Any] = {}
    if metrics is not None:
        consumer_extra = {"statistics.interval.ms": 5000, "stats_cb": metrics.on_stats}
    return RuntimeSettings(
        bootstrap_servers=kafka.bootstrap_servers,
        client_config=kafka.client_config(),  # security and pass-through: every client the runtime makes
        **{name: getattr(settings, name) for name in _RUNTIME_AS_IS},
        dlq_topic=dlq,
        transient_errors=(RegistryError,),
        transient_source="the Schema Registry",
        topic_partitions=settings.partitions,
        group_instance_id=f"{settings.application_id}-{settings.instance_id}" if settings.static_membership else None,
        consumer_config=consumer_extra,
    )


def start_rules(
    runtime: ExactlyOnceRuntime, settings: DetectorSettings, kafka: KafkaSettings, *, registry: Any = None,
    metrics: Metrics | None = None,
) -> Callable[[], None] | None:
    """Apply the rules topic to its end now; the returned call applies newer records (None if off).

    Call it only between transactions (``ExactlyOnceRuntime.run(between_transactions=...)``): a
    transaction is then decided by one rule set. A rule read while a transaction is open waits for
    its commit or abort. A transaction retried after an abort is decided by the rules in force at
    the retry: the aborted attempt left no output, offsets or state behind (exactly once), so this
    is the same as the rule having arrived before the records, which is also what a restart after
    a crash does (it applies the rules topic to its end before processing). Every output record
    names the rule set that decided it: after a run-time change, ``fraudstream.detector.version``
    (and the alerts' ``detector_version``) is ``<version>.rules-<digest of the rules in force>``.
    """
    from services.rules.feed import RuleApplier, RulesFeed

    if not settings.rules_topic or not isinstance(runtime.processor, TopologyProcessor):
        return None
    feed = RulesFeed(kafka, settings.rules_topic, registry=registry)
    applier = RuleApplier(runtime.processor)

    def apply(records: Any) -> None:
        applier.apply(records)
        if metrics is not None:
            metrics.rules_rejected.set(applier.rejected + feed.rejected)

    apply(feed.read_to_end())
    return lambda: apply(feed.poll())


def late_by_rule(late_by_store: Mapping[str, int], topology: Topology) -> dict[str, int]:
    """Late records per rule id: a store holds one rule's aggregate (the plan's ``Store.rule``), so its count
    goes to that rule; a rule with several aggregates gets the sum of their stores'. Stores the topology no
    longer has (a rule removed at run time) are left out."""
    rule_of = {store.name: store.rule.id for store in topology.stores}
    by_rule: dict[str, int] = {}
    for store, n in late_by_store.items():
        if store in rule_of:
            by_rule[rule_of[store]] = by_rule.get(rule_of[store], 0) + n
    return by_rule


def _metrics_hook(
    metrics: Metrics, late_by_store: Mapping[str, int], topology: Callable[[], Topology]
) -> Callable[[CommitReport], None]:
    """Counts each committed transaction's records; ``late_by_store`` is the processor's live count, and
    ``topology()`` the topology in force (rules change at run time), which maps its stores to rules."""
    def on_commit(report: CommitReport) -> None:
        for topic, n in report.records_in.items():
            metrics.records_in.labels(topic).inc(n)
        for (topic, kind, labels), n in report.records_out.items():
            decision = kind is Kind.DECISION
            metrics.records_out.labels(topic, labels[0] if decision and labels else kind.value).inc(n)
            if decision:
                for rule in labels[1:]:
                    metrics.rule_hits.labels(rule).inc(n)
        for error_class, n in report.dead_letters.items():
            metrics.dlq.labels(error_class).inc(n)
        for store, n in late_by_store.items():
            metrics.late_records.labels(store).set(n)
        if late_by_store:
            for rule, n in late_by_rule(late_by_store, topology()).items():
                metrics.late_records_by_rule.labels(rule).set(n)
        metrics.transactions.labels("committed").inc()
        metrics.commit_latency.observe(report.seconds)

    return on_commit


@dataclass
class StatsLine:
    """One periodic stats line: inputs (each counted once) and their rate, decisions per branch, dead
    letters, the engine's internal records apart, transactions and commit latency."""

    source: str
    last_in: int = 0
    last_at: float | None = None

    def __call__(self, stats: RuntimeStats, now: float) -> str:
        inputs = stats.records_in_by_topic[self.source]
        rate = ""
        if self.last_at is not None and now > self.last_at:
            rate = f" ({(inputs - self.last_in) / (now - self.last_at):,.0f}/s)"
        self.last_in, self.last_at = inputs, now
        internal_in = stats.records_in - inputs
        staged = f" (+{internal_in:,} re-read from repartition topics)" if internal_in else ""
        decided = " ".join(f"{name or '-'} {n:,}" for name, n in sorted(stats.decisions.items())) or "-"
        internal = ", ".join(
            f"{kind.value} {stats.by_kind[kind]:,}" for kind in (Kind.REPARTITION, Kind.CHANGELOG, Kind.ALERT)
            if stats.by_kind[kind]
        )  # fmt: skip
        p50, p99 = stats.commit_latency_ms(0.5), stats.commit_latency_ms(0.99)
        latency = "n/a" if p50 is None or p99 is None else f"p50 {p50:.1f} ms p99 {p99:.1f} ms"
        return (
            f"in {inputs:,}{rate}{staged} | decided {decided} | dlq {stats.dead_letters:,} | "
            f"also wrote {internal or '-'} | "
            f"txn {stats.transactions_committed:,} committed {stats.transactions_aborted:,} aborted | "
            f"commit {latency}"
        )


def install_stop_signals(runtime: ExactlyOnceRuntime) -> None:
    """SIGTERM and SIGINT ask the runtime to commit, leave the group and return."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: finishing the open transaction and leaving the group", signal.Signals(signum).name)
        runtime.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

"""``fraudstream detect``: run the fraud topology with exactly-once semantics until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

import typer

from services.config import DetectorSettings, KafkaSettings
from services.kafka import Unreachable, check_broker, check_registry
from services.logs import setup_logging
from services.metrics import Metrics
from topology.plan.loader import TopologyError
from topology.runtime import FatalRuntimeError, RuntimeStats

log = logging.getLogger("fraudstream.detector")

# The options whose declaration is too long for a line of detect_command's signature.
InstanceId = Annotated[
    str | None, typer.Option(help="Stable id of this instance (default: host name); unique per running one.")
]
OnError = Annotated[str | None, typer.Option(help="After max retries: 'dead-letter' the record or 'fail' (exit).")]
# The event-time skew guard.
MaxEventLead = Annotated[
    float | None, typer.Option(help="Dead-letter events dated more than this ahead of the wall clock (0: off).")
]
MaxStreamLead = Annotated[
    float | None, typer.Option(help="... or ahead of their partition's stream time (0: off, the default).")
]


def detect_command(
    topology: Annotated[Path | None, typer.Option(help="Topology YAML (default: the packaged fraud.yaml).")] = None,
    application_id: Annotated[str | None, typer.Option(help="Consumer group and transactional.id prefix.")] = None,
    instance_id: InstanceId = None,
    commit_interval_ms: Annotated[int | None, typer.Option(help="Transaction commit interval.")] = None,
    max_batch: Annotated[int | None, typer.Option(help="Records per transaction at most.")] = None,
    transaction_timeout_ms: Annotated[int | None, typer.Option(help="transaction.timeout.ms")] = None,
    session_timeout_ms: Annotated[int | None, typer.Option(help="Consumer group session timeout.")] = None,
    on_error: OnError = None,
    stats_interval_s: Annotated[float | None, typer.Option(help="Seconds between stats lines.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus /metrics on this port.")] = None,
    store: Annotated[str | None, typer.Option(help="Window state stores: 'memory' or 'rocksdb'.")] = None,
    max_event_lead_s: MaxEventLead = None,
    max_stream_lead_s: MaxStreamLead = None,
) -> None:
    """Run the fraud detector: read transactions, route them to fraud/legit/DLQ exactly once."""
    setup_logging()
    settings = DetectorSettings.with_overrides(
        topology_file=topology, application_id=application_id, instance_id=instance_id,
        commit_interval_ms=commit_interval_ms, max_batch=max_batch, transaction_timeout_ms=transaction_timeout_ms,
        session_timeout_ms=session_timeout_ms, on_error=_one_of(on_error, ("dead-letter", "fail"), "--on-error"),
        stats_interval_s=stats_interval_s, metrics_port=metrics_port,
        store=_one_of(store, ("memory", "rocksdb"), "--store"),
        max_event_lead_s=max_event_lead_s, max_stream_lead_s=max_stream_lead_s,
    )
    raise typer.Exit(run(settings, KafkaSettings()))


def _one_of(value: str | None, choices: tuple[str, str], flag: str) -> str | None:
    """``value`` (None: not given) when it is one of ``choices``; ``BadParameter`` naming ``flag`` otherwise."""
    if value is not None and value not in choices:
        raise typer.BadParameter(f"must be {choices[0]!r} or {choices[1]!r}", param_hint=flag)
    return value


def run(settings: DetectorSettings, kafka: KafkaSettings) -> int:
    """Run the detector until stopped; the process exit code (0 = stopped cleanly)."""
    from services.detector.service import StatsLine, build_runtime, install_stop_signals, start_rules

    try:
        check_broker(kafka)
        registry = check_registry(kafka)
    except Unreachable as exc:
        log.error("%s", exc)
        return 2
    metrics = Metrics(service="detector", instance=f"{settings.application_id}-{settings.instance_id}")
    server = metrics.serve(settings.metrics_port, settings.metrics_host) if settings.metrics_port else None
    try:
        try:
            runtime = build_runtime(settings, kafka, metrics=metrics, registry=registry)
        except TopologyError as exc:
            log.error("topology: %s", exc)
            return 2
        install_stop_signals(runtime)
        line = StatsLine(runtime.processor.source_topics[0])
        sync_rules = start_rules(runtime, settings, kafka, registry=registry, metrics=metrics)
        next_line = time.monotonic() + settings.stats_interval_s

        def tick(stats: RuntimeStats) -> None:
            nonlocal next_line
            if time.monotonic() >= next_line:
                next_line = time.monotonic() + settings.stats_interval_s
                log.info("%s", line(stats, time.monotonic()))

        try:
            # Rule changes apply between transactions only: each transaction is decided by one rule set.
            runtime.run(
                on_tick=tick, tick_interval_s=min(1.0, settings.stats_interval_s), between_transactions=sync_rules
            )
        except FatalRuntimeError as exc:
            log.error("%s", exc)
            return exc.exit_code
        log.info("%s", line(runtime.stats, time.monotonic()))  # always a closing line with the final totals
        return 0
    finally:
        if server is not None:
            server.close()

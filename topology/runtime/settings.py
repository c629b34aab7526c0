"""How the runtime talks to Kafka: ``RuntimeSettings`` and the client configurations made from it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import KafkaError

from topology.runtime.collector import DEFAULT_YOUNG_THRESHOLD
from topology.runtime.outage import CLIENT_LOGGER


@dataclass(frozen=True)
class RuntimeSettings:
    """How the runtime talks to Kafka. ``application_id`` is the consumer group."""

    bootstrap_servers: str
    application_id: str
    instance_id: str
    commit_interval_ms: int = 100
    max_batch: int = 10_000  # records per transaction at most
    consume_batch: int = 2_000  # records per consume() call at most
    transaction_timeout_ms: int = 60_000
    session_timeout_ms: int = 10_000
    max_poll_interval_ms: int = 300_000
    kafka_timeout_s: float = 30.0  # for init/commit/abort/send_offsets calls
    outage_patience_s: float = 240.0  # retriable errors (the broker is down or restarting) are waited out this long
    max_retries: int = 3
    retry_backoff_ms: int = 200  # doubles after each failure of the same record
    retry_backoff_max_ms: int = 5_000
    on_error: Literal["dead-letter", "fail"] = "dead-letter"
    # Errors that are not the record's fault (a registry outage): retried without limit, never dead-lettered.
    transient_errors: tuple[type[BaseException], ...] = ()
    transient_source: str = "a service the processor needs"  # what they mean is down, for the outage lines
    dlq_topic: str | None = None  # default: the processor's ``dlq_topic``
    create_topics: bool = True  # create missing sink and changelog topics
    topic_partitions: int | None = None  # new sinks: None = partitions of the first source
    replication_factor: int = -1  # -1 = broker default
    group_instance_id: str | None = None  # static membership (restarts without rebalance)
    restore_step_s: float = 0.2  # restore work per loop step (the other partitions go on meanwhile)
    restore_timeout_s: float = 600.0  # a restore that has not finished by then stops the runtime
    # A topology with a later stage reads its source partitions in event-time order (topology.runtime.order),
    # waiting this long at most for a partition that has more to read; -1: fetch order, no waiting.
    max_task_idle_ms: int = 2_000
    checkpoint_interval_s: float = 30.0  # how often committed state's changelog offsets are checkpointed
    # Python's young-generation GC threshold while the loop runs (0: as it is); see topology.runtime.collector.
    gc_threshold: int = DEFAULT_YOUNG_THRESHOLD
    # Applied to every client the runtime makes (consumer, producer, admin, restore): security settings.
    # Their librdkafka lines go to ``topology.runtime.outage.CLIENT_LOGGER`` unless this sets ``logger``.
    client_config: Mapping[str, Any] = field(default_factory=dict)
    consumer_config: Mapping[str, Any] = field(default_factory=dict)
    producer_config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def transactional_id(self) -> str:
        """Stable per instance: a restarted instance fences its zombie."""
        return f"{self.application_id}-{self.instance_id}"


ErrorCallback = Callable[[KafkaError], None]


def producer_config(s: RuntimeSettings, error_cb: ErrorCallback | None = None) -> dict[str, Any]:
    """The transactional producer's configuration (also used by the benchmark's raw copy loop)."""
    config: dict[str, Any] = {
        "logger": CLIENT_LOGGER,
        **s.client_config,
        "bootstrap.servers": s.bootstrap_servers,
        "transactional.id": s.transactional_id,
        "enable.idempotence": True,
        "transaction.timeout.ms": s.transaction_timeout_ms,
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "delivery.report.only.error": True,
    }
    if error_cb is not None:
        config["error_cb"] = error_cb
    config.update(s.producer_config)
    return config


def consumer_config(s: RuntimeSettings, error_cb: ErrorCallback | None = None) -> dict[str, Any]:
    """The read_committed, manually committed, cooperative-sticky consumer's configuration."""
    config: dict[str, Any] = {
        "logger": CLIENT_LOGGER,
        **s.client_config,
        "bootstrap.servers": s.bootstrap_servers,
        "group.id": s.application_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": s.session_timeout_ms,
        "heartbeat.interval.ms": max(500, s.session_timeout_ms // 5),
        "max.poll.interval.ms": s.max_poll_interval_ms,
        # A repartitioned record is fetched again once its first transaction commits: at 50 ms the fetch often
        # waited out its maximum (fraud.yaml p99 at 5,000 tx/s, 50 ms commits: 182-188 ms; at 10 ms 154-165 ms).
        "fetch.wait.max.ms": 10,
    }
    if error_cb is not None:
        config["error_cb"] = error_cb
    if s.group_instance_id:
        config["group.instance.id"] = s.group_instance_id
    config.update(s.consumer_config)
    return config


def restore_config(s: RuntimeSettings) -> dict[str, Any]:
    """The changelog reader's configuration: read_committed, assigned by hand, never commits."""
    return {
        "logger": CLIENT_LOGGER,
        **s.client_config,
        "bootstrap.servers": s.bootstrap_servers,
        "group.id": f"{s.application_id}-restore",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "fetch.wait.max.ms": 50,
    }


def admin_config(s: RuntimeSettings) -> dict[str, Any]:
    """The admin client's configuration (topic checks and creation)."""
    return {"logger": CLIENT_LOGGER, **s.client_config, "bootstrap.servers": s.bootstrap_servers}

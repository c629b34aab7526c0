"""Send a ``TransactionStream`` to Kafka: transactions keyed by source account, labels keyed by transaction id.

The transactions topic carries only what a payment system would see; the
ground truth goes to the labels topic (``TransactionLabel``), which the
detector never reads and evaluation joins by transaction id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient

import schemas
from services.config import GeneratorSettings, KafkaSettings
from services.generator.scenarios import (
    SCENARIOS,
    Generated,
    ScenarioRates,
    StreamConfig,
    TransactionStream,
    default_accounts,
)
from services.kafka import ensure_topics, producer_config
from topology.runtime.outage import KafkaOutage
from topology.serde.decoder import AvroEncoder

log = logging.getLogger("fraudstream.generator")

_MAX_BATCH = 5_000  # records produced between two polls at full speed


@dataclass
class Deliveries:
    """The producer's side of a run, in records (transactions and labels).

    ``delivered`` = records handed to the producer, less those failed and those still in its
    queue (``in_flight``): the producer reports failures only (a Python callback per delivered
    record took 5-20% of the sender's time, measured), so it is exact once nothing is in flight.
    """

    produced: int = 0
    delivered: int = 0
    failed: int = 0
    in_flight: int = 0
    last_error: str = ""

    def settle(self, in_flight: int) -> bool:
        """Take ``in_flight`` (the producer's queue length) as it is now; whether records were delivered since."""
        self.in_flight = in_flight
        delivered = self.produced - self.failed - in_flight
        more = delivered > self.delivered
        self.delivered = delivered
        return more


@dataclass
class Progress:
    """Counters of one run: transactions (updated by the sender) and their records' deliveries."""

    started: float
    sent: int = 0
    fraud: int = 0
    event_time_ms: int = 0
    records: Deliveries = field(default_factory=Deliveries)

    def rate(self, now: float) -> float:
        """Average transactions sent per second since the start."""
        elapsed = now - self.started
        return self.sent / elapsed if elapsed > 0 else 0.0

    def line(self, now: float) -> str:
        """One human-readable status line."""
        event = datetime.fromtimestamp(self.event_time_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        share = f"{100 * self.fraud / self.sent:.2f}%" if self.sent else "-"
        records = self.records
        failed = f" | failed {records.failed:,} ({records.last_error})" if records.failed else ""
        return (
            f"sent {self.sent:,} | {self.rate(now):,.0f} tx/s | delivered {records.delivered:,} | "
            f"in flight {records.in_flight:,} | fraud {self.fraud:,} ({share}) | event time {event}{failed}"
        )


def stream_config(settings: GeneratorSettings) -> StreamConfig:
    """The pure stream's config from the generator settings."""
    event_rate = settings.event_rate or (settings.rate if settings.rate > 0 else 10.0)
    start = settings.start
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return StreamConfig(
        seed=settings.seed,
        accounts=settings.accounts or default_accounts(event_rate),
        merchants=settings.merchants,
        event_rate=event_rate,
        start_ms=int(start.timestamp() * 1000) if start is not None else None,
        rates=ScenarioRates(**{name: getattr(settings, rate_setting(name)) for name in SCENARIOS}),
    )


def rate_setting(scenario: str) -> str:
    """The ``GeneratorSettings`` field holding ``scenario``'s rate."""
    return f"fraud_{scenario}"


class Sender:
    """Encodes and produces generated transactions and their labels."""

    def __init__(
        self,
        settings: GeneratorSettings,
        kafka: KafkaSettings,
        registry: SchemaRegistryClient,
        admin: Any,
    ) -> None:
        self.settings = settings
        ensure_topics(
            admin,
            [settings.topic, settings.labels_topic],
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
        )
        self._tx = AvroEncoder(registry, schemas.schema_text("transaction"), f"{settings.topic}-value")
        self._labels = AvroEncoder(registry, schemas.schema_text("transaction_label"), f"{settings.labels_topic}-value")
        self.progress = Progress(started=time.monotonic())
        self.outage = KafkaOutage(log)  # the producer buffers through an outage; said once each way
        self._producer = Producer(
            producer_config(
                kafka,
                **{
                    "compression.type": settings.compression,
                    "linger.ms": settings.linger_ms,
                    "on_delivery": self._failed,
                    "delivery.report.only.error": True,  # the client skips its callback per delivered record
                    "error_cb": self._client_error,
                },
            )
        )

    def _failed(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.progress.records.failed += 1
            self.progress.records.last_error = err.str()

    def _settle(self) -> None:
        """Update ``in_flight`` and ``delivered`` from the producer's queue (a delivery ends an outage)."""
        if self.progress.records.settle(len(self._producer)):
            self.outage.back()

    def _client_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.progress.records.last_error = f"fatal: {err.str()}"
        else:
            self.outage.client_error(err)

    def run(
        self,
        stream: TransactionStream,
        *,
        count: int | None,
        rate: float,
        report: Callable[[Progress], None],
        report_every_s: float = 0.5,
        stopped: Callable[[], bool] = lambda: False,
    ) -> Progress:
        """Send ``count`` transactions (None = until ``stopped()``) at ``rate`` tx/s (0 = as fast as possible).

        ``stopped()`` is checked between batches; what was sent is flushed either way.
        """
        progress = self.progress
        progress.started = start = time.monotonic()
        next_report = start
        poll = self._producer.poll
        try:
            while (count is None or progress.sent < count) and not stopped():
                now = time.monotonic()
                if rate > 0:
                    due = int((now - start) * rate) + 1 - progress.sent
                    if due <= 0:
                        poll(min(0.05, -due / rate + 1.0 / rate))
                        continue
                    batch = min(due, _MAX_BATCH)
                else:
                    batch = _MAX_BATCH
                if count is not None:
                    batch = min(batch, count - progress.sent)
                self._send(stream.take(batch))
                progress.event_time_ms = stream.clock_ms
                poll(0)
                if now >= next_report:
                    self._settle()
                    report(progress)
                    next_report = now + report_every_s
        finally:
            self.flush(report)
        return progress

    def _send(self, batch: Iterable[Generated]) -> None:
        """Produce each transaction of ``batch`` and its label, counted in ``progress``."""
        progress, records = self.progress, self.progress.records
        produce = self._producer.produce
        tx_topic, label_topic = self.settings.topic, self.settings.labels_topic
        encode_tx, encode_label = self._tx.encode, self._labels.encode
        for generated in batch:
            record = generated.record
            value = encode_tx(record)
            label = encode_label(generated.label())
            # The label first: an interrupt between the two leaves a label without
            # a transaction (harmless to evaluation), never a transaction without truth.
            key = record["transaction_id"].encode()
            try:
                produce(label_topic, label, key)
            except BufferError:  # local queue full
                self._produce_when_room(label_topic, key, label)
            records.produced += 1
            key = record["source_account"].encode()
            try:
                produce(tx_topic, value, key)
            except BufferError:
                self._produce_when_room(tx_topic, key, value)
            records.produced += 1
            progress.sent += 1
            if generated.scenario != "legit":
                progress.fraud += 1

    def _produce_when_room(self, topic: str, key: bytes, value: bytes) -> None:
        """Produce once the local queue has room (deliveries drain it)."""
        while True:
            self._producer.poll(0.05)
            try:
                self._producer.produce(topic, value, key)
                return
            except BufferError:
                continue

    def flush(self, report: Callable[[Progress], None], timeout_s: float | None = None) -> None:
        """Wait for every produced record to be delivered or failed (at most ``timeout_s``; by default as
        long as that takes, which the producer's ``message.timeout.ms`` bounds: a broker outage at the
        end of a run is waited out, not cut short with records undelivered)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while len(self._producer) and (deadline is None or time.monotonic() < deadline):
            self._producer.flush(0.5)
            self._settle()
            report(self.progress)
        self._producer.poll(0)  # serve the last failure reports
        self._settle()

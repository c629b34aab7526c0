"""The dashboard's Kafka side: one read_committed consumer of the legit, fraud, alerts and dead-letter topics.

The consumer is confluent_kafka's ``AIOConsumer`` (2.16.0): every blocking call
runs on a small executor this feed owns, so the event loop never blocks; decoding
(a registry lookup the first time a schema id is seen) runs on it too. The
dashboard only watches: it never commits offsets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, Message
from confluent_kafka.aio import AIOConsumer

from services.config import KafkaSettings
from services.dashboard.hub import Event, Hub, TopicRoles, make_event
from services.kafka import consumed_error, until_registry_answers
from services.kafka import consumer_config as kafka_consumer_config
from services.metrics import Metrics
from topology.runtime.outage import KafkaOutage, Outage
from topology.serde.decoder import DecodeError, RegistryError

log = logging.getLogger(__name__)

Decode = Callable[[bytes | None], Mapping[str, Any]]


def default_group_id() -> str:
    """A group of its own per host and process: every dashboard sees every record."""
    return f"fraudstream-dashboard-{socket.gethostname()}-{os.getpid()}"


def feed_config(kafka: KafkaSettings, group_id: str, *, from_beginning: bool) -> dict[str, Any]:
    """The feed's consumer: ``services.kafka.consumer_config`` (read_committed: only decisions whose
    transaction committed; never commits: a viewer moves no group's offsets), picking up a topic created
    later (the alerts topic) within seconds."""
    extra: dict[str, Any] = {"topic.metadata.refresh.interval.ms": 5000, "client.id": "fraudstream-dashboard"}
    return kafka_consumer_config(kafka, group_id, from_beginning=from_beginning, **extra)


class SeenOffsets:
    """The next offset the feed expects per partition: a record below it was shown already.

    The feed never commits, so when its group forgets it (a rejoin after a broker outage: unknown member)
    its partitions start again from the earliest offset; without this every decision read before the
    outage was counted twice (seen: the dashboard showed 244 fraud decisions of 233)."""

    def __init__(self) -> None:
        self._next: dict[tuple[str, int], int] = {}
        self.skipped = 0  # records read again and not shown again

    def first_time(self, msg: Message) -> bool:
        """Whether ``msg`` is past everything this feed has read of its partition (and note it)."""
        tp, offset = (msg.topic() or "", msg.partition() or 0), msg.offset() or 0
        if offset < self._next.get(tp, 0):
            self.skipped += 1
            return False
        self._next[tp] = offset + 1
        return True


def message_headers(msg: Message) -> list[tuple[str, str | bytes | None]]:
    """A consumed message's headers as a list of (name, value) pairs."""
    headers = msg.headers()
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers or [])


def decode_batch(messages: Sequence[Message], decode: Decode, roles: TopicRoles) -> list[Event]:
    """Events of a batch of messages; an undecodable record becomes an "error" event (kept, not lost).

    Raises ``RegistryError`` when the registry cannot be reached (the caller retries the batch).
    """
    events: list[Event] = []
    now_ms = int(time.time() * 1000)
    for msg in messages:
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        record: Mapping[str, Any] | None = None
        error: str | None = None
        ts_type, ts_ms = msg.timestamp()
        try:
            record = decode(msg.value())
        except DecodeError as exc:
            error = f"{exc.reason}: {exc}"
        events.append(
            make_event(
                roles, topic=topic, partition=partition, offset=offset, key=msg.key(),
                headers=message_headers(msg), record=record, error=error, received_ms=now_ms,
                produced_ms=ts_ms if ts_type != TIMESTAMP_NOT_AVAILABLE else None,
            )
        )
    return events


@dataclass(eq=False, repr=False)  # no repr: the config holds the client's secrets
class KafkaFeed:
    """Consumes the decision topics and publishes every record to the hub."""

    config: dict[str, Any]
    roles: TopicRoles
    decode: Decode
    hub: Hub
    metrics: Metrics
    _: KW_ONLY
    max_batch: int = 500
    poll_timeout_s: float = 0.5
    last_poll: float | None = field(default=None, init=False)  # monotonic time of the last answered poll
    missing_topics: set[str] = field(default_factory=set, init=False)
    error: str | None = field(default=None, init=False)  # last consumer error, for /healthz
    # The broker's outages and the registry's, each logged once.
    outage: KafkaOutage = field(default_factory=lambda: KafkaOutage(log), init=False)
    registry_outage: Outage = field(default_factory=lambda: Outage("the Schema Registry", log), init=False)
    failure: str | None = field(default=None, init=False)  # why run() stopped with an exception
    seen: SeenOffsets = field(default_factory=SeenOffsets, init=False)  # shown already (read again after a rejoin)

    @property
    def topics(self) -> list[str]:
        topics = [self.roles.legit, self.roles.fraud, self.roles.alerts]
        return [*topics, self.roles.dlq] if self.roles.dlq else topics

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; then close the consumer and its executor."""
        loop = asyncio.get_running_loop()
        # Two workers: AIOConsumer needs a second one for re-entrant calls from callbacks.
        executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dashboard-kafka")
        consumer = AIOConsumer(dict(self.config), executor=executor)
        try:
            await consumer.subscribe(self.topics)
            while not stop.is_set():
                messages = await consumer.consume(num_messages=self.max_batch, timeout=self.poll_timeout_s)
                self.last_poll = time.monotonic()
                records = [m for m in messages if not self._is_error(m) and self.seen.first_time(m)]
                if not records:
                    continue
                for msg in records:
                    self.metrics.records_in.labels(msg.topic() or "").inc()
                    self.missing_topics.discard(msg.topic() or "")
                events = await self._decode(loop, executor, records, stop)
                for event in events:
                    if event["kind"] == "error":
                        self.metrics.decode_errors.labels(event["topic"]).inc()
                    self.hub.publish(event)
        except Exception as exc:
            self.failure = repr(exc)
            raise
        finally:
            await consumer.close()
            executor.shutdown(wait=True)

    async def _decode(
        self, loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor,
        records: list[Message], stop: asyncio.Event,
    ) -> list[Event]:
        """Decode on the executor; while the registry is unreachable, the same batch again
        (``services.kafka.until_registry_answers``); nothing when stopped meanwhile."""

        def failed(exc: RegistryError) -> None:
            self.error = str(exc)

        events = await until_registry_answers(
            lambda: loop.run_in_executor(executor, decode_batch, records, self.decode, self.roles),
            self.registry_outage, stop, on_error=failed,
        )  # fmt: skip
        return events or []

    def _is_error(self, msg: Message) -> bool:
        err = consumed_error(msg, self.outage)  # raises on a fatal error
        if err is None:
            return False
        if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            topic = msg.topic() or err.str()
            if topic not in self.missing_topics:
                self.missing_topics.add(topic)
                log.info("topic not there (yet): %s; the dashboard shows it once it exists", topic)
        elif err.code() != KafkaError._PARTITION_EOF:
            self.error = err.str()
        return True

    def health(self, max_silence_s: float = 15.0) -> dict[str, Any]:
        """Healthy when the consumer answered a poll within ``max_silence_s``."""
        age = None if self.last_poll is None else time.monotonic() - self.last_poll
        return {
            "ok": self.failure is None and age is not None and age <= max_silence_s,
            "failure": self.failure,
            "last_poll_age_s": None if age is None else round(age, 3),
            "topics": self.topics,
            "missing_topics": sorted(self.missing_topics),
            "last_error": self.error,
        }

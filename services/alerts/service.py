"""The alerts consumer: one group reading fraud decisions, posting each to the webhook.

Its own consumer group, outside the detector's transaction: a slow or failing
webhook delays alerts only, never decisions. An offset is committed only after
its alert was delivered, or given up on and dead-lettered (or, when even that
fails, logged in full): at-least-once, nothing skipped silently. A stop during a
backoff leaves the alert uncommitted, so the next start posts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.aio import AIOConsumer

from services.alerts.webhook import ShuttingDown, WebhookGaveUp, WebhookPoster, alert_text
from services.config import KafkaSettings
from services.dashboard.feed import Decode, message_headers
from services.kafka import consumed_error, consumer_config, producer_config, until_registry_answers
from services.metrics import Metrics, header, rule_ids
from topology.deadletter import ERROR_ATTEMPTS, Failure, Source, dead_letter
from topology.records import H_RULES
from topology.runtime.errors import kafka_error
from topology.runtime.outage import KafkaOutage, Outage
from topology.serde.decoder import DecodeError

log = logging.getLogger(__name__)


def alerts_consumer_config(kafka: KafkaSettings, group_id: str, *, from_beginning: bool) -> dict[str, Any]:
    """Read committed decisions only; offsets committed by hand, after delivery or dead-lettering."""
    extra: dict[str, Any] = {"partition.assignment.strategy": "cooperative-sticky", "client.id": "fraudstream-alerts"}
    return consumer_config(kafka, group_id, from_beginning=from_beginning, **extra)


class DeadLetters:
    """Writes given-up alerts to a topic (idempotent producer, flushed per record), or only logs them."""

    def __init__(self, kafka: KafkaSettings, topic: str | None) -> None:
        self.topic = topic or None
        self.producer = (
            Producer(producer_config(kafka, **{"client.id": "fraudstream-alerts-dlq", "linger.ms": 0}))
            if self.topic else None
        )

    def write(self, msg: Message, reason: str, attempts: int, text: str) -> bool:
        """Dead-letter ``msg`` (blocking, up to 30 s); True when the broker acknowledged it."""
        log.error("alert given up after %d attempt(s): %s; alert was: %s", attempts, reason, text)
        if self.producer is None or self.topic is None:
            return False
        original = tuple((k, v.encode() if isinstance(v, str) else v or b"") for k, v in message_headers(msg))
        dead = dead_letter(
            self.topic, msg.key(), msg.value(), original,
            Source(msg.topic() or "", msg.partition() or 0, msg.offset() or 0),
            Failure("WebhookGaveUp", "webhook-gave-up", reason),
            extra=((ERROR_ATTEMPTS, str(attempts).encode()),),
        )  # fmt: skip
        delivered: list[KafkaError | None] = []
        self.producer.produce(dead.topic, key=dead.key, value=dead.value, headers=list(dead.headers),
                              on_delivery=lambda err, _m: delivered.append(err))
        remaining = self.producer.flush(30)
        ok = remaining == 0 and delivered == [None]
        if not ok:
            log.error("dead-lettering to %s failed (%s): the alert above is only in this log",
                      self.topic, delivered[0] if delivered else "timed out")
        return ok


@dataclass(eq=False, repr=False)  # no repr: the config holds the client's secrets
class AlertService:
    """Consumes ``topic`` and posts one alert per record."""

    commit_patience_s = 5.0  # a commit still waiting after this long: the broker is away

    config: dict[str, Any]
    topic: str
    decode: Decode
    poster: WebhookPoster
    dead_letters: DeadLetters
    metrics: Metrics
    _: KW_ONLY
    make_consumer: Callable[..., Any] = AIOConsumer  # AIOConsumer(config, executor=...), or a fake in unit tests
    reachable_check_s: float = 5.0
    handled: int = field(default=0, init=False)  # alerts finished (delivered or dead-lettered) and committed
    refused_commits: int = field(default=0, init=False)  # refused in a row (after a broker outage: posted again)
    last_poll: float | None = field(default=None, init=False)
    _stop: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    # The broker's outages and the registry's, each logged once.
    outage: KafkaOutage = field(default_factory=lambda: KafkaOutage(log), init=False)
    registry_outage: Outage = field(default_factory=lambda: Outage("the Schema Registry", log), init=False)
    _fatal: KafkaError | None = field(default=None, init=False)  # reported by the client's error callback

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set."""
        self._stop = stop
        self.poster.sleep = self._sleep
        executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="alerts-kafka")
        loop = asyncio.get_running_loop()
        # error_cb: without one librdkafka drops the "all brokers down" errors (consume returns none),
        # and the per-connection lines saying the same are CLIENT_LOGGER's noise: the outage went unsaid.
        consumer = self.make_consumer({**self.config, "error_cb": self._client_error}, executor=executor)
        try:
            await consumer.subscribe([self.topic])
            while not stop.is_set():
                messages = await consumer.consume(num_messages=100, timeout=0.5)
                self.last_poll = time.monotonic()
                if self._fatal is not None:
                    raise KafkaException(self._fatal)
                if not messages and self.outage.probe_due(self.reachable_check_s):
                    await self._check_reachable(consumer)
                for msg in messages:
                    if self._is_error(msg):
                        continue
                    self.metrics.records_in.labels(msg.topic() or "").inc()
                    try:
                        await self.handle(msg, loop, executor)
                    except ShuttingDown:
                        return  # not committed: posted again after a restart
                    await self._commit(consumer, msg)
                    self.handled += 1
        finally:
            with contextlib.suppress(KafkaException, RuntimeError):
                await consumer.close()
            executor.shutdown(wait=True)

    async def _client_error(self, error: KafkaError) -> None:
        """The consumer's ``error_cb`` (AIOConsumer runs it on the event loop): an unreachable broker begins an
        outage; a fatal error stops the service at the next poll."""
        if error.fatal():
            self._fatal = error
        else:
            self.outage.client_error(error)

    async def _check_reachable(self, consumer: AIOConsumer) -> None:
        """During an outage with nothing to read, a metadata request (``Outage.probe_due`` paces them): its
        answer ends the outage (a record consumed ends it too, but an idle fraud topic has none)."""
        try:
            await consumer.list_topics(self.topic, timeout=2.0)
        except KafkaException:
            return  # still away
        self.outage.back()

    async def _commit(self, consumer: AIOConsumer, msg: Message) -> None:
        """Commit past ``msg``. A commit the group refuses (after a broker outage the coordinator may no longer
        know this member) is not fatal: the alert was delivered, and the next assignment of its partition
        starts from the last committed offset, so it is posted again (at least once, never skipped).

        A synchronous commit blocks through a broker outage, and with it the client's error callbacks that
        would say so (seen: the outage's first line logged at its end, 130 s late): one still waiting after
        ``commit_patience_s`` begins the outage."""
        started = time.monotonic()
        commit = asyncio.ensure_future(consumer.commit(message=msg, asynchronous=False))
        try:
            done, _ = await asyncio.wait({commit}, timeout=self.commit_patience_s)
            if not done:
                self.outage.lost("a commit is waiting for the group coordinator", since=started)
            await commit
        except KafkaException as exc:
            err = kafka_error(exc)
            if err.fatal():
                raise
            if not self.refused_commits:  # one line per run of refusals, not one per alert
                log.warning("commit of %s[%s]@%s refused (%s): its alert, and those after it until a commit is "
                            "accepted again, are posted again after the rejoin",
                            msg.topic(), msg.partition(), msg.offset(), err.str())  # fmt: skip
            self.refused_commits += 1
            return
        if self.refused_commits:
            log.warning("commits accepted again (%d refused)", self.refused_commits)
            self.refused_commits = 0

    async def handle(self, msg: Message, loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor) -> None:
        """Deliver the alert of one decision, or dead-letter it; raises only ``ShuttingDown``."""
        record: Mapping[str, Any] | None = None
        error: str | None = None
        try:  # while the registry is unreachable (not the record's fault): the same record again
            record = await until_registry_answers(
                lambda: loop.run_in_executor(executor, self.decode, msg.value()), self.registry_outage, self._stop
            )
            if record is None:
                raise ShuttingDown
        except DecodeError as exc:  # still a fraud decision: alert with what is known
            error = f"{exc.reason}: {exc}"
            self.metrics.decode_errors.labels(msg.topic() or "").inc()
        key = msg.key()
        text = alert_text(
            record, rules=rule_ids(header(message_headers(msg), H_RULES)),
            topic=msg.topic() or "", partition=msg.partition() or 0, offset=msg.offset() or 0,
            key=None if key is None else key.decode("utf-8", errors="replace"), error=error,
        )
        try:
            await self.poster.post({"text": text})
        except WebhookGaveUp as exc:
            self.metrics.alerts_dead_lettered.inc()
            await loop.run_in_executor(executor, self.dead_letters.write, msg, str(exc), exc.attempts, text)

    async def _sleep(self, seconds: float) -> None:
        """A backoff that ends early, with ``ShuttingDown``, when the service is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        if self._stop.is_set():
            raise ShuttingDown

    def _is_error(self, msg: Message) -> bool:
        return consumed_error(msg, self.outage) is not None  # raises on a fatal error

    def health(self, max_silence_s: float = 15.0) -> dict[str, Any]:
        age = None if self.last_poll is None else time.monotonic() - self.last_poll
        return {"ok": age is not None and age <= max_silence_s, "handled": self.handled,
                "last_poll_age_s": None if age is None else round(age, 3)}

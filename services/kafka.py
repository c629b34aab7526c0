"""Small shared Kafka and Schema Registry helpers for every service.

Config builders (one place for the settings every client of this project
uses), reachability checks that turn "nothing answers" into one clear
``Unreachable`` message, and a topic-creation helper.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_not_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from services.client_properties import redact_url
from services.config import KafkaSettings
from topology.runtime.outage import CLIENT_LOGGER, KafkaOutage, Outage
from topology.runtime.partitions import end_offset
from topology.serde.decoder import RegistryError

log = logging.getLogger("fraudstream.kafka")

# librdkafka logs routed nowhere: for clients whose connection failures are reported another way.
QUIET_LOGGER = logging.getLogger("fraudstream.librdkafka-quiet")
QUIET_LOGGER.addHandler(logging.NullHandler())
QUIET_LOGGER.propagate = False


class Unreachable(Exception):
    """A broker or Schema Registry that does not answer (the message is one readable line)."""


class AuthFailed(Unreachable):
    """A broker or registry that answers but refuses the credentials (one line naming the cause)."""


class NotAuthorized(Exception):
    """Authenticated, but the broker's ACLs do not allow this principal the operation."""


def producer_config(kafka: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """Idempotent producer (acks=all, ordered per partition), compressed and batched."""
    config: dict[str, Any] = {
        "logger": CLIENT_LOGGER,
        **kafka.client_config(),
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
    }
    config.update(overrides)
    return config


def consumer_config(
    kafka: KafkaSettings,
    group_id: str,
    *,
    from_beginning: bool = False,
    read_committed: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Consumer reading only committed transactional records by default."""
    config: dict[str, Any] = {
        "logger": CLIENT_LOGGER,
        **kafka.client_config(),
        "group.id": group_id,
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        "enable.auto.commit": False,
    }
    config.update(overrides)
    return config


def consumed_error(msg: Message, outage: KafkaOutage) -> KafkaError | None:
    """The error a consumed message carries, or None for a record (which ends a broker outage).

    A fatal error raises ``KafkaException``; end of partition and a missing topic are returned as they
    are; any other error goes to ``outage``, which logs an unreachable broker once per outage.
    """
    err = msg.error()
    if err is None:
        outage.back()
        return None
    if err.code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
        return err
    if err.fatal():
        raise KafkaException(err)
    outage.client_error(err)
    return err


T = TypeVar("T")


async def until_registry_answers(
    attempt: Callable[[], Awaitable[T]],
    outage: Outage,
    stop: asyncio.Event,
    *,
    pause_s: float = 1.0,
    on_error: Callable[[RegistryError], None] | None = None,
) -> T | None:
    """``await attempt()`` (a decode) until it raises no ``RegistryError``; None if ``stop`` is set first.

    The one registry-outage retry of the consumers that decode (dashboard feed, alerts consumer): the
    registry's not answering is not the record's fault, so the same record or batch is tried again, with
    ``outage`` logging the outage once each way. The pacing is ``AvroDecoder``'s own: after a failed
    lookup it fails fast, asking the registry again only after 1, 2, 4, 8 s, so ``pause_s`` just keeps this
    loop from spinning on those fast failures. Other errors (a ``DecodeError``) are the caller's.
    """
    while True:
        try:
            result = await attempt()
        except RegistryError as exc:
            outage.lost(str(exc))
            if on_error is not None:
                on_error(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause_s)
            if stop.is_set():
                return None
            continue
        outage.back()
        return result


def admin_config(kafka: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """Admin client config (quiet: connection failures are reported by ``check_broker``)."""
    config: dict[str, Any] = {**kafka.client_config(), "logger": QUIET_LOGGER}
    config.update(overrides)
    return config


def _patience(kafka: KafkaSettings, what: str, where: str, wait_s: float, attempts: int | None) -> dict[str, Any]:
    """Retry arguments: until ``wait_s`` has passed (or ``attempts`` tries), one warning line per wait."""

    def waiting(state: RetryCallState) -> None:
        sleep = state.next_action.sleep if state.next_action else 0.0
        cause = state.outcome.exception() if state.outcome else None
        left = max(0.0, wait_s - (state.seconds_since_start or 0.0))
        log.warning("waiting for %s at %s (%s); retrying in %.0f s, giving up in %.0f s (KAFKA_STARTUP_WAIT_S)",
                    what, where, kafka.redact(_reason(cause)), sleep, left)  # fmt: skip

    stop = stop_after_delay(wait_s) if attempts is None else stop_after_attempt(attempts)
    return {"stop": stop, "wait": wait_exponential(multiplier=0.5, max=10), "reraise": False, "before_sleep": waiting}


def check_broker(
    kafka: KafkaSettings, *, timeout_s: float = 5.0, attempts: int | None = None, wait_s: float | None = None
) -> AdminClient:
    """An admin client on a broker that answers, waiting up to ``wait_s`` (default ``kafka.startup_wait_s``)
    or ``attempts`` tries for it; raises ``Unreachable`` after that, or ``AuthFailed`` at once when the
    broker refuses the credentials or the TLS handshake."""
    errors: list[KafkaError] = []
    admin = AdminClient(admin_config(kafka, error_cb=errors.append))
    patience = kafka.startup_wait_s if wait_s is None else wait_s
    try:
        for attempt in Retrying(
            retry=retry_if_not_exception_type(AuthFailed),
            **_patience(kafka, "the Kafka broker", kafka.bootstrap_servers, patience, attempts),
        ):
            with attempt:
                _tcp_probe(kafka.bootstrap_servers, timeout_s)  # connection refused fails fast
                try:
                    admin.list_topics(timeout=timeout_s)
                except KafkaException:
                    admin.poll(0)  # serves error_cb
                    _raise_auth(kafka, errors)
                    raise
    except RetryError as exc:
        cause = exc.last_attempt.exception()
        raise Unreachable(
            f"Kafka broker at {kafka.bootstrap_servers} is unreachable after {exc.last_attempt.attempt_number} "
            f"attempts ({_reason(cause)}). Is the stack up? Try `fraudstream stack up` or set KAFKA_BOOTSTRAP_SERVERS "
            "(KAFKA_STARTUP_WAIT_S: how long to wait for it)."
        ) from exc
    return admin


def _raise_auth(kafka: KafkaSettings, errors: list[KafkaError]) -> None:
    for err in errors:
        if err.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.SASL_AUTHENTICATION_FAILED):
            what = "TLS handshake" if err.code() == KafkaError._SSL else "authentication"
            raise AuthFailed(
                f"Kafka broker at {kafka.bootstrap_servers}: {what} failed ({kafka.redact(err.str())}). "
                "Check KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD, KAFKA_SECURITY_PROTOCOL and the CA."
            )


def registry_client(kafka: KafkaSettings) -> SchemaRegistryClient:
    """A Schema Registry client (``mock://`` URLs give the in-memory mock, for unit tests)."""
    return SchemaRegistryClient.new_client(kafka.registry_config())


def check_registry(
    kafka: KafkaSettings, *, attempts: int | None = None, wait_s: float | None = None
) -> SchemaRegistryClient:
    """A client on a registry that answers, waiting as ``check_broker`` does; raises ``Unreachable`` after
    that, or ``AuthFailed`` at once on HTTP 401/403."""
    url = redact_url(kafka.schema_registry_url)
    if kafka.schema_registry_url.startswith("mock://"):
        return registry_client(kafka)
    probe = SchemaRegistryClient({**kafka.registry_config(), "max.retries": 0, "timeout": 5})
    try:
        patience = kafka.startup_wait_s if wait_s is None else wait_s
        for attempt in Retrying(
            retry=retry_if_not_exception_type(AuthFailed),
            **_patience(kafka, "the Schema Registry", url, patience, attempts),
        ):
            with attempt:
                try:
                    probe.get_subjects()
                except SchemaRegistryError as exc:
                    if exc.http_status_code in (401, 403):
                        raise AuthFailed(
                            f"Schema Registry at {url}: authentication failed ({_reason(exc)}). "
                            "Check SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO."
                        ) from None
                    raise
    except RetryError as exc:
        cause = exc.last_attempt.exception()
        if isinstance(cause, AuthFailed):
            raise cause from None
        raise Unreachable(
            f"Schema Registry at {url} is unreachable after {exc.last_attempt.attempt_number} attempts "
            f"({kafka.redact(_reason(cause))}). "
            "Is the stack up? Try `fraudstream stack up` or set SCHEMA_REGISTRY_URL."
        ) from exc
    finally:
        probe.close()
    return registry_client(kafka)


def ensure_topics(
    admin: AdminClient,
    topics: Iterable[str],
    *,
    partitions: int,
    replication_factor: int = 1,
    config: Mapping[str, str] | None = None,
    timeout_s: float = 15.0,
) -> list[str]:
    """Create those of ``topics`` that do not exist yet (with topic ``config``); returns the names created.
    ``replication_factor=-1`` takes the broker's default."""
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [t for t in dict.fromkeys(topics) if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=replication_factor, config=dict(config or {}))
         for t in missing],
        operation_timeout=timeout_s,
    )
    created: list[str] = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # a concurrent creator won the race
                raise
    return created


def topic_partitions(admin: AdminClient, topic: str, *, timeout_s: float = 10.0) -> int | None:
    """How many partitions ``topic`` has (None: it does not exist); ``NotAuthorized`` if the ACLs hide it."""
    metadata = admin.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is not None and metadata.error is not None and metadata.error.code() == (
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    ):
        raise NotAuthorized(f"not authorized to access topic {topic!r} (the broker's ACLs refuse this principal)")
    if metadata is None or metadata.error is not None:
        return None
    return len(metadata.partitions)


def end_offsets(
    consumer: Consumer, topic: str, partitions: Iterable[int], *, timeout_s: float = 10.0
) -> dict[int, int]:
    """Each partition's end offset (the end a read-to-end stops at: the high watermark, or the last stable
    offset for a ``read_committed`` consumer). A partition without a leader yet (as right after a topic is
    created or a broker restarts) or a broker not answering is asked again for ``timeout_s``; a refusal
    (not authorized) raises at once (``topology.runtime.partitions.end_offset``)."""
    return {p: end_offset(consumer, (topic, p), timeout_s) for p in partitions}


def not_at_end(consumer: Consumer, topic: str, ends: dict[int, int]) -> dict[int, int]:
    """The partitions of ``ends`` whose position has not reached their end offset yet. Under
    ``read_committed`` the position passes control records too, so it does reach the end."""
    positions = {tp.partition: tp.offset for tp in consumer.position([TopicPartition(topic, p) for p in ends])}
    return {p: end for p, end in ends.items() if end > 0 and positions.get(p, -1) < end}


def _tcp_probe(bootstrap_servers: str, timeout_s: float) -> None:
    """Raise ``OSError`` unless at least one bootstrap address accepts a TCP connection."""
    last: OSError | None = None
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=timeout_s).close()
            return
        except OSError as exc:
            last = exc
        except ValueError:
            last = OSError(f"bad bootstrap address {server!r}")
    raise last or OSError("no bootstrap servers")


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "no answer"
    if isinstance(exc, KafkaException):
        return str(exc.args[0].str())
    if isinstance(exc, SchemaRegistryError):
        return f"HTTP {exc.http_status_code}: {exc.error_message}"
    return f"{type(exc).__name__}: {exc}"

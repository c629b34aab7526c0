"""The alerts consumer's commits after a broker outage: refused ones are not fatal and logged once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from services.alerts.service import AlertService
from topology.runtime.outage import KafkaOutage


class _Consumer:
    def __init__(self, refusals: int) -> None:
        self.refusals = refusals

    async def commit(self, **_kwargs: Any) -> None:
        if self.refusals:
            self.refusals -= 1
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_MEMBER_ID, "Commit failed: Broker: Unknown member"))


class _Msg:
    def topic(self) -> str:
        return "fraud"

    def partition(self) -> int:
        return 1

    def offset(self) -> int:
        return 4


def test_commits_refused_after_an_outage_are_logged_once_and_the_service_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = AlertService.__new__(AlertService)  # only the commit path: no consumer, webhook or metrics
    service.refused_commits = 0
    consumer = _Consumer(refusals=5)

    async def commit_all() -> None:
        for _ in range(7):
            await service._commit(consumer, _Msg())  # type: ignore[arg-type]

    with caplog.at_level(logging.WARNING, logger="services.alerts.service"):
        asyncio.run(commit_all())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "refused (Commit failed: Broker: Unknown member)" in lines[0]
    assert lines[1] == "commits accepted again (5 refused)" and service.refused_commits == 0


def test_a_fatal_commit_error_still_stops_the_service() -> None:
    service = AlertService.__new__(AlertService)
    service.refused_commits = 0

    class Fatal(_Consumer):
        async def commit(self, **_kwargs: Any) -> None:
            raise KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))

    with pytest.raises(KafkaException):
        asyncio.run(service._commit(Fatal(0), _Msg()))  # type: ignore[arg-type]


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _OutageConsumer:
    """An AIOConsumer while the broker goes away and comes back: its ``error_cb`` is librdkafka's only word
    on it (consume returns nothing); a metadata request fails until ``back_at`` polls."""

    def __init__(self, config: dict[str, Any], executor: Any, *, clock: _Clock, stop: asyncio.Event,
                 back_at: int, fatal: bool = False) -> None:  # fmt: skip
        self.error_cb = config["error_cb"]
        self.clock, self.stop, self.back_at, self.fatal = clock, stop, back_at, fatal
        self.polls = 0
        self.metadata_requests = 0

    async def subscribe(self, topics: list[str]) -> None:
        pass

    async def consume(self, num_messages: int, timeout: float) -> list[Any]:
        self.polls += 1
        self.clock.now += 1.0
        if self.polls == 2:
            await self.error_cb(KafkaError(KafkaError._TRANSPORT, "127.0.0.1:9092/1: Disconnected"))
            await self.error_cb(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
            if self.fatal:
                await self.error_cb(KafkaError(KafkaError._FATAL, "fenced", fatal=True))
        if self.polls == 3:
            await self.error_cb(KafkaError(KafkaError._TRANSPORT, "127.0.0.1:9092/bootstrap: Connect failed"))
        if self.polls >= self.back_at + 3:
            self.stop.set()
        return []

    async def list_topics(self, topic: str, timeout: float) -> Any:
        self.metadata_requests += 1
        if self.polls < self.back_at:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata: Broker transport failure"))
        return object()

    async def close(self) -> None:
        pass


def _outage_run(back_at: int, fatal: bool = False) -> tuple[AlertService, list[_OutageConsumer]]:
    from types import SimpleNamespace

    from services.metrics import Metrics

    clock, stop = _Clock(), asyncio.Event()
    made: list[_OutageConsumer] = []

    def consumer(config: dict[str, Any], executor: Any) -> _OutageConsumer:
        made.append(_OutageConsumer(config, executor, clock=clock, stop=stop, back_at=back_at, fatal=fatal))
        return made[-1]

    service = AlertService(
        {"group.id": "g"}, "fraud", lambda v: {}, SimpleNamespace(), None, Metrics("alerts"),  # type: ignore[arg-type]
        make_consumer=consumer, reachable_check_s=0.0,
    )  # fmt: skip
    service.outage = KafkaOutage(logging.getLogger("services.alerts.service"), clock=clock)
    asyncio.run(service.run(stop))
    return service, made


def test_the_alerts_consumer_logs_a_broker_outage_once_when_it_begins_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="services.alerts.service"):
        service, (consumer,) = _outage_run(back_at=8)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "the Kafka broker unreachable (127.0.0.1:9092/1: Disconnected): waiting for it, retrying"
    assert lines[1].startswith("the Kafka broker reachable again after ") and len(lines) == 2, lines
    assert not service.outage.down and consumer.metadata_requests == 8 - 2 + 1  # polls 2..8, then no more


def test_a_fatal_error_from_the_alerts_consumers_error_callback_stops_the_service() -> None:
    with pytest.raises(KafkaException, match="fenced"):
        _outage_run(back_at=8, fatal=True)


def test_a_commit_blocked_by_a_broker_outage_begins_the_outage_while_it_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A synchronous commit blocks through the outage, and with it the error callbacks that would say so."""
    service = AlertService.__new__(AlertService)
    service.refused_commits = 0
    service.commit_patience_s = 0.05
    service.outage = KafkaOutage(logging.getLogger("services.alerts.service"))
    said: list[bool] = []

    class Blocked(_Consumer):
        async def commit(self, **_kwargs: Any) -> None:
            await asyncio.sleep(0.3)  # the coordinator is away
            said.append(service.outage.down)  # the outage was begun before the commit came back

    with caplog.at_level(logging.WARNING, logger="services.alerts.service"):
        asyncio.run(service._commit(Blocked(0), _Msg()))  # type: ignore[arg-type]
    assert said == [True]
    assert [r.getMessage() for r in caplog.records] == [
        "the Kafka broker unreachable (a commit is waiting for the group coordinator): waiting for it, retrying"
    ]

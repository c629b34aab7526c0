"""The alerts consumer's commits after a broker outage: refused ones are not fatal and logged once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from services.alerts.service import AlertService


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

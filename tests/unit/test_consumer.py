"""services.consumer: JSON rendering of decoded Avro records (exact decimals, ISO times, envelope)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from services.consumer import render, to_json


class FakeMessage:
    """The few ``confluent_kafka.Message`` accessors ``render`` uses."""

    def __init__(self, key: bytes | None, headers: list[tuple[str, bytes | None]] | None) -> None:
        self._key = key
        self._headers = headers

    def partition(self) -> int:
        return 3

    def offset(self) -> int:
        return 42

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers


RECORD: dict[str, Any] = {
    "amount": Decimal("1000.10"),
    "tiny": Decimal("0.01"),
    "event_time": datetime(2026, 1, 1, 1, 2, 3, 45000, tzinfo=timezone(timedelta(hours=2))),
    "raw": b"\x00\xff",
    "channel": None,
}


def test_values_print_exactly() -> None:
    line = json.loads(render(FakeMessage(None, None), RECORD, print_key=False, print_headers=False))  # type: ignore[arg-type]
    assert line == {
        "amount": "1000.10",
        "tiny": "0.01",
        "event_time": "2025-12-31T23:02:03.045Z",
        "raw": "00ff",
        "channel": None,
    }


def test_envelope_with_key_and_headers() -> None:
    message = FakeMessage(b"ACC1", [("fraudstream.branch", b"fraud"), ("empty", None)])
    line = json.loads(render(message, {"a": 1}, print_key=True, print_headers=True))  # type: ignore[arg-type]
    assert line == {
        "partition": 3,
        "offset": 42,
        "key": "ACC1",
        "headers": {"fraudstream.branch": "fraud", "empty": None},
        "value": {"a": 1},
    }


def test_unknown_types_are_refused() -> None:
    with pytest.raises(TypeError):
        to_json(object())
    assert to_json(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000Z"

"""The dashboard feed's consumer side (``services.dashboard.feed``)."""

from __future__ import annotations

from typing import Any, cast

from services.dashboard.feed import SeenOffsets
from topology.testing.fakes import Entry, FakeMessage


def _msg(topic: str, partition: int, offset: int) -> Any:
    return cast(Any, FakeMessage(topic, partition, offset, Entry(b"k", b"v", (), 0)))


def test_records_read_again_after_a_rejoin_are_not_shown_twice() -> None:
    seen = SeenOffsets()
    first = [_msg("fraud", 0, o) for o in range(3)] + [_msg("legit", 0, 0)]
    assert [seen.first_time(m) for m in first] == [True] * 4
    # The group forgot the feed (unknown member after a broker outage): its partitions start again at 0.
    again = [_msg("fraud", 0, o) for o in range(5)] + [_msg("fraud", 1, 0)]
    assert [seen.first_time(m) for m in again] == [False, False, False, True, True, True]
    assert seen.skipped == 3

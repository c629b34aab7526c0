"""The event-time skew guard: a record dated too far ahead is dead-lettered and moves no stream time."""

from __future__ import annotations

from datetime import timedelta

import pytest

from schemas import schema_text
from topology.batch.decode import ColumnarDecoder
from topology.plan.dsl import sliding
from topology.plan.model import Topology
from topology.processor import TopologyProcessor
from topology.processor.timeguard import EventTimeGuard, EventTimeSkew
from topology.testing.driver import TopologyTestDriver

from .topology_support import T0, TOPIC, TX, TX_KEY, Serde, headers, serde, stream, tx

NOW_S = (T0 + timedelta(hours=1)).timestamp()  # the wall clock of these tests


@pytest.fixture(scope="module")
def s() -> Serde:
    return serde("timeguard")


def velocity() -> Topology:
    busy = TX.rule("busy", TX.count(by="source_account", window=sliding("10m", grace="1m")) >= 2)
    return stream(TOPIC, dlq="dlq", name="app").split().branch(busy, to="fraud", name="fraud").default_branch(
        to="legit", name="legit"
    )


def guarded(s: Serde, guard: EventTimeGuard | None) -> TopologyTestDriver[TopologyProcessor]:
    columnar = ColumnarDecoder(s.registry, schema_text("transaction"))
    processor = TopologyProcessor(velocity(), s.decoder.decode, version="v", columnar=columnar, time_guard=guard)
    return TopologyTestDriver(processor, encoder=s.encoder.encode, decoder=s.decoder.decode, key_fields=TX_KEY)


def ids(s: Serde, d: TopologyTestDriver[TopologyProcessor], topic: str) -> list[str]:
    return [s.decoder.decode(r.value)["transaction_id"] for r in d.records(topic)]


def test_without_the_guard_one_far_future_event_silences_the_window_for_its_partition(s: Serde) -> None:
    d = guarded(s, None)
    d.pipe(tx(1, minutes=0))
    d.pipe(tx(2, minutes=365 * 24 * 60))  # a year ahead: stream time jumps
    d.pipe(tx(3, minutes=1))
    d.pipe(tx(4, minutes=2))  # would be the second in 10 minutes: but late now
    assert ids(s, d, "fraud") == []
    assert d.processor.late_records == 2 and d.processor.late_by_store == {"busy": 2}


def test_an_event_too_far_ahead_of_the_wall_clock_is_dead_lettered_and_moves_no_stream_time(s: Serde) -> None:
    d = guarded(s, EventTimeGuard(max_wall_lead_ms=24 * 3600_000, clock=lambda: NOW_S))
    d.pipe(tx(1, minutes=0))
    d.pipe(tx(2, minutes=365 * 24 * 60))
    d.pipe(tx(3, minutes=1))
    d.pipe(tx(4, minutes=2))
    (dead,) = d.records("dlq")
    h = headers(dead)
    assert h["error.reason"] == b"event-time-skew" and h["error.class"] == b"EventTimeSkew"
    assert b"ahead of the wall clock (at most 24 h)" in h["error.message"]
    assert b"2025-03-01T12:00:00.000Z" in h["error.message"]
    assert ids(s, d, "fraud") == ["tx-3", "tx-4"]
    assert d.processor.late_records == 0


def test_an_event_too_far_ahead_of_its_partitions_stream_time_is_dead_lettered(s: Serde) -> None:
    d = guarded(s, EventTimeGuard(max_stream_lead_ms=7 * 24 * 3600_000))
    d.pipe(tx(1, minutes=0))
    d.pipe(tx(2, minutes=6 * 24 * 60))  # 6 days on: allowed, moves stream time
    d.pipe(tx(3, minutes=20 * 24 * 60))  # 14 days after that: refused
    assert [headers(r)["error.reason"] for r in d.records("dlq")] == [b"event-time-skew"]
    assert b"ahead of its partition's stream time" in headers(d.records("dlq")[0])["error.message"]
    assert ids(s, d, "legit") == ["tx-1", "tx-2"]


def test_the_guards_limits_are_inclusive_and_off_when_none() -> None:
    g = EventTimeGuard(max_wall_lead_ms=1000, max_stream_lead_ms=500, clock=lambda: 10.0)
    g.check(11_000, 10_500)  # exactly at both limits
    with pytest.raises(EventTimeSkew):
        g.check(11_001)
    with pytest.raises(EventTimeSkew):
        g.check(10_000, 9_499)
    EventTimeGuard().check(10**15, 0)

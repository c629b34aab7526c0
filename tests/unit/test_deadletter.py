"""The dead-letter contract holds on every path that gives up on a record.

Paths: an undecodable value, an unevaluable rule, an event dated too far ahead, an alert that cannot be
encoded (the processor), an input too large to forward (reduced until it fits),
and a record the processor keeps failing on (the runtime, after its retries). The alerts service's
path is checked on real Kafka in ``tests/integration/test_alerts.py``. Each dead letter keeps the
original bytes and headers, then carries every ``CONTRACT`` header once, naming where it was read.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.detector import FRAUD_TOPOLOGY, load_topology
from services.detector.alerts import FraudAlerts
from topology.deadletter import CONTRACT, ERROR_REASON, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC
from topology.processor import TopologyProcessor
from topology.records import OutRecord, ProcessorBase, RawRecord
from topology.serde.decoder import EncodeError
from topology.testing.driver import TopologyTestDriver, Written, driver_settings

from .topology_support import TOPIC, TX, TX_KEY, Serde, driver, serde, stream, tx

ORIGINAL = (("trace", b"t-1"),)


@pytest.fixture
def s() -> Serde:
    return serde("deadletter")


def assert_contract(dead: Written, source: RawRecord, reason: str) -> None:
    """``dead``, as written to the DLQ topic, is the dead letter of ``source`` for ``reason``."""
    assert (dead.key, dead.value) == (source.key, source.value)
    names = [k for k, _ in dead.headers]
    assert tuple(dead.headers[: len(ORIGINAL)]) == ORIGINAL  # the original headers first, untouched
    for name in CONTRACT:
        assert names.count(name) == 1, f"{name} appears {names.count(name)} times"
    h = dict(dead.headers)
    assert h[ERROR_REASON] == reason.encode()
    assert (h[SOURCE_TOPIC], h[SOURCE_PARTITION], h[SOURCE_OFFSET]) == (
        source.topic.encode(), str(source.partition).encode(), str(source.offset).encode(),
    )  # fmt: skip


def _dead_of_piped(d: TopologyTestDriver[Any], value: Any, dlq: str) -> tuple[Written, RawRecord]:
    d.pipe(value, key=b"k", headers=ORIGINAL)
    partition, offset, entry = d.cluster.records(TOPIC, committed_only=False)[-1]
    (dead,) = d.records(dlq)
    return dead, RawRecord(TOPIC, partition, offset, entry.key, entry.value, entry.timestamp_ms)


def test_an_undecodable_value(s: Serde) -> None:
    d = driver(stream(TOPIC, dlq="dlq").split().branch(TX.rule("big", "amount >= 900"), to="fraud")
               .default_branch(to="legit"), s)  # fmt: skip
    dead, source = _dead_of_piped(d, b"junk", "dlq")
    assert_contract(dead, source, "not-wire-format")


def test_an_unevaluable_rule(s: Serde) -> None:
    d = driver(stream(TOPIC, dlq="dlq").split().branch(TX.rule("ratio", "amount / (amount - 100) > 2"), to="fraud")
               .default_branch(to="legit"), s)  # fmt: skip
    dead, source = _dead_of_piped(d, tx(1, "100"), "dlq")
    assert_contract(dead, source, "evaluation")


def test_an_event_dated_too_far_ahead(s: Serde) -> None:
    from schemas import schema_text
    from topology.batch.decode import ColumnarDecoder
    from topology.plan.dsl import sliding
    from topology.processor.timeguard import EventTimeGuard

    busy = TX.rule("busy", TX.count(by="source_account", window=sliding("1h")) >= 3)
    topology = stream(TOPIC, dlq="dlq").split().branch(busy, to="fraud").default_branch(to="legit")
    guard = EventTimeGuard(max_wall_lead_ms=0, clock=lambda: 0.0)  # every event is ahead of 1970
    processor = TopologyProcessor(
        topology, s.decoder.decode, version="v", columnar=ColumnarDecoder(s.registry, schema_text("transaction")),
        time_guard=guard,
    )  # fmt: skip
    d = TopologyTestDriver(processor, encoder=s.encoder.encode, decoder=s.decoder.decode, key_fields=TX_KEY)
    dead, source = _dead_of_piped(d, tx(1), "dlq")
    assert_contract(dead, source, "event-time-skew")


def test_an_alert_that_cannot_be_encoded(s: Serde) -> None:
    def refuse(alert: Any) -> bytes:
        raise EncodeError("does not fit", "amount")

    topology = load_topology(FRAUD_TOPOLOGY)
    p = TopologyProcessor(topology, s.decoder.decode, version="v", alerts=FraudAlerts(refuse))
    d = TopologyTestDriver(p, encoder=s.encoder.encode, decoder=s.decoder.decode, key_fields=TX_KEY)
    dead, source = _dead_of_piped(d, tx(1, "950.00", channel="online"), topology.dlq)
    assert_contract(dead, source, "alert")


class _Failing(ProcessorBase):
    """Fails on every record: an unexpected error, not bad data."""

    source_topics = (TOPIC,)
    sink_topics = ("out",)
    dlq_topic = "dlq"

    def process(self, record: RawRecord) -> list[OutRecord]:
        raise RuntimeError("bug")


def test_a_record_the_processor_keeps_failing_on() -> None:
    d = TopologyTestDriver(_Failing(), settings=driver_settings(max_retries=2), key_fields=TX_KEY)
    dead, source = _dead_of_piped(d, b"payload", "dlq")
    assert_contract(dead, source, "retries-exhausted")
    assert dict(dead.headers)["error.attempts"] == b"3"


class _Echo(ProcessorBase):
    """Forwards each record with its value and one more header (as a branch record does)."""

    source_topics = (TOPIC,)
    sink_topics = ("out",)
    dlq_topic = "dlq"

    def process(self, record: RawRecord) -> list[OutRecord]:
        return [OutRecord("out", record.key, record.value, (*record.headers, ("branch", b"legit")))]


@pytest.mark.parametrize(
    ("value", "key", "headers", "omitted"),
    [
        (b"v" * 999_990, b"k", ORIGINAL, b"value"),  # near the 1,000,000-byte limit: one more header is too much
        (b"v" * 10, b"k", (("big", b"h" * 1_000_100),), b"value,headers"),  # the original headers are too large
        (b"v" * 10, b"k" * 1_000_100, ORIGINAL, b"value,headers,key"),  # and the key
    ],
)
def test_an_input_too_large_to_forward_is_dead_lettered_reduced_until_it_fits(
    value: bytes, key: bytes, headers: tuple[tuple[str, bytes], ...], omitted: bytes
) -> None:
    d = TopologyTestDriver(_Echo(), settings=driver_settings(max_retries=2))
    d.pipe(b"small", key=b"a")
    d.pipe(value, key=key, headers=headers)  # the broker took it (its limit can be above the producer's)
    d.pipe(b"after", key=b"b")
    assert [r.value for r in d.records("out")] == [b"small", b"after"]  # nothing lost, nothing stuck
    (dead,) = d.records("dlq")
    h = dict(dead.headers)
    assert dead.value is None and h["error.omitted"] == omitted
    assert h["error.value.bytes"] == str(len(value)).encode()
    assert (dead.key is None) == (b"key" in omitted)
    assert (tuple(dead.headers[: len(headers)]) == headers) == (b"headers" not in omitted)
    assert h["error.reason"] == b"retries-exhausted" and h["error.attempts"] == b"3"
    assert b"MSG_SIZE_TOO_LARGE" in h["error.message"]
    assert h["source.offset"] == b"1"
    names = [k for k, _ in dead.headers]
    assert all(names.count(n) == 1 for n in CONTRACT)

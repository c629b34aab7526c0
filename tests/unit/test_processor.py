"""The processor through the test driver: routing, first match wins, DLQ, headers, original bytes."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from topology.plan.model import Topology
from topology.processor import TopologyProcessor
from topology.records import Kind, RawRecord
from topology.serde.decoder import wire_header

from .topology_support import TOPIC, TX, Serde, driver, headers, serde, stream, tx


@pytest.fixture(scope="module")
def s() -> Serde:
    return serde("processor")


def simple() -> Topology:
    return (
        stream(TOPIC, dlq="dlq", name="app")
        .split()
        .branch(TX.rule("large-amount", "amount >= 900", version=3), to="fraud", name="fraud")
        .branch("country == 'XX'", to="suspicious", name="odd")
        .default_branch(to="legit", name="legit")
    )


def test_routes_by_first_matching_branch_with_original_bytes_and_headers(s: Serde) -> None:
    d = driver(simple(), s)
    small, big, odd, both = tx(1, "899.99"), tx(2, "900.00"), tx(3, "5.00", country="XX"), tx(4, "950", country="XX")
    for rec in (small, big, odd, both):
        d.pipe(rec, headers=(("trace", b"abc"),))
    src = d.records(TOPIC)
    fraud, legit, sus = d.read("fraud"), d.read("legit"), d.read("suspicious")
    assert [s.decoder.decode(w.value)["transaction_id"] for w in fraud] == ["tx-2", "tx-4"]  # first match wins
    assert [s.decoder.decode(w.value)["transaction_id"] for w in sus] == ["tx-3"]
    assert [s.decoder.decode(w.value)["transaction_id"] for w in legit] == ["tx-1"]
    # the very bytes that came in, and the original key
    assert fraud[0].value == src[1].value and fraud[0].key == b"acc-1"
    assert legit[0].value == src[0].value
    assert headers(fraud[0]) == {
        "trace": b"abc",
        "fraudstream.branch": b"fraud",
        "fraudstream.rules": b"large-amount@3",
        "fraudstream.detector.version": b"v-test",
    }
    assert headers(legit[0])["fraudstream.rules"] == b""
    assert headers(legit[0])["fraudstream.branch"] == b"legit"
    assert headers(sus[0])["fraudstream.rules"] == b"odd@1"
    assert fraud[0].timestamp_ms == src[1].timestamp_ms
    assert d.records("dlq") == []


def test_each_predicate_is_evaluated_once_and_later_branches_not_at_all(s: Serde) -> None:
    calls: Counter[str] = Counter()

    def first(r: Any) -> bool:
        calls["first"] += 1
        return bool(r["amount"] >= Decimal(900))

    def second(r: Any) -> bool:
        calls["second"] += 1
        return True

    t = stream(TOPIC, dlq="dlq").split().branch(first, to="a").branch(second, to="b").default_branch(to="c")
    d = driver(t, s)
    d.pipe(tx(1, "1000"))
    assert calls == {"first": 1}
    d.pipe(tx(2, "1"))
    assert calls == {"first": 2, "second": 1}
    assert len(d.records("a")) == 1 and len(d.records("b")) == 1 and d.records("c") == []


def test_every_rule_of_the_deciding_branch_is_named(s: Serde) -> None:
    t = (
        stream(TOPIC, dlq="dlq")
        .split()
        .branch([TX.rule("big", "amount >= 900"), TX.rule("eur", "currency == 'EUR'")], to="fraud")
        .default_branch(to="legit")
    )
    d = driver(t, s)
    d.pipe(tx(1, "1000"))
    d.pipe(tx(2, "1", currency="USD"))
    d.pipe(tx(3, "1"))
    assert [headers(w)["fraudstream.rules"] for w in d.records("fraud")] == [b"big@1,eur@1", b"eur@1"]


def _dlq_reason(d: Any) -> list[tuple[str, str]]:
    return [(headers(w)["error.class"].decode(), headers(w)["error.reason"].decode()) for w in d.records("dlq")]


def test_undecodable_records_go_to_the_dlq_with_their_bytes_and_coordinates(s: Serde) -> None:
    d = driver(simple(), s, partitions=3)
    good = s.encoder.encode(tx(1, "10"))
    garbage = b"\xffnot avro at all"
    unknown_id = wire_header(987654) + good[5:]
    truncated = good[:-3]
    bad_avro = wire_header(s.encoder.schema_id) + b"\x0b"  # odd zigzag length for a string
    for i, value in enumerate([garbage, b"\x01" + good[1:], unknown_id, truncated, b"", None, bad_avro]):
        d.pipe(value, key=f"k{i}", headers=(("h", b"1"),))
    d.pipe(good, key="acc-1")
    dead = d.records("dlq")
    assert _dlq_reason(d) == [
        ("DecodeError", "not-wire-format"),
        ("DecodeError", "not-wire-format"),
        ("DecodeError", "unknown-schema"),
        ("DecodeError", "truncated"),
        ("DecodeError", "not-wire-format"),
        ("DecodeError", "null-value"),
        ("DecodeError", "invalid-avro"),
    ]
    src = d.records(TOPIC)
    for w, original in zip(dead, src, strict=False):
        h = headers(w)
        assert (w.key, w.value) == (original.key, original.value)
        assert h["h"] == b"1"
        assert h["source.topic"] == TOPIC.encode()
        assert h["source.partition"] == str(original.partition).encode()
        assert h["source.offset"] == str(original.offset).encode()
        assert h["error.message"]
    assert b"987654" in headers(dead[2])["error.message"]
    assert len(d.records("legit")) == 1  # the good record after the bad ones is routed


def test_unevaluable_record_goes_to_the_dlq_naming_the_rule(s: Serde) -> None:
    t = (
        stream(TOPIC, dlq="dlq")
        .split()
        .branch(TX.rule("ratio", "amount / (amount - 100) > 2"), to="fraud")
        .branch(TX.rule("chan", "channel < 'm'"), to="odd")
        .default_branch(to="legit")
    )
    d = driver(t, s)
    d.pipe(tx(1, "100"))  # division by zero
    d.pipe(tx(2, "5", channel=None))  # null in an ordering comparison
    d.pipe(tx(3, "5", channel="card"))
    msgs = [headers(w)["error.message"].decode() for w in d.records("dlq")]
    assert _dlq_reason(d) == [("EvaluationError", "evaluation")] * 2
    assert msgs[0].startswith("rule ratio@1: ") and "DivisionByZero" in msgs[0]
    assert msgs[1].startswith("rule chan@1: TypeError")
    assert len(d.records("odd")) == 1


def test_processor_contract_attributes(s: Serde) -> None:
    p = TopologyProcessor(simple(), s.decoder.decode, version="1.2.3")
    assert p.source_topics == (TOPIC,)
    assert p.sink_topics == ("fraud", "suspicious", "legit", "dlq")
    assert p.changelog_topics == () and p.repartition_topics == ()
    out = p.process(RawRecord(TOPIC, 2, 41, b"k", b"junk", 1234))
    assert len(out) == 1 and out[0].topic == "dlq" and out[0].kind is Kind.DEAD_LETTER
    assert out[0].labels == ("not-wire-format",)
    assert headers(out[0])["fraudstream.detector.version"] == b"1.2.3"
    assert (out[0].partition, out[0].timestamp_ms) == (None, 1234)


def test_update_switches_rules_at_run_time_and_keeps_unchanged_state(s: Serde) -> None:
    from dataclasses import replace

    from topology.plan.dsl import sliding

    def build(threshold: str, version: int) -> Topology:
        return (
            stream(TOPIC, dlq="dlq", name="app")
            .split()
            .branch(
                [
                    TX.rule("big", f"amount >= {threshold}", version=version),
                    TX.rule("busy", TX.count(by="source_account", window=sliding("1h")) >= 3),
                ],
                to="fraud",
            )
            .default_branch(to="legit")
        )

    d = driver(build("900", 1), s)
    d.pipe(tx(1, "500"))
    d.pipe(tx(2, "500", minutes=1))
    d.processor.update(build("400", 2))  # rule changed: new version, same "busy" aggregate
    d.pipe(tx(3, "100", minutes=2))
    d.pipe(tx(4, "450", source="acc-2", minutes=3))
    assert [headers(w)["fraudstream.rules"] for w in d.records("fraud")] == [b"busy@1", b"big@2"]
    with pytest.raises(ValueError, match="repartition"):
        t = build("400", 3)
        extra = TX.rule("by-target", TX.count(by="target_account", window=sliding("1h")) >= 3)
        d.processor.update(replace(t, branches=(replace(t.branches[0], rules=(*t.branches[0].rules, extra)),)))

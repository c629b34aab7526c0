"""The processor's dead letters on their own: the error named, the original record named (also through a
repartition topic), the version header (``topology.processor.rejects``)."""

from __future__ import annotations

from topology.processor.rejects import DeadLetters, EvaluationError
from topology.processor.timeguard import EventTimeSkew
from topology.records import H_AGGS, H_KEY, H_ORIGIN, H_VERSION, Kind, RawRecord
from topology.serde.decoder import DecodeError

from .topology_support import TX, headers

VERSION = (H_VERSION, b"v1")
DLQ = DeadLetters("dlq", ("app-repartition",), (DecodeError,), VERSION)


def test_a_source_record_is_named_by_its_own_coordinates() -> None:
    record = RawRecord("tx", 2, 7, b"k", b"v", 123, (("h", b"1"),))
    out = DLQ.of(record, DecodeError("not-wire-format", "bad magic byte"), "not-wire-format")
    assert (out.topic, out.key, out.value, out.timestamp_ms, out.kind) == ("dlq", b"k", b"v", 123, Kind.DEAD_LETTER)
    assert out.headers == (
        ("h", b"1"), ("error.class", b"DecodeError"), ("error.reason", b"not-wire-format"),
        ("error.message", b"bad magic byte"), ("source.topic", b"tx"), ("source.partition", b"2"),
        ("source.offset", b"7"), VERSION,
    )  # fmt: skip


def test_a_repartitioned_record_is_named_by_the_original_record() -> None:
    carried = ((H_KEY, b"orig-key"), (H_AGGS, b"{}"), (H_ORIGIN, b"tx:1:42"), ("h", b"1"))
    record = RawRecord("app-repartition", 0, 3, b"group-key", b"v", 5, carried)
    out = DLQ.of(record, KeyError("amount"), "evaluation")
    h = headers(out)
    assert out.key == b"orig-key" and out.value == b"v"
    assert (h["source.topic"], h["source.partition"], h["source.offset"]) == (b"tx", b"1", b"42")
    assert not {H_KEY, H_AGGS, H_ORIGIN} & set(h) and h["h"] == b"1"


def test_errors_other_than_bad_input_are_evaluation_errors_naming_the_rule() -> None:
    record = RawRecord("tx", 0, 0, None, b"v", 0)
    rule = TX.rule("big", "amount >= 1", version=3)
    h = headers(DLQ.of(record, TypeError("no order"), "evaluation", rule))
    assert h["error.class"] == EvaluationError.__name__.encode()
    assert h["error.message"] == b"rule big@3: TypeError: no order"
    skew = headers(DLQ.of(record, EventTimeSkew(""), EventTimeSkew.reason))
    assert (skew["error.class"], skew["error.reason"], skew["error.message"]) == (
        b"EventTimeSkew", b"event-time-skew", b"EventTimeSkew",
    )  # fmt: skip
    assert headers(DLQ.of(RawRecord("other", 0, 0, None, None, 0, ((H_ORIGIN, b"x:0:0"),)), ValueError(), "r"))[
        "source.topic"
    ] == b"other"  # the origin header only counts on a repartition topic

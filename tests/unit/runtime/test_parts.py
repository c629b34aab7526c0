"""Pure parts of the exactly-once runtime: configs, errors, backoff, dead letters, stats."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from topology.records import OutRecord, ProcessorBase, RawRecord, header
from topology.runtime import (
    ExactlyOnceRuntime,
    FencedError,
    RuntimeSettings,
    RuntimeStats,
    backoff_seconds,
    consumer_config,
    dead_letter,
    is_fenced,
    kafka_error,
    producer_config,
    quantile,
)


class _Proc(ProcessorBase):
    source_topics = ("in",)
    sink_topics = ("out",)

    def process(self, record: RawRecord) -> list[OutRecord]:
        return []


def _settings(**extra: object) -> RuntimeSettings:
    return RuntimeSettings("127.0.0.1:1", "app", "one", **extra)  # type: ignore[arg-type]


def test_transactional_id_is_stable_per_instance() -> None:
    assert _settings().transactional_id == "app-one"
    assert producer_config(_settings())["transactional.id"] == "app-one"


def test_consumer_is_read_committed_manual_commit_cooperative() -> None:
    c = consumer_config(_settings(group_instance_id="app-one", consumer_config={"fetch.wait.max.ms": 7}))
    assert c["isolation.level"] == "read_committed"
    assert c["enable.auto.commit"] is False
    assert c["group.id"] == "app"
    assert c["partition.assignment.strategy"] == "cooperative-sticky"
    assert c["group.instance.id"] == "app-one"
    assert c["fetch.wait.max.ms"] == 7  # overrides win
    assert "group.instance.id" not in consumer_config(_settings())


def test_quantile_is_nearest_rank() -> None:
    assert quantile([], 0.5) is None
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert quantile([float(i) for i in range(1, 101)], 0.99) == 99.0
    assert quantile([5.0], 0.99) == 5.0


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_seconds(n, 100, 500) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.5]


def test_dead_letter_keeps_bytes_and_names_the_source() -> None:
    raw = RawRecord("in", 2, 41, b"k", b"\x00bad", 5, (("trace", b"t1"),))
    out = dead_letter(raw, "dlq", ValueError("nope"), 4)
    assert (out.topic, out.key, out.value) == ("dlq", b"k", b"\x00bad")
    h = dict(out.headers)
    assert h["trace"] == b"t1"
    assert h["error.class"] == b"ValueError" and h["error.message"] == b"nope"
    assert (h["source.topic"], h["source.partition"], h["source.offset"]) == (b"in", b"2", b"41")
    assert h["error.attempts"] == b"4" and h["error.reason"] == b"retries-exhausted"
    assert header(out.headers, "error.class") == b"ValueError"
    assert header(out.headers, "absent") is None


def test_fencing_errors_are_recognised() -> None:
    assert is_fenced(KafkaError(KafkaError._FENCED))
    assert is_fenced(KafkaError(KafkaError.PRODUCER_FENCED))
    assert not is_fenced(KafkaError(KafkaError.INVALID_TXN_STATE))
    err = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    assert kafka_error(KafkaException(err)) is err
    assert kafka_error(KafkaException("text only")).fatal()


def test_fenced_error_exit_code_differs_from_other_fatal_errors() -> None:
    assert FencedError.exit_code == 3
    assert issubclass(FencedError, Exception)


def test_dead_letter_policy_needs_a_topic() -> None:
    with pytest.raises(ValueError, match="dlq_topic"):
        ExactlyOnceRuntime(_Proc(), _settings())
    ExactlyOnceRuntime(_Proc(), _settings(on_error="fail"))  # no DLQ needed
    runtime = ExactlyOnceRuntime(_Proc(), _settings(dlq_topic="dlq"))
    assert runtime.transactional_id == "app-one"


def test_stats_commit_latency_in_ms() -> None:
    stats = RuntimeStats()
    assert stats.commit_latency_ms(0.5) is None
    stats.commit_seconds.extend([0.010, 0.020, 0.030])
    assert stats.commit_latency_ms(0.5) == pytest.approx(20.0)


def test_the_fast_raw_record_constructor_builds_the_same_frozen_record() -> None:
    from topology.runtime.batch import _record
    from topology.testing.fakes import Entry, FakeMessage

    args = ("t", 3, 42, b"k", b"v", 1_700_000_000_000, (("h", b"1"),))
    message = FakeMessage("t", 3, 42, Entry(b"k", b"v", (("h", b"1"),), 1_700_000_000_000))
    fast = _record(message, "t", 3, 42, 1_700_000_000_000)
    assert fast == RawRecord(*args) and hash(fast) == hash(RawRecord(*args))
    with pytest.raises(AttributeError):
        fast.offset = 1  # type: ignore[misc]

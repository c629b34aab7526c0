"""Records refused at commit (a sink topic's max.message.bytes): the runtime finds the record by halving its
transactions, retries it, dead-letters it, and the records around it are decided once (fake clients)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from topology.records import OutRecord, ProcessorBase, RawRecord
from topology.runtime import FatalRuntimeError
from topology.testing.driver import TopologyTestDriver, driver_settings

SOURCE = "in"
# 8 records. As with librdkafka, once the broker refused record 5 the transaction takes no more records (the
# produce of 6 fails with _STATE), so the commit of [0..5] is refused; then [0..2] commits, [3..5] is refused,
# [3] commits, [4, 5] is refused, [4] commits; then [5] (6 failing behind it) until it has failed
# max_retries + 1 (3) times; its dead letter commits.
ABORTS = 3 + 3


class _Echo(ProcessorBase):
    """Forwards each record's value to ``out``."""

    source_topics = (SOURCE,)
    sink_topics = ("out",)
    dlq_topic = "dlq"

    def process(self, record: RawRecord) -> list[OutRecord]:
        return [OutRecord("out", record.key, record.value)]


def _driver(out_limit: int, dlq_limit: int | None = None) -> TopologyTestDriver[_Echo]:
    d = TopologyTestDriver(_Echo(), settings=driver_settings(max_retries=2), commit_every=8)
    d.cluster.create("out")
    d.cluster.create("dlq")
    d.cluster.max_message_bytes["out"] = out_limit
    if dlq_limit is not None:
        d.cluster.max_message_bytes["dlq"] = dlq_limit
    return d


def test_a_record_a_sink_refuses_at_commit_is_found_and_dead_lettered_and_nothing_else_moves() -> None:
    d = _driver(out_limit=100)
    values = [f"small-{i}".encode() for i in range(8)]
    values[5] = b"B" * 500  # larger than out's max.message.bytes: only the commit fails
    for i, v in enumerate(values):
        d.pipe(v, key=f"k{i}".encode())
    assert [r.value for r in d.records("out")] == [v for i, v in enumerate(values) if i != 5]
    (dead,) = d.records("dlq")
    h = dict(dead.headers)
    assert dead.value == values[5] and h["source.offset"] == b"5" and h["error.reason"] == b"retries-exhausted"
    assert b"MSG_SIZE_TOO_LARGE" in h["error.message"]
    rt = d.runtime
    assert rt.refusals.streak == 0
    assert rt.stats.transactions_aborted == ABORTS
    limit = rt.refusals.limit
    assert limit is not None
    for i in range(3):  # each commit doubles the limit back towards max_batch
        d.pipe(b"more", key=f"m{i}".encode())
    d.commit()
    assert rt.refusals.limit is None or rt.refusals.limit > limit


def test_a_dead_letter_refused_too_is_written_without_its_value() -> None:
    d = _driver(out_limit=100, dlq_limit=400)
    d.pipe(b"ok", key=b"a")
    d.pipe(b"B" * 500, key=b"b")
    for i in range(6):
        d.pipe(b"ok", key=f"c{i}".encode())
    assert len(d.records("out")) == 7
    (dead,) = d.records("dlq")
    h = dict(dead.headers)
    assert dead.value is None and h["error.omitted"] == b"value" and h["error.value.bytes"] == b"500"


def test_refusals_in_a_row_stop_the_runtime_with_the_last_error() -> None:
    from topology.runtime.failures import Failures, Refusals

    settings = driver_settings()
    refusals = Refusals(settings, Failures(settings), max_refusals=3)
    err = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "Broker: Unknown topic or partition", txn_requires_abort=True)
    for _ in range(3):
        refusals.refused(10, {("in", 0): 0}, err)  # not a per-record error: no bisecting, only counted
    assert refusals.limit is None
    with pytest.raises(FatalRuntimeError, match="refused 3 commits in a row; the last: UNKNOWN_TOPIC_OR_PART"):
        refusals.refused(10, {("in", 0): 0}, err)


def test_a_refusal_found_while_flushing_state_at_commit_is_handled_as_a_refusal() -> None:
    """A stateful processor writes its changelog in ``commit``; after the broker refused a record of the
    transaction, those produces fail with _STATE, which must lead to the refusal, not stop the runtime."""
    from tests.unit.runtime.support import Counter, cluster, drain, put, runtime, values

    c = cluster(1)
    for t in ("out", "dlq", "counts-changelog"):
        c.create(t)
    c.max_message_bytes["out"] = 100
    put(c, (0, b"a", b"x"), (0, b"K" * 200, b"x"), (0, b"b", b"x"))  # the second one's output is too large
    rt = runtime(c, Counter(), max_retries=1)
    rt.open()
    drain(rt, steps=60)
    assert values(c, "out") == [b"a=1", b"b=1"]
    (dead,) = c.records("dlq")
    assert dict(dead[2].headers)["source.offset"] == b"1"

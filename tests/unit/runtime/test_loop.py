"""The runtime's processing errors, dead letters, rewind, revoke, lost and restore logic, over fake clients."""

from __future__ import annotations

import pytest

from tests.unit.runtime.support import Counter, cluster, drain, put, runtime, values
from topology.runtime import ExactlyOnceRuntime, FatalRuntimeError
from topology.testing.fakes import Entry, FakeConsumer, _Txn


def test_a_processing_error_aborts_restores_state_without_replay_and_retries() -> None:
    c = cluster(1)
    put(c, (0, b"a", b"x"))
    p = Counter(boom_times=1)
    rt = runtime(c, p)
    rt.open()
    drain(rt)
    put(c, (0, b"a", b"x"), (0, b"a", b"boom"), (0, b"a", b"x"))
    drain(rt)
    # The aborted attempt's a=2 is rolled back in memory, not rebuilt from the changelog.
    assert p.restored == []
    assert "aborted" in p.calls
    assert values(c, "out") == [b"a=1", b"a=2", b"a=3", b"a=4"]
    assert [e.value for _, _, e in c.records("out", committed_only=False)].count(b"a=2") == 2
    assert rt.stats.transactions_aborted == 1 and p.counts[("in", 0)][b"a"] == 4


def test_a_record_failing_every_retry_is_dead_lettered_with_the_reason() -> None:
    c = cluster(1)
    put(c, (0, b"k", b"boom"), (0, b"k", b"x"))
    p = Counter(boom_times=100)
    rt = runtime(c, p, max_retries=2)
    rt.open()
    drain(rt)
    (dead,) = c.records("dlq")
    headers = dict(dead[2].headers)
    assert headers["error.class"] == b"ValueError" and headers["error.reason"] == b"retries-exhausted"
    assert headers["error.attempts"] == b"3" and headers["source.offset"] == b"0"
    assert values(c, "out") == [b"k=1"]
    assert rt.stats.dead_letters == 1


def test_on_error_fail_stops_without_committing() -> None:
    c = cluster(1)
    put(c, (0, b"k", b"boom"))
    rt = runtime(c, Counter(boom_times=100), max_retries=1, on_error="fail")
    rt.open()
    with pytest.raises(FatalRuntimeError, match="giving up"):
        drain(rt)
    assert values(c, "out") == [] and c.group_offsets.get("app", {}) == {}


def test_revoke_commits_the_open_transaction_and_checkpoints_before_giving_up() -> None:
    c = cluster(2)
    put(c, (0, b"a", b"x"), (1, b"b", b"x"))
    p = Counter()
    rt = runtime(c, p)
    rt.open()
    rt.step()  # assigned: paused until restored
    rt.step()  # restored (nothing to replay), resumed, processed
    consumer = c_consumer(rt)
    consumer.revoke([("in", 1)])
    assert sorted(values(c, "out")) == [b"a=1", b"b=1"]  # committed in on_revoke
    assert p.checkpoints and ("counts-changelog", 1) in p.checkpoints[-1]
    assert ("in", 1) not in p.counts
    put(c, (1, b"b", b"x"))
    drain(rt)
    assert sorted(values(c, "out")) == [b"a=1", b"b=1"]  # no longer ours


def test_lost_aborts_and_rewinds_the_partitions_still_owned() -> None:
    c = cluster(2)
    put(c, (0, b"a", b"x"), (1, b"b", b"x"))
    p = Counter()
    rt = runtime(c, p)
    rt.open()
    rt.step()  # assigned: paused until restored
    rt.step()  # restored (nothing to replay), resumed, processed
    c_consumer(rt).lose([("in", 1)])
    assert values(c, "out") == [] and p.calls[-2:] == ["aborted", "revoked"]
    drain(rt)
    assert values(c, "out") == [b"a=1"]  # partition 0 read again; partition 1 is gone
    assert c.group_offsets["app"] == {("in", 0): 1}


def test_restore_replays_committed_changelog_only_and_pauses_until_done() -> None:
    c = cluster(1)
    put(c, (0, b"a", b"x"), (0, b"a", b"x"))
    first = runtime(c, Counter())
    first.open()
    drain(first)
    first.close()
    put(c, (0, b"a", b"x"))
    # An aborted changelog write (a crashed owner's) must not be restored.
    c.create("counts-changelog")
    c.append(("counts-changelog", 0), Entry(b"a", b"99", (), 0, txn=_aborted()))
    p = Counter()
    second = runtime(c, p, restore_step_s=5.0)
    second.open()
    drain(second)
    assert p.restored == [0]  # the committed record; the aborted one and its marker skipped
    assert values(c, "out") == [b"a=1", b"a=2", b"a=3"]


def test_restore_starts_at_the_processor_checkpoint() -> None:
    c = cluster(1)
    put(c, (0, b"a", b"x"))
    first = runtime(c, Counter())
    first.open()
    drain(first)
    put(c, (0, b"b", b"x"))
    drain(first)  # changelog: a@0, marker@1, b@2, marker@3
    first.close()
    p = Counter()
    p.restore_offsets[("counts-changelog", 0)] = 2  # the first transaction's record and marker are covered
    p.counts = {}
    second = runtime(c, p)
    second.open()
    drain(second)
    assert p.restored == [2]


def _aborted() -> _Txn:
    return _Txn("someone-else", state="aborted")


def c_consumer(rt: ExactlyOnceRuntime) -> FakeConsumer:
    consumer = rt._consumer
    assert isinstance(consumer, FakeConsumer)
    return consumer

"""The end of a transaction (``topology.runtime.commit``): commit, abort and recovery, over fake clients."""

from __future__ import annotations

import pytest

from tests.unit.runtime.support import Counter, abortable, cluster, drain, fatal, put, started, values
from topology.runtime import FatalRuntimeError, FencedError
from topology.runtime.commit import MAX_RECOVERIES


def test_outputs_offsets_and_state_commit_together() -> None:
    c = cluster()
    put(c, (0, b"a", b"x"), (0, b"a", b"x"), (1, b"b", b"x"))
    p = Counter()
    rt = started(c, p)
    assert values(c, "out") == []  # produced, not committed: read_committed readers see nothing yet
    assert rt.commit()
    assert sorted(values(c, "out")) == [b"a=1", b"a=2", b"b=1"]
    assert c.group_offsets["app"] == {("in", 0): 2, ("in", 1): 1}
    assert sorted(values(c, "counts-changelog")) == [b"1", b"2"]
    assert p.calls[-1] == "committed"
    assert rt.stats.records_in == 3 and rt.stats.transactions_committed == 1


def test_an_abortable_commit_error_rewinds_and_the_retry_commits_once() -> None:
    c = cluster(1)
    put(c, (0, b"a", b"x"), (0, b"b", b"x"))
    p = Counter()
    rt = started(c, p)
    c.fail("commit_transaction", abortable())
    assert not rt.commit()
    assert p.calls[-1] == "aborted" and p.counts[("in", 0)] == {}
    drain(rt)
    assert values(c, "out") == [b"a=1", b"b=1"]
    assert c.group_offsets["app"] == {("in", 0): 2}


def test_a_fenced_producer_stops_with_exit_code_3() -> None:
    c = cluster(1)
    put(c, (0, b"a", b"x"))
    rt = started(c, Counter())
    c.epochs["app-one"] += 1  # another instance with the same transactional.id called init_transactions
    with pytest.raises(FencedError) as info:
        rt.commit()
    assert info.value.exit_code == 3
    assert values(c, "out") == []


def test_a_fatal_producer_error_replaces_the_producer_and_keeps_exactly_once() -> None:
    c = cluster(1)
    put(c, (0, b"a", b"x"))
    p = Counter()
    rt = started(c, p)
    c.fail("commit_transaction", fatal())
    assert not rt.commit()
    assert p.calls[-1] == "aborted"
    drain(rt)
    assert values(c, "out") == [b"a=1"] and c.epochs["app-one"] == 1


def test_a_commit_keeps_failing_so_the_runtime_stops_after_five_producer_replacements() -> None:
    c = cluster(1)
    put(c, (0, b"a", b"x"))
    p = Counter()
    rt = started(c, p)
    c.fail("commit_transaction", fatal(), times=MAX_RECOVERIES + 1)
    for _ in range(MAX_RECOVERIES):
        assert not rt.commit() and p.calls[-1] == "aborted"
        rt.step()
        rt.step()  # the record read again, in a new transaction
    with pytest.raises(FatalRuntimeError, match="after 5 producer replacements"):
        rt.commit()
    assert values(c, "out") == [] and c.group_offsets.get("app", {}) == {}


def test_a_commit_resets_the_count_of_producer_replacements() -> None:
    c = cluster(1)
    put(c, (0, b"a", b"x"))
    rt = started(c, Counter())
    c.fail("commit_transaction", fatal(), times=MAX_RECOVERIES)
    for _ in range(MAX_RECOVERIES + 1):
        drain(rt, steps=4)  # a commit per drain: five fail, the sixth commits
    assert values(c, "out") == [b"a=1"]
    put(c, (0, b"a", b"x"))
    c.fail("commit_transaction", fatal(), times=MAX_RECOVERIES)
    for _ in range(MAX_RECOVERIES + 1):
        drain(rt, steps=4)  # five fail again, the sixth commits: the count began again at the commit
    assert values(c, "out") == [b"a=1", b"a=2"]

"""The exactly-once runtime with small processors of its own (no fraud): retries, dead letters,
the fail policy, transient errors, and changelog-backed state restored after a restart and after
an abort."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.conftest import Endpoints
from tests.integration.eos_support import create_topics, read_all
from topology.records import OutRecord, ProcessorBase, RawRecord
from topology.runtime import ExactlyOnceRuntime, FatalRuntimeError, RuntimeSettings

pytestmark = pytest.mark.integration


class Flaky(Exception):
    """A transient failure (like a registry outage)."""


class Upper(ProcessorBase):
    """Copies values upper-cased; raises on values starting with ``boom``; ``flaky`` values fail twice."""

    def __init__(self, source: str, out: str, dlq: str) -> None:
        self.source_topics = (source,)
        self.sink_topics = (out, dlq)
        self.dlq_topic = dlq
        self.out = out
        self.calls: Counter[bytes] = Counter()

    def process(self, record: RawRecord) -> list[OutRecord]:
        value = record.value or b""
        self.calls[value] += 1
        if value.startswith(b"boom"):
            raise ValueError(f"cannot process {value!r}")
        if value.startswith(b"flaky") and self.calls[value] <= 2:
            raise Flaky("try again")
        return [OutRecord(self.out, record.key, value.upper(), (("seen", b"1"),), labels=("main",))]


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i, v in enumerate(values):
        p.produce(topic, v, f"k{i % 7}".encode())
    assert p.flush(30) == 0


def _settings(stack: Endpoints, unique: str, **extra: object) -> RuntimeSettings:
    return RuntimeSettings(
        bootstrap_servers=stack.bootstrap_servers, application_id=f"rt-{unique}", instance_id="t",
        retry_backoff_ms=10, session_timeout_ms=6000, **extra,  # type: ignore[arg-type]
    )


def test_failing_record_is_retried_then_dead_lettered_and_the_rest_is_exactly_once(
    stack: Endpoints, unique: str
) -> None:
    src, out, dlq = f"rt-{unique}.in", f"rt-{unique}.out", f"rt-{unique}.dlq"
    create_topics(stack.bootstrap_servers, [src], 3)
    values = [f"v{i}".encode() for i in range(3000)]
    values[1234] = b"boom-1234"
    values[2500] = b"flaky-2500"
    _produce(stack.bootstrap_servers, src, values)
    proc = Upper(src, out, dlq)
    runtime = ExactlyOnceRuntime(proc, _settings(stack, unique, max_retries=2, transient_errors=(Flaky,)))
    runtime.run(stop=lambda: runtime.stats.records_in >= len(values))

    assert proc.calls[b"boom-1234"] == 3  # first try + 2 retries, then dead-lettered without a call
    assert runtime.stats.dead_letters == 1
    assert runtime.stats.transactions_aborted >= 5  # 3 for boom, 2 for flaky
    got = read_all(stack.bootstrap_servers, (out, dlq), "read_committed")
    dead = [o for o in got if o.topic == dlq]
    assert len(dead) == 1
    h = dead[0].headers
    assert dead[0].value == b"boom-1234"
    assert h["error.class"] == b"ValueError" and b"cannot process" in h["error.message"]
    assert h["error.attempts"] == b"3" and h["source.topic"] == src.encode()
    assert int(h["source.offset"]) >= 0 and int(h["source.partition"]) in (0, 1, 2)
    routed = Counter(o.value for o in got if o.topic == out)
    assert routed == Counter(v.upper() for v in values if not v.startswith(b"boom"))  # flaky one too, once
    assert all(o.headers["seen"] == b"1" for o in got if o.topic == out)
    uncommitted = read_all(stack.bootstrap_servers, (out, dlq), "read_uncommitted")
    assert len(uncommitted) > len(got)  # the aborted attempts were written, and stay invisible


def test_fail_policy_stops_without_committing_the_failing_transaction(stack: Endpoints, unique: str) -> None:
    src, out, dlq = f"rt-{unique}.in", f"rt-{unique}.out", f"rt-{unique}.dlq"
    create_topics(stack.bootstrap_servers, [src], 1)
    values = [f"v{i}".encode() for i in range(500)] + [b"boom"] + [f"w{i}".encode() for i in range(500)]
    _produce(stack.bootstrap_servers, src, values)
    runtime = ExactlyOnceRuntime(Upper(src, out, dlq), _settings(stack, unique, max_retries=1, on_error="fail"))
    with pytest.raises(FatalRuntimeError, match="failed 2 times"):
        runtime.run()
    got = read_all(stack.bootstrap_servers, (out, dlq), "read_committed")
    assert all(o.topic == out for o in got)
    assert [o.value for o in got] == [v.upper() for v in values[: len(got)]]  # a prefix, in order
    assert len(got) <= 500


class Counting(ProcessorBase):
    """Counts records per key; the count lives in a changelog (partition = input partition).

    Transactional: the counts a transaction changed are put back when it aborts."""

    def __init__(self, source: str, out: str, changelog: str, fail_at: int | None = None) -> None:
        self.source_topics = (source,)
        self.changelog_topics = (changelog,)
        self.sink_topics = (out, changelog)
        self.dlq_topic = f"{out}.dlq"
        self.out, self.changelog = out, changelog
        self.counts: dict[int, dict[bytes, int]] = {}
        self.restored = 0
        self.fail_at = fail_at
        self._undo: dict[tuple[int, bytes], int | None] = {}

    def committed(self) -> None:
        self._undo = {}

    def aborted(self) -> None:
        for (p, key), n in self._undo.items():
            if n is None:
                self.counts[p].pop(key, None)
            else:
                self.counts[p][key] = n
        self._undo = {}

    def assigned(self, partitions: list[tuple[str, int]]) -> None:
        for _, p in partitions:
            self.counts[p] = {}

    def revoked(self, partitions: list[tuple[str, int]]) -> None:
        for _, p in partitions:
            self.counts.pop(p, None)

    def restore(self, record: RawRecord) -> None:
        assert record.key is not None and record.value is not None
        self.counts.setdefault(record.partition, {})[record.key] = struct.unpack(">q", record.value)[0]
        self.restored += 1

    def process(self, record: RawRecord) -> list[OutRecord]:
        assert record.key is not None
        if self.fail_at is not None and record.value == f"v{self.fail_at}".encode():
            self.fail_at = None  # once: the runtime aborts, rebuilds the state and retries
            raise RuntimeError("bug")
        state = self.counts[record.partition]
        self._undo.setdefault((record.partition, record.key), state.get(record.key))
        n = state.get(record.key, 0) + 1
        state[record.key] = n
        return [
            OutRecord(self.changelog, record.key, struct.pack(">q", n), partition=record.partition),
            OutRecord(self.out, record.key, f"{record.key.decode()}={n}".encode()),
        ]


def test_changelog_state_is_restored_after_a_restart_and_after_an_abort(
    stack: Endpoints, unique: str, tmp_path: Path
) -> None:
    src, out, changelog = f"rt-{unique}.in", f"rt-{unique}.out", f"rt-{unique}.count-changelog"
    create_topics(stack.bootstrap_servers, [src], 3)
    _produce(stack.bootstrap_servers, src, [f"v{i}".encode() for i in range(2000)])
    first = Counting(src, out, changelog, fail_at=1500)
    r1 = ExactlyOnceRuntime(first, _settings(stack, unique, max_retries=3, max_batch=300))
    r1.run(stop=lambda: r1.stats.records_in >= 2000)
    # The abort put the state back in memory: no changelog record was replayed.
    assert r1.stats.transactions_aborted >= 1 and r1.stats.restored == 0 and first.restored == 0

    _produce(stack.bootstrap_servers, src, [f"v{i}".encode() for i in range(2000, 2700)])
    second = Counting(src, out, changelog)
    r2 = ExactlyOnceRuntime(second, _settings(stack, unique))
    r2.run(stop=lambda: r2.stats.records_in >= 700)
    assert second.restored > 0

    got = read_all(stack.bootstrap_servers, (out,), "read_committed")
    per_key: dict[bytes, list[int]] = {}
    for o in sorted(got, key=lambda o: (o.partition, o.offset)):
        assert o.key is not None and o.value is not None
        per_key.setdefault(o.key, []).append(int(o.value.split(b"=")[1]))
    # Every key counted 1, 2, 3, ... with no gap and no repeat across the abort and the restart.
    assert sum(len(v) for v in per_key.values()) == 2700
    for counts in per_key.values():
        assert counts == list(range(1, len(counts) + 1))

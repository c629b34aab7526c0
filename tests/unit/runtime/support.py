"""A small stateful processor and helpers for the runtime's unit tests over fake clients."""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka import KafkaError, KafkaException

from topology.records import TP, Kind, OutRecord, ProcessorBase, RawRecord
from topology.runtime import ExactlyOnceRuntime, RuntimeSettings
from topology.testing.fakes import FakeClients, FakeCluster


class Counter(ProcessorBase):
    """Counts records per key (state with a changelog) and writes ``key=count`` to ``out``.

    A record whose value is ``b"boom"`` raises ``boom_times`` times. ``calls`` records the hooks.
    """

    source_topics = ("in",)
    sink_topics = ("out", "dlq", "counts-changelog")
    changelog_topics = ("counts-changelog",)
    dlq_topic = "dlq"

    def __init__(self, boom_times: int = 0) -> None:
        self.counts: dict[TP, dict[bytes, int]] = {}
        self._undo: dict[TP, dict[bytes, int | None]] = {}
        self._dirty: dict[TP, set[bytes]] = {}
        self.boom_left = boom_times
        self.calls: list[str] = []
        self.restored: list[int] = []
        self.checkpoints: list[dict[TP, int]] = []
        self.restore_offsets: dict[TP, int] = {}

    def process(self, record: RawRecord) -> list[OutRecord]:
        if record.value == b"boom" and self.boom_left > 0:
            self.boom_left -= 1
            raise ValueError("boom")
        tp = (record.topic, record.partition)
        key = record.key or b""
        state = self.counts.setdefault(tp, {})
        self._undo.setdefault(tp, {}).setdefault(key, state.get(key))
        state[key] = state.get(key, 0) + 1
        self._dirty.setdefault(tp, set()).add(key)
        return [OutRecord("out", key, f"{key.decode()}={state[key]}".encode())]

    def flush(self) -> list[OutRecord]:
        out = [
            OutRecord("counts-changelog", k, str(self.counts[tp][k]).encode(), partition=tp[1],
                      kind=Kind.CHANGELOG)
            for tp, keys in sorted(self._dirty.items()) for k in sorted(keys)
        ]  # fmt: skip
        self._dirty = {}
        return out

    def committed(self) -> None:
        self.calls.append("committed")
        self._undo = {}

    def aborted(self) -> None:
        self.calls.append("aborted")
        for tp, keys in self._undo.items():
            for k, v in keys.items():
                if v is None:
                    self.counts[tp].pop(k, None)
                else:
                    self.counts[tp][k] = v
        self._undo, self._dirty = {}, {}

    def assigned(self, partitions: list[TP]) -> None:
        self.calls.append("assigned")
        for tp in partitions:
            self.counts[tp] = {}

    def revoked(self, partitions: list[TP]) -> None:
        self.calls.append("revoked")
        for tp in partitions:
            self.counts.pop(tp, None)

    def restore_from(self, changelog: TP) -> int:
        return self.restore_offsets.get(changelog, 0)

    def restore(self, record: RawRecord) -> None:
        assert record.key is not None and record.value is not None
        self.counts.setdefault(("in", record.partition), {})[record.key] = int(record.value)
        self.restored.append(record.offset)

    def checkpoint(self, offsets: Mapping[TP, int]) -> None:
        self.checkpoints.append(dict(offsets))


def cluster(partitions: int = 2) -> FakeCluster:
    c = FakeCluster(partitions)
    c.create("in")
    return c


def runtime(c: FakeCluster, processor: Counter, **settings: object) -> ExactlyOnceRuntime:
    s = RuntimeSettings(
        "fake:9092", "app", "one", commit_interval_ms=10**9, retry_backoff_ms=0, retry_backoff_max_ms=0,
        **settings,  # type: ignore[arg-type]
    )  # fmt: skip
    return ExactlyOnceRuntime(processor, s, clients=FakeClients(c))


def started(c: FakeCluster, processor: Counter, **settings: object) -> ExactlyOnceRuntime:
    """A runtime opened and stepped twice: assigned (paused until restored), then restored (nothing to
    replay), resumed and what was there processed, its transaction open."""
    rt = runtime(c, processor, **settings)
    rt.open()
    rt.step()
    rt.step()
    return rt


def put(c: FakeCluster, *records: tuple[int, bytes, bytes]) -> None:
    """Append committed (non-transactional) input records: (partition, key, value)."""
    from topology.testing.fakes import Entry

    for p, k, v in records:
        c.append(("in", p), Entry(k, v, (), 1))


def values(c: FakeCluster, topic: str) -> list[bytes]:
    """The committed values of ``topic``, by partition then offset."""
    return [e.value or b"" for _, _, e in c.records(topic)]


def drain(rt: ExactlyOnceRuntime, steps: int = 20) -> None:
    """Step until nothing is left to read, then commit."""
    for _ in range(steps):
        rt.step()
    rt.commit()


def fatal(message: str = "broken") -> KafkaException:
    """A fatal (not fencing) producer error."""
    return KafkaException(KafkaError(KafkaError._FATAL, message, fatal=True))


def abortable(message: str = "abortable") -> KafkaException:
    err = KafkaError(KafkaError._STATE, message, txn_requires_abort=True)
    return KafkaException(err)

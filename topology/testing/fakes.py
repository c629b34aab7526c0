"""In-memory stand-ins for the Kafka clients the runtime uses (``topology.runtime.clients``).

``FakeCluster`` keeps topic logs with transaction markers, consumer group offsets and producer
epochs, so the runtime's real code runs over it: transactions that commit or abort (aborted
records and markers take offsets, and ``read_committed`` readers skip them and stop at the last
stable offset), offsets committed inside a transaction, fencing by ``init_transactions``, and a
consumer group of one member whose rebalances tests trigger (``FakeConsumer.revoke``/``lose``/
``reassign``). ``FakeCluster.fail`` makes the next call of a name raise, for failure tests.
Not modelled: more than one member per group, replication, quotas, timeouts.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_INVALID, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic

from topology.records import TP, Headers
from topology.runtime.clients import ConsumerClient, ProducerClient, Rebalance


@dataclass
class _Txn:
    producer: str
    state: str = "open"  # open, committed, aborted
    offsets: dict[str, dict[TP, int]] = field(default_factory=dict)
    partitions: set[TP] = field(default_factory=set)
    first: dict[TP, int] = field(default_factory=dict)  # first offset written per partition
    refused: KafkaError | None = None  # a produce request the broker refused: the transaction must abort


@dataclass(frozen=True)
class Entry:
    """One offset of a partition log: a record, or a transaction marker (``control``)."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int
    txn: _Txn | None = None
    control: bool = False

    @property
    def committed(self) -> bool:
        return self.txn is None or self.txn.state == "committed"


class FakeMessage:
    """What ``consume`` returns (the ``confluent_kafka.Message`` calls the runtime makes)."""

    def __init__(self, topic: str, partition: int, offset: int, e: Entry) -> None:
        self._tp, self._offset, self._e = (topic, partition), offset, e

    def error(self) -> KafkaError | None:
        return None

    def topic(self) -> str:
        return self._tp[0]

    def partition(self) -> int:
        return self._tp[1]

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._e.key

    def value(self) -> bytes | None:
        return self._e.value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return list(self._e.headers) or None

    def timestamp(self) -> tuple[int, int]:
        return (1, self._e.timestamp_ms)


class FakeCluster:
    """Topic logs, group offsets and transactional producers' epochs."""

    def __init__(self, default_partitions: int = 1) -> None:
        self.default_partitions = default_partitions
        self.partitions: dict[str, int] = {}
        self.logs: dict[TP, list[Entry]] = {}
        self.group_offsets: dict[str, dict[TP, int]] = {}
        self.epochs: dict[str, int] = {}
        self.open_txns: dict[str, _Txn] = {}
        self.order: list[tuple[TP, int]] = []  # every append, in write order
        self.max_message_bytes: dict[str, int] = {}  # a topic's max.message.bytes: larger values fail the commit
        self._failures: dict[str, list[BaseException]] = {}

    # ------------------------------------------------------------ topics

    def create(self, topic: str, partitions: int | None = None) -> None:
        if topic not in self.partitions:
            self.partitions[topic] = partitions or self.default_partitions
            for p in range(self.partitions[topic]):
                self.logs[(topic, p)] = []

    def grow(self, topic: str, partitions: int) -> None:
        """Give ``topic`` ``partitions`` partitions in all (as ``AdminClient.create_partitions``)."""
        for p in range(self.partitions[topic], partitions):
            self.logs[(topic, p)] = []
        self.partitions[topic] = max(self.partitions[topic], partitions)

    def partition_of(self, topic: str, key: bytes | None, partition: int) -> int:
        if partition >= 0:
            return partition
        return 0 if key is None else zlib.crc32(key) % self.partitions[topic]

    def append(self, tp: TP, e: Entry) -> int:
        if tp not in self.logs:
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION, f"unknown partition {tp}"))
        log = self.logs[tp]
        log.append(e)
        self.order.append((tp, len(log) - 1))
        if e.txn is not None and not e.control:
            e.txn.first.setdefault(tp, len(log) - 1)
        return len(log) - 1

    def end(self, tp: TP, read_committed: bool) -> int:
        """The high watermark, or for ``read_committed`` the last stable offset."""
        log = self.logs.get(tp, [])
        if read_committed:
            firsts = [t.first[tp] for t in self.open_txns.values() if tp in t.first]
            if firsts:
                return min(firsts)
        return len(log)

    def records(self, topic: str, *, committed_only: bool = True) -> list[tuple[int, int, Entry]]:
        """(partition, offset, entry) of every record of ``topic`` (no markers; committed ones by default)."""
        return [
            (p, o, e)
            for p in range(self.partitions.get(topic, 0))
            for o, e in enumerate(self.logs[(topic, p)])
            if not e.control and (e.committed or not committed_only)
        ]

    # ------------------------------------------------------------ failures

    def fail(self, call: str, error: BaseException, times: int = 1) -> None:
        """The next ``times`` calls named ``call`` (e.g. ``"commit_transaction"``) raise ``error``."""
        self._failures.setdefault(call, []).extend([error] * times)

    def check(self, call: str) -> None:
        queued = self._failures.get(call)
        if queued:
            raise queued.pop(0)

    # ------------------------------------------------------------ transactions

    def end_txn(self, txn: _Txn, state: str) -> None:
        txn.state = state
        if state == "committed":
            for group, offsets in txn.offsets.items():
                self.group_offsets.setdefault(group, {}).update(offsets)
        for tp in sorted(txn.partitions):
            self.append(tp, Entry(None, None, (), 0, txn, control=True))
        if self.open_txns.get(txn.producer) is txn:
            del self.open_txns[txn.producer]


class FakeProducer:
    """A transactional producer over a ``FakeCluster``."""

    def __init__(self, cluster: FakeCluster, config: Mapping[str, Any]) -> None:
        self.cluster = cluster
        self.transactional_id: str = config.get("transactional.id", "")
        self.max_bytes = int(config.get("message.max.bytes", 1_000_000))  # librdkafka refuses larger at produce()
        self.epoch = -1
        self.txn: _Txn | None = None

    def _live(self, call: str) -> None:
        self.cluster.check(call)
        if self.cluster.epochs.get(self.transactional_id) != self.epoch:
            raise KafkaException(KafkaError(KafkaError._FENCED, "producer fenced", fatal=True))

    def init_transactions(self, timeout: float) -> None:
        c = self.cluster
        c.check("init_transactions")
        old = c.open_txns.get(self.transactional_id)
        if old is not None:
            c.end_txn(old, "aborted")
        self.epoch = c.epochs[self.transactional_id] = c.epochs.get(self.transactional_id, -1) + 1

    def begin_transaction(self) -> None:
        self._live("begin_transaction")
        if self.txn is not None:
            raise KafkaException(KafkaError(KafkaError._STATE, "a transaction is in progress"))
        self.txn = self.cluster.open_txns[self.transactional_id] = _Txn(self.transactional_id)

    def produce(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, partition: int = -1,
        callback: Any = None, on_delivery: Any = None, timestamp: int = 0,
        headers: list[tuple[str, bytes]] | Headers | None = None,
    ) -> None:  # fmt: skip
        self._live("produce")
        if self.txn is None:
            raise KafkaException(KafkaError(KafkaError._STATE, "produce outside a transaction"))
        if self.txn.refused is not None:  # as librdkafka: a failed transaction takes no more records
            raise KafkaException(KafkaError(KafkaError._STATE, "Unable to produce message: Local: Erroneous state"))
        if topic not in self.cluster.partitions:
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC, f"unknown topic {topic}"))
        size = len(key or b"") + len(value or b"") + sum(len(k) + len(v or b"") for k, v in headers or ())
        if size > self.max_bytes:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, f"Message size {size} too large"))
        tp = (topic, self.cluster.partition_of(topic, key, partition))
        self.cluster.append(tp, Entry(key, value, tuple(headers or ()), timestamp, self.txn))
        self.txn.partitions.add(tp)
        limit = self.cluster.max_message_bytes.get(topic)
        if limit is not None and len(value or b"") > limit:  # as the broker does, when the request is sent
            message = f"ProduceRequest for {topic} [{tp[1]}] failed: Message size too large"
            self.txn.refused = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, message, txn_requires_abort=True)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def send_offsets_to_transaction(self, positions: list[TopicPartition], group_metadata: Any,
                                    timeout: float) -> None:  # fmt: skip
        self._live("send_offsets_to_transaction")
        assert self.txn is not None
        self.txn.offsets.setdefault(str(group_metadata), {}).update(
            {(tp.topic, tp.partition): tp.offset for tp in positions}
        )

    def commit_transaction(self, timeout: float) -> None:
        self._live("commit_transaction")
        assert self.txn is not None
        if self.txn.refused is not None:  # the transaction must be aborted
            raise KafkaException(self.txn.refused)
        self.cluster.end_txn(self.txn, "committed")
        self.txn = None

    def abort_transaction(self, timeout: float) -> None:
        self._live("abort_transaction")
        if self.txn is not None:
            self.cluster.end_txn(self.txn, "aborted")
        self.txn = None

    def purge(self) -> None:
        return None


class FakeConsumer:
    """A consumer over a ``FakeCluster``: a group of one member (subscribe), or assigned by hand (assign)."""

    def __init__(self, cluster: FakeCluster, config: Mapping[str, Any]) -> None:
        self.cluster = cluster
        self.group: str = config.get("group.id", "")
        self.read_committed = config.get("isolation.level", "read_committed") == "read_committed"
        self.topics: list[str] = []
        self.callbacks: tuple[Rebalance, Rebalance, Rebalance] | None = None
        self.assignment: set[TP] = set()
        self.paused: set[TP] = set()
        self.positions: dict[TP, int] = {}
        self._pending_assign = False
        self._assigned_in_callback = False
        self.closed = False

    def subscribe(self, topics: list[str], on_assign: Rebalance, on_revoke: Rebalance, on_lost: Rebalance) -> None:
        self.topics, self.callbacks, self._pending_assign = list(topics), (on_assign, on_revoke, on_lost), True

    # ------------------------------------------------------------ rebalances (tests trigger them)

    def reassign(self, parts: Sequence[TP] | None = None) -> None:
        """Assign ``parts`` (default: every partition of the subscribed topics not assigned yet)."""
        if parts is None:
            parts = [(t, p) for t in self.topics for p in range(self.cluster.partitions.get(t, 0))]
        new = [tp for tp in parts if tp not in self.assignment]
        if not new or self.callbacks is None:
            return
        self._assigned_in_callback = False
        self.callbacks[0](self, [TopicPartition(*tp) for tp in new])
        if not self._assigned_in_callback:
            self.incremental_assign([TopicPartition(*tp) for tp in new])

    def revoke(self, parts: Sequence[TP]) -> None:
        assert self.callbacks is not None
        self.callbacks[1](self, [TopicPartition(*tp) for tp in parts])
        self._drop(parts)

    def lose(self, parts: Sequence[TP]) -> None:
        assert self.callbacks is not None
        self.callbacks[2](self, [TopicPartition(*tp) for tp in parts])
        self._drop(parts)

    def _drop(self, parts: Sequence[TP]) -> None:
        for tp in parts:
            self.assignment.discard(tp)
            self.paused.discard(tp)
            self.positions.pop(tp, None)

    # ------------------------------------------------------------ reading

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        self.cluster.check("consume")
        if self._pending_assign:
            self._pending_assign = False
            self.reassign()
        out: list[FakeMessage] = []
        for tp in sorted(self.assignment - self.paused):
            pos = self._position(tp)
            log = self.cluster.logs.get(tp, [])
            while pos < len(log) and len(out) < num_messages:
                e = log[pos]
                if e.txn is not None and e.txn.state == "open" and self.read_committed:
                    break  # the last stable offset
                if not e.control and (e.committed or not self.read_committed):
                    out.append(FakeMessage(tp[0], tp[1], pos, e))
                pos += 1
            self.positions[tp] = pos
        return out

    def poll(self, timeout: float) -> FakeMessage | None:
        got = self.consume(1, timeout)
        return got[0] if got else None

    def _position(self, tp: TP) -> int:
        pos = self.positions.get(tp)
        if pos is None:
            pos = self.cluster.group_offsets.get(self.group, {}).get(tp, 0) if self.callbacks else 0
            self.positions[tp] = pos
        return pos

    def seek(self, partition: TopicPartition) -> None:
        tp = (partition.topic, partition.partition)
        if tp not in self.assignment:
            raise KafkaException(KafkaError(KafkaError._STATE, f"{tp} is not assigned"))
        self.positions[tp] = partition.offset

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        offsets = self.cluster.group_offsets.get(self.group, {})
        return [TopicPartition(tp.topic, tp.partition, offsets.get((tp.topic, tp.partition), OFFSET_INVALID))
                for tp in partitions]  # fmt: skip

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.positions.get((tp.topic, tp.partition), OFFSET_INVALID))
                for tp in partitions]  # fmt: skip

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.update((tp.topic, tp.partition) for tp in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused.difference_update((tp.topic, tp.partition) for tp in partitions)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assignment = {(tp.topic, tp.partition) for tp in partitions}
        self.positions = {(tp.topic, tp.partition): tp.offset for tp in partitions if tp.offset >= 0}

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self._assigned_in_callback = True
        for tp in partitions:
            self.assignment.add((tp.topic, tp.partition))
            if tp.offset >= 0:
                self.positions[(tp.topic, tp.partition)] = tp.offset

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        self._drop([(tp.topic, tp.partition) for tp in partitions])

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float, cached: bool) -> tuple[int, int]:
        return 0, self.cluster.end((partition.topic, partition.partition), self.read_committed)

    def consumer_group_metadata(self) -> Any:
        return self.group

    def close(self) -> None:
        if self.callbacks is not None and self.assignment and not self.closed:
            self.callbacks[1](self, [TopicPartition(*tp) for tp in sorted(self.assignment)])
        self.closed = True
        self.assignment.clear()


class FakeClients:
    """A ``ClientFactory`` over one ``FakeCluster``."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.consumers: list[FakeConsumer] = []

    def producer(self, config: Mapping[str, Any]) -> ProducerClient:
        return FakeProducer(self.cluster, config)

    def consumer(self, config: Mapping[str, Any]) -> ConsumerClient:
        c = FakeConsumer(self.cluster, config)
        self.consumers.append(c)
        return c

    def partitions(self, config: Mapping[str, Any], topics: Sequence[str], timeout: float) -> dict[str, int]:
        self.cluster.check("partitions")
        return {t: self.cluster.partitions[t] for t in topics if t in self.cluster.partitions}

    def create_topics(self, config: Mapping[str, Any], topics: Sequence[NewTopic], timeout: float) -> None:
        for t in topics:
            self.cluster.create(t.topic, t.num_partitions)

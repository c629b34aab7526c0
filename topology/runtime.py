"""The exactly-once Kafka runtime: consume, process, produce and commit offsets in one transaction.

It knows nothing about fraud: it feeds every input record, as a ``RawRecord``, to a
processor (``process(record) -> list[OutRecord]``) and writes what comes back.

One loop, no hidden threads::

    init_transactions()                       # fences a zombie with the same transactional.id
    subscribe(sources, on_assign/on_revoke/on_lost)
    loop:
        consume(batch)                        # read_committed, no auto commit
        begin_transaction() on the first record of a transaction
        process + produce every record        # outputs, dead letters, changelogs
        every commit_interval_ms or max_batch records:
            send_offsets_to_transaction(offsets, consumer_group_metadata())
            commit_transaction()

Rebalancing uses the **cooperative-sticky** assignor: only the partitions that move
are revoked, so the other partitions keep their state (no stop-the-world restore).
``on_revoke`` commits the open transaction (it still owns the partitions then) before
the partitions are given up; ``on_lost`` (the group already gave them away) aborts it.
Afterwards nothing about revoked partitions stays: no offsets of theirs are ever sent.

Errors: a processing error (an exception from ``process`` or ``produce``) aborts the
transaction, seeks every partition of it back to its last committed offset (the first
offset the aborted transaction read), waits with exponential backoff and retries; after
``max_retries`` failures of the same record it is dead-lettered (``on_error="dead-letter"``)
or the runtime stops (``on_error="fail"``). Abortable Kafka errors abort and rewind;
retriable ones retry the call; fatal ones (a fenced producer above all) raise
``FatalRuntimeError`` after closing the consumer, without committing anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from topology.records import Headers, OutRecord, RawRecord

if TYPE_CHECKING:
    from topology.vectorized import BatchRouting

log = logging.getLogger("fraudstream.runtime")

TP = tuple[str, int]
"""A topic partition as ``(topic, partition)``: what the processor sees of partitions."""

_FENCED_CODES = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.TRANSACTION_COORDINATOR_FENCED,
        KafkaError.FENCED_INSTANCE_ID,
    }
)


class Processor(Protocol):
    """What the runtime needs of a processor (``topology.processor.TopologyProcessor`` is one).

    Optional, looked up with ``getattr``: ``route_batch(values)`` (decisions for a whole consumed
    batch, see ``TopologyProcessor.route_batch``), ``dlq_topic: str`` (default dead-letter topic),
    ``changelog_topics: tuple[str, ...]``, ``restore(record)``, ``assigned(partitions)`` and
    ``revoked(partitions)`` with ``partitions: list[tuple[str, int]]``.
    """

    @property
    def source_topics(self) -> tuple[str, ...]: ...

    @property
    def sink_topics(self) -> tuple[str, ...]: ...

    def process(self, record: RawRecord) -> list[OutRecord]: ...


class FatalRuntimeError(Exception):
    """The runtime cannot go on (fatal Kafka error, or a record failed under ``on_error="fail"``)."""

    exit_code = 2


class FencedError(FatalRuntimeError):
    """Another instance with the same ``transactional.id`` (or group instance id) took over."""

    exit_code = 3


@dataclass(frozen=True)
class RuntimeSettings:
    """How the runtime talks to Kafka. ``application_id`` is the consumer group."""

    bootstrap_servers: str
    application_id: str
    instance_id: str
    commit_interval_ms: int = 100
    max_batch: int = 10_000  # records per transaction at most
    consume_batch: int = 2_000  # records per consume() call at most
    transaction_timeout_ms: int = 60_000
    session_timeout_ms: int = 10_000
    max_poll_interval_ms: int = 300_000
    kafka_timeout_s: float = 30.0  # for init/commit/abort/send_offsets calls
    max_retries: int = 3
    retry_backoff_ms: int = 200  # doubles after each failure of the same record
    retry_backoff_max_ms: int = 5_000
    on_error: Literal["dead-letter", "fail"] = "dead-letter"
    # Errors that are not the record's fault (a registry outage): retried without limit, never dead-lettered.
    transient_errors: tuple[type[BaseException], ...] = ()
    dlq_topic: str | None = None  # default: the processor's ``dlq_topic``
    create_topics: bool = True  # create missing sink and changelog topics
    topic_partitions: int | None = None  # new sinks: None = partitions of the first source
    replication_factor: int = -1  # -1 = broker default
    group_instance_id: str | None = None  # static membership (restarts without rebalance)
    # Applied to every client the runtime makes (consumer, producer, admin, restore): security settings.
    client_config: Mapping[str, Any] = field(default_factory=dict)
    consumer_config: Mapping[str, Any] = field(default_factory=dict)
    producer_config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def transactional_id(self) -> str:
        """Stable per instance: a restarted instance fences its zombie."""
        return f"{self.application_id}-{self.instance_id}"


@dataclass(frozen=True)
class CommitReport:
    """What one committed transaction carried (for metrics)."""

    records_in: Mapping[str, int]  # per source topic
    records_out: Mapping[tuple[str, tuple[str, ...]], int]  # per (topic, tags)
    dead_letters: Mapping[str, int]  # per error class
    seconds: float  # send offsets + commit


@dataclass
class RuntimeStats:
    """Committed counts since start, and recent commit latencies."""

    records_in: int = 0
    records_in_by_topic: Counter[str] = field(default_factory=Counter)
    records_out: Counter[str] = field(default_factory=Counter)  # per topic
    branches: Counter[str] = field(default_factory=Counter)  # per first tag ("" when untagged)
    dead_letters: int = 0
    transactions_committed: int = 0
    transactions_aborted: int = 0
    retries: int = 0
    restored: int = 0
    first_record_at: float | None = None  # time.monotonic() of the first record consumed
    last_commit_at: float | None = None
    commit_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=4096))

    def commit_latency_ms(self, q: float) -> float | None:
        """The ``q`` quantile (0..1, nearest rank) of recent commit latencies, in ms."""
        return quantile([s * 1000.0 for s in self.commit_seconds], q)


def quantile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile of ``values`` (``None`` when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def backoff_seconds(failures: int, base_ms: int, cap_ms: int) -> float:
    """Exponential backoff before retry number ``failures`` (1-based): base, 2*base, ... up to cap."""
    return float(min(base_ms * (2 ** max(0, failures - 1)), cap_ms)) / 1000.0


def dead_letter(record: RawRecord, topic: str, error: BaseException, attempts: int) -> OutRecord:
    """The dead-letter record of an input the processor kept failing on (original bytes and headers)."""
    message = f"{error}"[:2000] or type(error).__name__
    headers: Headers = (
        *record.headers,
        ("error.class", type(error).__name__.encode()),
        ("error.message", message.encode("utf-8", errors="replace")),
        ("error.attempts", str(attempts).encode()),
        ("source.topic", record.topic.encode()),
        ("source.partition", str(record.partition).encode()),
        ("source.offset", str(record.offset).encode()),
    )
    return OutRecord(topic, record.key, record.value, headers, tags=("dlq",))


def header_value(headers: Iterable[tuple[str, bytes | None]], name: str) -> str | None:
    """The last value of header ``name`` as text, or ``None``."""
    found: str | None = None
    for key, value in headers:
        if key == name:
            found = (value or b"").decode("utf-8", errors="replace")
    return found


def is_fenced(error: KafkaError) -> bool:
    """Whether ``error`` means another instance took over this one's identity."""
    return error.code() in _FENCED_CODES


def kafka_error(exc: KafkaException) -> KafkaError:
    """The ``KafkaError`` inside a ``KafkaException``."""
    arg = exc.args[0] if exc.args else None
    if isinstance(arg, KafkaError):
        return arg
    return KafkaError(KafkaError._FAIL, str(exc), fatal=True)


@dataclass
class _Failure:
    count: int
    error: BaseException


class _Abort(Exception):
    """Internal: the open transaction must be aborted and its input re-read."""


class ExactlyOnceRuntime:
    """Runs one processor on Kafka with exactly-once semantics (see the module docstring)."""

    def __init__(
        self,
        processor: Processor,
        settings: RuntimeSettings,
        *,
        on_commit: Callable[[CommitReport], None] | None = None,
        on_restore_progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.processor = processor
        self.settings = settings
        self.stats = RuntimeStats()
        self._on_commit = on_commit
        self._on_restore_progress = on_restore_progress
        self._dlq_topic: str | None = settings.dlq_topic or getattr(processor, "dlq_topic", None)
        if settings.on_error == "dead-letter" and self._dlq_topic is None:
            raise ValueError("on_error='dead-letter' needs a dlq_topic (setting or processor attribute)")
        self._changelogs: tuple[str, ...] = tuple(getattr(processor, "changelog_topics", ()) or ())
        self._route_batch: Callable[[list[bytes | None]], BatchRouting | None] | None = getattr(
            processor, "route_batch", None
        )
        self._table_of: Mapping[int, Any] | None = None
        self._table: Mapping[int, tuple[str, list[tuple[str, bytes]], tuple[str, tuple[str, ...]]]] = {}
        self._stop = False
        self._fatal: KafkaError | None = None
        self._callback_error: BaseException | None = None
        self._assigned: set[TP] = set()
        self._next_expected: dict[TP, int] = {}  # drops stale copies after a seek
        # The open transaction.
        self._txn_open = False
        self._txn_started = 0.0
        self._txn_records = 0
        self._txn_first: dict[TP, int] = {}  # first offset read per partition = last committed offset
        self._txn_next: dict[TP, int] = {}  # offsets to commit
        self._txn_in: Counter[str] = Counter()
        self._txn_out: Counter[tuple[str, tuple[str, ...]]] = Counter()
        self._txn_dlq: Counter[str] = Counter()
        self._failures: dict[tuple[str, int, int], _Failure] = {}
        self._transient = 0  # consecutive transient failures
        self._recoveries = 0  # producer replacements since the last commit
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None

    # ------------------------------------------------------------------ public

    @property
    def transactional_id(self) -> str:
        return self.settings.transactional_id

    def request_stop(self) -> None:
        """Ask the loop to commit the open transaction, leave the group and return (signal-safe)."""
        self._stop = True

    def run(
        self,
        stop: Callable[[], bool] | None = None,
        on_tick: Callable[[RuntimeStats], None] | None = None,
        tick_interval_s: float = 10.0,
        between_transactions: Callable[[], None] | None = None,
    ) -> None:
        """Run until ``request_stop()`` or ``stop()`` is true; raise ``FatalRuntimeError`` on fatal errors.

        ``between_transactions`` runs after every loop step that leaves no transaction open (after a
        commit or an abort, or while idle), never while one is open: the place for changes that must
        not split a transaction, such as run-time rule changes. ``on_tick`` may run in either state.
        """
        s = self.settings
        if s.create_topics:
            self.ensure_topics()
        producer = Producer(self._producer_config())
        self._producer = producer
        try:
            self._retrying(lambda: producer.init_transactions(s.kafka_timeout_s), "init_transactions")
        except KafkaException as exc:
            raise self._fatal_error(kafka_error(exc), "init_transactions") from exc
        consumer = Consumer(self._consumer_config())
        self._consumer = consumer
        consumer.subscribe(
            list(self.processor.source_topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info(
            "runtime %s started: sources %s, sinks %s", self.transactional_id,
            ",".join(self.processor.source_topics), ",".join(self.processor.sink_topics),
        )
        next_tick = time.monotonic() + tick_interval_s
        failed: BaseException | None = None
        try:
            try:
                while not self._stop and not (stop is not None and stop()):
                    self._step(consumer, self._current_producer())
                    if between_transactions is not None and not self._txn_open:
                        between_transactions()
                    if on_tick is not None and time.monotonic() >= next_tick:
                        next_tick = time.monotonic() + tick_interval_s
                        on_tick(self.stats)
                if self._txn_open:
                    self._commit(consumer, self._current_producer())
            except KafkaException as exc:  # raised by any client call not handled above (e.g. poll)
                raise self._fatal_error(kafka_error(exc), "kafka client") from exc
        except BaseException as exc:
            failed = exc
            raise
        finally:
            self._close(consumer, self._current_producer(), failed)

    def ensure_topics(self) -> None:
        """Create missing sink topics (and compacted changelog topics) with the sources' partition count."""
        s = self.settings
        admin = AdminClient({**s.client_config, "bootstrap.servers": s.bootstrap_servers})
        metadata = admin.list_topics(timeout=s.kafka_timeout_s)
        existing = metadata.topics
        partitions = s.topic_partitions
        if partitions is None:
            for source in self.processor.source_topics:
                if source in existing and existing[source].error is None:
                    partitions = len(existing[source].partitions)
                    break
        if partitions is None:
            partitions = 6
            log.warning("no source topic exists yet; new sink topics get %d partitions", partitions)
        every = (*self.processor.sink_topics, *self._changelogs, *((self._dlq_topic,) if self._dlq_topic else ()))
        wanted = [t for t in dict.fromkeys(every) if t not in existing]
        if not wanted:
            return
        new = [
            NewTopic(
                t, num_partitions=partitions, replication_factor=s.replication_factor,
                config={"cleanup.policy": "compact"} if t in self._changelogs else {},
            )
            for t in wanted
        ]
        for topic, future in admin.create_topics(new, request_timeout=s.kafka_timeout_s).items():
            try:
                future.result()
                log.info("created topic %s (%d partitions)", topic, partitions)
            except KafkaException as exc:
                if kafka_error(exc).code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise FatalRuntimeError(f"cannot create topic {topic}: {exc}") from exc

    # ------------------------------------------------------------- the loop

    def _producer_config(self) -> dict[str, Any]:
        return producer_config(self.settings, self._on_error)

    def _consumer_config(self) -> dict[str, Any]:
        return consumer_config(self.settings, self._on_error)

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = error
        else:
            log.debug("kafka: %s", error)

    def _step(self, consumer: Consumer, producer: Producer) -> None:
        s = self.settings
        now = time.monotonic()
        if self._txn_open:
            left = self._txn_started + s.commit_interval_ms / 1000.0 - now
            timeout = min(max(left, 0.0), 0.1)
        else:
            timeout = 0.1
        want = max(1, min(s.consume_batch, s.max_batch - self._txn_records))
        # consume(n, t) blocks until n messages or t have passed, which at low input rates delays every
        # record by t: take what is fetched already, else wait for the first record only.
        messages = consumer.consume(want, 0)
        if not messages:
            first = consumer.poll(timeout)
            messages = [] if first is None else [first]
        producer.poll(0)  # serve the producer's error callback (delivery reports are errors only)
        self._check_async_errors()
        if messages:
            try:
                self._process_batch(messages, producer)
            except _Abort:
                return
        if self._txn_open and (
            self._txn_records >= s.max_batch
            or time.monotonic() - self._txn_started >= s.commit_interval_ms / 1000.0
        ):
            self._commit(consumer, producer)

    def _check_async_errors(self) -> None:
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            if isinstance(error, FatalRuntimeError):
                raise error
            raise FatalRuntimeError(f"rebalance callback failed: {error!r}") from error
        if self._fatal is not None:
            raise self._fatal_error(self._fatal, "kafka client")

    def _process_batch(self, messages: list[Message], producer: Producer) -> None:
        assigned = self._assigned
        expected = self._next_expected
        txn_first = self._txn_first
        txn_next = self._txn_next
        txn_in = self._txn_in
        txn_out = self._txn_out
        process = self.processor.process
        produce = producer.produce
        dlq_topic = self._dlq_topic
        failures = self._failures
        max_retries = self.settings.max_retries
        if self.stats.first_record_at is None:
            self.stats.first_record_at = time.monotonic()
        # The processor's batch path (stateless topologies): a decision per value, -1 = process() it.
        # Not while a record of this consumer is being retried (that path counts its failures).
        codes: list[int] | None = None
        table: Mapping[int, tuple[str, list[tuple[str, bytes]], tuple[str, tuple[str, ...]]]] = {}
        values: list[bytes | None] | None = None
        if self._route_batch is not None and not failures:
            values = [m.value() for m in messages]
            routing = self._route_batch(values)
            if routing is not None:
                codes = routing.codes
                table = self._decision_table(routing.decisions)
        decided: dict[int, int] = {}  # code -> records routed by the batch path
        # Partition bookkeeping once per run of messages of one partition (consume returns runs).
        run: TP | None = None
        ours = False  # the run's partition is assigned
        floor = -1  # offsets below it are stale copies (fetched before a seek) or done
        first_open = False  # the run's partition has no first offset in this transaction yet
        for index, m in enumerate(messages):
            error = m.error()
            if error is not None:
                self._message_error(error)
                continue
            topic: str = m.topic()  # type: ignore[assignment]
            partition: int = m.partition()  # type: ignore[assignment]
            offset: int = m.offset()  # type: ignore[assignment]
            if run is None or partition != run[1] or topic != run[0]:
                if run is not None and floor > expected.get(run, -1):
                    expected[run] = txn_next[run] = floor
                run = (topic, partition)
                ours = run in assigned
                floor = expected.get(run, -1)
                first_open = run not in txn_first
            if not ours or offset < floor:
                continue  # fetched before a revoke or a seek: not ours to process
            if not self._txn_open:
                self._begin(producer)
            if first_open:
                txn_first[run] = offset
                first_open = False
            hdrs = m.headers()
            ts = m.timestamp()[1]
            if ts <= 0:
                ts = 0
            code = -1 if codes is None else codes[index]
            record: RawRecord | None = None
            try:
                if code >= 0:
                    d_topic, d_headers, _ = table[code]
                    args: tuple[Any, ...] = (
                        d_topic, values[index], m.key(), -1, None, None, ts,  # type: ignore[index]
                        [*_headers(hdrs), *d_headers] if hdrs else d_headers,
                    )
                    try:
                        produce(*args)
                    except BufferError:
                        self._produce_when_room(producer, args)
                    decided[code] = decided.get(code, 0) + 1
                else:
                    record = _raw_record(
                        topic, partition, offset, m.key(), m.value(), ts, _headers(hdrs) if hdrs else ()
                    )
                    failure = failures.get((topic, partition, offset)) if failures else None
                    if failure is not None and failure.count > max_retries:
                        outs = self._give_up(record, failure)
                    else:
                        outs = process(record)
                    for o in outs:
                        o_topic, o_headers, o_ts, o_part = o.topic, o.headers, o.timestamp_ms, o.partition
                        args = (
                            o_topic, o.value, o.key, -1 if o_part is None else o_part, None, None,
                            ts if o_ts is None else o_ts, list(o_headers) if o_headers else None,
                        )
                        try:
                            produce(*args)
                        except BufferError:
                            self._produce_when_room(producer, args)
                        txn_out[(o_topic, o.tags)] += 1
                        if o_topic == dlq_topic:
                            self._txn_dlq[header_value(o_headers, "error.class") or "unknown"] += 1
            except FatalRuntimeError:
                raise
            except Exception as exc:
                if record is None:
                    record = _raw_record(
                        topic, partition, offset, m.key(), m.value(), ts, _headers(hdrs) if hdrs else ()
                    )
                if isinstance(exc, KafkaException):
                    err = kafka_error(exc)
                    if err.fatal() or self._fatal is not None:
                        raise self._fatal_error(self._fatal or err, "produce") from exc
                self._record_failed(record, exc, messages, index, producer)
            floor = offset + 1
            txn_in[topic] += 1
            self._txn_records += 1
        if run is not None and floor > expected.get(run, -1):
            expected[run] = txn_next[run] = floor
        for code, n in decided.items():
            txn_out[table[code][2]] += n

    def _decision_table(
        self, decisions: Mapping[int, tuple[str, Headers, tuple[str, ...]]]
    ) -> Mapping[int, tuple[str, list[tuple[str, bytes]], tuple[str, tuple[str, ...]]]]:
        """Per decision code: (topic, headers as produce takes them, stats key); cached per decisions."""
        if decisions is not self._table_of:
            self._table_of = decisions
            self._table = {code: (t, list(h), (t, tags)) for code, (t, h, tags) in decisions.items()}
        return self._table

    @staticmethod
    def _produce_when_room(producer: Producer, args: tuple[Any, ...]) -> None:
        """Produce once librdkafka's local queue has room (it sends while we poll)."""
        while True:
            producer.poll(0.05)
            try:
                producer.produce(*args)
                return
            except BufferError:
                continue

    def _message_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise self._fatal_error(error, "consume")
        log.warning("consumer: %s", error)

    def _give_up(self, record: RawRecord, failure: _Failure) -> list[OutRecord]:
        if self.settings.on_error == "fail" or self._dlq_topic is None:
            if self._producer is not None:
                self._abort(self._producer, "giving up")
            raise FatalRuntimeError(
                f"record {record.topic}[{record.partition}]@{record.offset} failed "
                f"{failure.count} times, giving up: {type(failure.error).__name__}: {failure.error}"
            )
        log.error(
            "dead-lettering %s[%d]@%d after %d failures: %s", record.topic, record.partition,
            record.offset, failure.count, failure.error,
        )
        return [dead_letter(record, self._dlq_topic, failure.error, failure.count)]

    def _record_failed(
        self, record: RawRecord, exc: BaseException, batch: list[Message], index: int, producer: Producer
    ) -> None:
        s = self.settings
        key = (record.topic, record.partition, record.offset)
        self.stats.retries += 1
        if isinstance(exc, s.transient_errors):
            self._transient += 1
            log.warning(
                "processing %s[%d]@%d failed (transient, attempt %d, retrying until it works): %s: %s",
                record.topic, record.partition, record.offset, self._transient, type(exc).__name__, exc,
            )
            wait = backoff_seconds(self._transient, s.retry_backoff_ms, s.retry_backoff_max_ms)
            failure = _Failure(0, exc)
        else:
            failure = self._failures.get(key) or _Failure(0, exc)
            self._failures[key] = failure
            failure.count += 1
            failure.error = exc
            log.warning(
                "processing %s[%d]@%d failed (%d/%d): %s: %s", record.topic, record.partition, record.offset,
                failure.count, s.max_retries, type(exc).__name__, exc,
            )
            wait = backoff_seconds(failure.count, s.retry_backoff_ms, s.retry_backoff_max_ms)
        # Every partition of this batch goes back, also those whose records were not reached yet.
        for m in batch[index:]:
            if m.error() is None:
                tp = (m.topic(), m.partition())
                if tp in self._assigned and tp not in self._txn_first:
                    self._txn_first[tp] = m.offset()  # type: ignore[assignment]
        self._abort(producer, f"processing error on {record.topic}[{record.partition}]@{record.offset}")
        if failure.count <= s.max_retries:
            time.sleep(wait)
        raise _Abort

    # ----------------------------------------------------------- transactions

    def _begin(self, producer: Producer) -> None:
        try:
            producer.begin_transaction()
        except KafkaException as exc:
            raise self._fatal_error(kafka_error(exc), "begin_transaction") from exc
        self._txn_open = True
        self._txn_started = time.monotonic()

    def _commit(self, consumer: Consumer, producer: Producer) -> bool:
        """Commit the open transaction with its offsets; on an abortable error abort and rewind."""
        s = self.settings
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._txn_next.items()]
        started = time.perf_counter()
        try:
            # State changes the processor kept in its write-back cache: in this transaction, before the offsets.
            for o in getattr(self.processor, "flush", list)():
                args = (o.topic, o.value, o.key, -1 if o.partition is None else o.partition, None, None,
                        o.timestamp_ms or 0, list(o.headers) if o.headers else None)  # fmt: skip
                try:
                    producer.produce(*args)
                except BufferError:
                    self._produce_when_room(producer, args)
                self._txn_out[(o.topic, o.tags)] += 1
            if offsets:
                self._retrying(
                    lambda: producer.send_offsets_to_transaction(
                        offsets, consumer.consumer_group_metadata(), s.kafka_timeout_s
                    ),
                    "send_offsets_to_transaction",
                )
            self._retrying(lambda: producer.commit_transaction(s.kafka_timeout_s), "commit_transaction")
        except KafkaException as exc:
            err = kafka_error(exc)
            if err.txn_requires_abort() and not err.fatal():
                log.warning("commit failed (%s): aborting and re-reading", err)
                self._abort(producer, str(err))
                return False
            if err.fatal() and not is_fenced(err):
                self._recover(err, "commit_transaction")
                return False
            raise self._fatal_error(err, "commit_transaction") from exc
        seconds = time.perf_counter() - started
        self._committed(seconds)
        return True

    def _committed(self, seconds: float) -> None:
        self._transient = 0
        self._recoveries = 0
        st = self.stats
        st.transactions_committed += 1
        st.last_commit_at = time.monotonic()
        st.commit_seconds.append(seconds)
        st.records_in += sum(self._txn_in.values())
        st.records_in_by_topic.update(self._txn_in)
        for (topic, tags), n in self._txn_out.items():
            st.records_out[topic] += n
            st.branches[tags[0] if tags else ""] += n
        st.dead_letters += sum(self._txn_dlq.values())
        if self._failures:
            done = self._txn_next
            self._failures = {
                k: f for k, f in self._failures.items() if k[2] >= done.get((k[0], k[1]), 0)
            }
        if self._on_commit is not None:
            self._on_commit(
                CommitReport(dict(self._txn_in), dict(self._txn_out), dict(self._txn_dlq), seconds)
            )
        self._reset_txn()

    def _reset_txn(self) -> None:
        self._txn_open = False
        self._txn_records = 0
        self._txn_first = {}
        self._txn_next = {}
        self._txn_in = Counter()
        self._txn_out = Counter()
        self._txn_dlq = Counter()

    def _abort(self, producer: Producer, reason: str) -> None:
        """Abort the open transaction and seek its partitions back to their last committed offsets."""
        if self._txn_open:
            try:
                self._retrying(
                    lambda: producer.abort_transaction(self.settings.kafka_timeout_s), "abort_transaction"
                )
            except KafkaException as exc:
                err = kafka_error(exc)
                if err.fatal() and not is_fenced(err):
                    self._recover(err, "abort_transaction")
                    return
                raise self._fatal_error(err, "abort_transaction") from exc
            self.stats.transactions_aborted += 1
            log.info("transaction aborted: %s", reason)
        consumer = self._consumer
        rewound: list[TP] = []
        for tp, offset in self._txn_first.items():
            if tp in self._assigned and consumer is not None:
                self._seek(consumer, tp, offset)
                rewound.append(tp)
        self._reset_txn()
        if self._changelogs and rewound:
            # The aborted transaction's state changes are gone from the changelog: rebuild the state.
            parts = sorted(self._assigned)
            self._call_processor("revoked", parts)
            self._call_processor("assigned", parts)
            self._restore(parts)

    def _current_producer(self) -> Producer:
        assert self._producer is not None
        return self._producer

    def _recover(self, error: KafkaError, where: str) -> None:
        """A fatal producer error that is not fencing: replace the producer and re-read from the broker's offsets.

        ``init_transactions`` of the new producer (same transactional.id) completes or aborts whatever
        the old one left open, so the group's committed offsets are then the truth to rewind to. (Seen:
        librdkafka gets INVALID_TXN_STATE when aborting a transaction whose partition registration
        had not completed yet.)
        """
        self._recoveries += 1
        if self._recoveries > 5:
            raise self._fatal_error(error, f"{where} (after {self._recoveries - 1} producer replacements)")
        log.warning("%s: %s: %s; replacing the producer", where, error.name(), error.str())
        old = self._producer
        if old is not None:
            with contextlib.suppress(Exception):
                old.purge()
        producer = Producer(self._producer_config())
        try:
            self._retrying(lambda: producer.init_transactions(self.settings.kafka_timeout_s), "init_transactions")
        except KafkaException as exc:
            raise self._fatal_error(kafka_error(exc), "init_transactions") from exc
        self._producer = producer
        self._fatal = None
        self.stats.transactions_aborted += 1
        consumer = self._consumer
        parts = [tp for tp in self._txn_first if tp in self._assigned]
        self._reset_txn()
        if consumer is None or not parts:
            return
        committed = consumer.committed([TopicPartition(t, p) for t, p in parts], timeout=self.settings.kafka_timeout_s)
        for tp in committed:
            self._seek(consumer, (tp.topic, tp.partition), tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
        if self._changelogs:
            everything = sorted(self._assigned)
            self._call_processor("revoked", everything)
            self._call_processor("assigned", everything)
            self._restore(everything)

    def _seek(self, consumer: Consumer, tp: TP, offset: int) -> None:
        for attempt in range(50):
            try:
                consumer.seek(TopicPartition(tp[0], tp[1], offset))
                break
            except KafkaException as exc:
                if attempt == 49:
                    raise FatalRuntimeError(f"cannot rewind {tp[0]}[{tp[1]}] to {offset}: {exc}") from exc
                time.sleep(0.1)
        self._next_expected[tp] = offset

    def _retrying(self, call: Callable[[], None], what: str) -> None:
        """Run a transactional call, repeating it while librdkafka says the error is retriable."""
        deadline = time.monotonic() + self.settings.kafka_timeout_s * 2
        while True:
            try:
                call()
                return
            except KafkaException as exc:
                err = kafka_error(exc)
                if err.retriable() and not err.fatal() and time.monotonic() < deadline:
                    log.info("%s: retriable error %s, retrying", what, err)
                    time.sleep(0.1)
                    continue
                raise

    def _fatal_error(self, error: KafkaError, where: str) -> FatalRuntimeError:
        if is_fenced(error):
            return FencedError(
                f"{self.transactional_id} was fenced ({where}: {error.name()}: {error.str()}): another "
                "instance with the same transactional.id took over; this instance stops without committing"
            )
        return FatalRuntimeError(f"fatal Kafka error in {where}: {error.name()}: {error.str()}")

    # ------------------------------------------------------------- rebalance

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            parts = [(tp.topic, tp.partition) for tp in partitions]
            if not parts:
                return
            log.info("assigned %s", _fmt(parts))
            for tp in parts:
                self._assigned.add(tp)
                self._next_expected.pop(tp, None)
            self._call_processor("assigned", parts)
            self._restore(parts)
        except BaseException as exc:
            self._callback_error = exc

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            parts = [(tp.topic, tp.partition) for tp in partitions]
            if not parts:
                return
            log.info("revoked %s", _fmt(parts))
            producer = self._producer
            if self._txn_open and producer is not None and self._fatal is None:
                # We still own the partitions: finish the transaction before giving them up.
                self._commit(consumer, producer)
            self._forget(parts)
        except BaseException as exc:
            self._forget([(tp.topic, tp.partition) for tp in partitions])
            self._callback_error = exc

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            parts = [(tp.topic, tp.partition) for tp in partitions]
            log.warning("lost %s (session expired): aborting the open transaction", _fmt(parts))
            producer = self._producer
            if self._txn_open and producer is not None and self._fatal is None:
                lost = set(parts)
                self._txn_first = {tp: o for tp, o in self._txn_first.items() if tp not in lost}
                self._abort(producer, "partitions lost")
            self._forget(parts)
        except BaseException as exc:
            self._forget([(tp.topic, tp.partition) for tp in partitions])
            self._callback_error = exc

    def _forget(self, parts: list[TP]) -> None:
        for tp in parts:
            self._assigned.discard(tp)
            self._next_expected.pop(tp, None)
            self._txn_first.pop(tp, None)
            self._txn_next.pop(tp, None)
        gone = set(parts)
        self._failures = {k: f for k, f in self._failures.items() if (k[0], k[1]) not in gone}
        self._call_processor("revoked", parts)

    def _call_processor(self, name: str, parts: list[TP]) -> None:
        hook = getattr(self.processor, name, None)
        if hook is not None and parts:
            hook(parts)

    # --------------------------------------------------------------- restore

    def _restore(self, parts: list[TP]) -> None:
        """Replay the changelog partitions of ``parts`` (read_committed, start to end) into the processor.

        Which changelog partitions: the processor's ``changelog_partitions(topic, partition)`` when it
        has one, else the same partition number of every changelog topic.
        """
        restore = getattr(self.processor, "restore", None)
        if not self._changelogs or restore is None:
            return
        mapping = getattr(self.processor, "changelog_partitions", None)
        wanted: set[TP] = set()
        for topic, p in parts:
            if mapping is not None:
                wanted.update(mapping(topic, p))
            else:
                wanted.update((c, p) for c in self._changelogs)
        if not wanted:
            return
        s = self.settings
        reader = Consumer(
            {
                **s.client_config,
                "bootstrap.servers": s.bootstrap_servers,
                "group.id": f"{s.application_id}-restore",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
        # The end is the high watermark (read_uncommitted): a transaction still open on the changelog
        # (a crashed previous owner's) is waited for, so its outcome is known before processing resumes.
        # The read_committed reader's position moves past aborted records and markers to that end.
        probe = Consumer(
            {**s.client_config, "bootstrap.servers": s.bootstrap_servers, "group.id": f"{s.application_id}-restore",
             "isolation.level": "read_uncommitted"}
        )
        try:
            ends: dict[TP, int] = {}
            for topic, p in sorted(wanted):
                high = self._high_watermark(probe, TopicPartition(topic, p))
                if high > 0:
                    ends[(topic, p)] = high
        finally:
            probe.close()
        try:
            total = sum(ends.values())
            if not ends:
                return
            reader.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
            done = 0
            last_report = time.monotonic()
            pending = dict(ends)
            while pending:
                for m in reader.consume(5000, 0.5):
                    if m.error() is not None:
                        if m.error().fatal():  # type: ignore[union-attr]
                            raise FatalRuntimeError(f"restore failed: {m.error()}")
                        continue
                    restore(
                        RawRecord(
                            m.topic(), m.partition(), m.offset(), m.key(), m.value(),  # type: ignore[arg-type]
                            m.timestamp()[1], _headers(m.headers()),
                        )
                    )
                    done += 1
                    self.stats.restored += 1
                positions = reader.position([TopicPartition(t, p) for t, p in pending])
                for tp in positions:
                    if tp.offset >= 0 and tp.offset >= pending[(tp.topic, tp.partition)]:
                        del pending[(tp.topic, tp.partition)]
                if time.monotonic() - last_report >= 1.0 or not pending:
                    last_report = time.monotonic()
                    log.info("restoring %s: %d records (end offsets sum %d)", _fmt(parts), done, total)
                    if self._on_restore_progress is not None:
                        self._on_restore_progress(",".join(self._changelogs), done, total)
        finally:
            reader.close()

    def _high_watermark(self, probe: Consumer, tp: TopicPartition) -> int:
        """The partition's high watermark, waiting out a leader election (a just-created topic)."""
        deadline = time.monotonic() + self.settings.kafka_timeout_s
        while True:
            try:
                return int(probe.get_watermark_offsets(tp, timeout=self.settings.kafka_timeout_s, cached=False)[1])
            except KafkaException as exc:
                err = kafka_error(exc)
                if err.fatal() or time.monotonic() > deadline:
                    raise
                log.info("watermarks of %s[%d]: %s, retrying", tp.topic, tp.partition, err.str())
                time.sleep(0.2)

    # ----------------------------------------------------------------- close

    def _close(self, consumer: Consumer, producer: Producer, failed: BaseException | None) -> None:
        if failed is not None:
            # Commit nothing more: on_revoke (called by close) sees this and skips its commit.
            self._fatal = self._fatal or KafkaError(KafkaError._FATAL, repr(failed), fatal=True)
        with contextlib.suppress(Exception):
            consumer.close()  # leaves the group
        if not isinstance(failed, FatalRuntimeError) and self._txn_open:
            with contextlib.suppress(Exception):
                producer.abort_transaction(self.settings.kafka_timeout_s)
        if failed is None:
            producer.flush(self.settings.kafka_timeout_s)
        log.info(
            "runtime %s stopped: %d in, %d out, %d dead letters, %d commits, %d aborts",
            self.transactional_id, self.stats.records_in, sum(self.stats.records_out.values()),
            self.stats.dead_letters, self.stats.transactions_committed, self.stats.transactions_aborted,
        )


def producer_config(s: RuntimeSettings, error_cb: Callable[[KafkaError], None] | None = None) -> dict[str, Any]:
    """The transactional producer's configuration (also used by the benchmark's raw copy loop)."""
    config: dict[str, Any] = {
        **s.client_config,
        "bootstrap.servers": s.bootstrap_servers,
        "transactional.id": s.transactional_id,
        "enable.idempotence": True,
        "transaction.timeout.ms": s.transaction_timeout_ms,
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "delivery.report.only.error": True,
    }
    if error_cb is not None:
        config["error_cb"] = error_cb
    config.update(s.producer_config)
    return config


def consumer_config(s: RuntimeSettings, error_cb: Callable[[KafkaError], None] | None = None) -> dict[str, Any]:
    """The read_committed, manually committed, cooperative-sticky consumer's configuration."""
    config: dict[str, Any] = {
        **s.client_config,
        "bootstrap.servers": s.bootstrap_servers,
        "group.id": s.application_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": s.session_timeout_ms,
        "heartbeat.interval.ms": max(500, s.session_timeout_ms // 5),
        "max.poll.interval.ms": s.max_poll_interval_ms,
        "fetch.wait.max.ms": 50,
    }
    if error_cb is not None:
        config["error_cb"] = error_cb
    if s.group_instance_id:
        config["group.instance.id"] = s.group_instance_id
    config.update(s.consumer_config)
    return config


_RAW_FIELDS = ("topic", "partition", "offset", "key", "value", "timestamp_ms", "headers")
if tuple(f.name for f in dataclasses.fields(RawRecord)) != _RAW_FIELDS:
    raise ImportError("RawRecord's fields changed: update topology.runtime._raw_record")
_NEW = object.__new__
_SET_TOPIC, _SET_PARTITION, _SET_OFFSET, _SET_KEY, _SET_VALUE, _SET_TS, _SET_HEADERS = (
    getattr(RawRecord, name).__set__ for name in _RAW_FIELDS
)


def _raw_record(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, ts: int, headers: Headers
) -> RawRecord:
    """``RawRecord(...)`` at half the cost: the slots are set directly, not through the frozen
    dataclass ``__init__`` (one ``object.__setattr__`` call per field); same resulting value."""
    r: RawRecord = _NEW(RawRecord)
    _SET_TOPIC(r, topic)
    _SET_PARTITION(r, partition)
    _SET_OFFSET(r, offset)
    _SET_KEY(r, key)
    _SET_VALUE(r, value)
    _SET_TS(r, ts)
    _SET_HEADERS(r, headers)
    return r


def _headers(hdrs: Any) -> Headers:
    """Consumer headers (a list of ``(name, bytes | None)``) as a ``RawRecord`` tuple."""
    if not hdrs:
        return ()
    return tuple((k, v if v is not None else b"") for k, v in hdrs)


def _fmt(parts: Iterable[TP]) -> str:
    return ",".join(f"{t}[{p}]" for t, p in sorted(parts))

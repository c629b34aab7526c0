"""Helpers of the exactly-once proofs: unique topologies, fast Avro input, exhaustive readers.

Nothing here mocks Kafka: the readers read real topics to their end offsets and the
detector runs as a real subprocess (``python -m services detect``).
"""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from fastavro import parse_schema, schemaless_reader

from schemas import schema_text
from services.config import KafkaSettings
from services.kafka import end_offsets as kafka_end_offsets
from services.rules.feed import publish
from topology.serde.decoder import AvroEncoder

ROOT = Path(__file__).resolve().parents[2]
TX_SCHEMA = parse_schema(__import__("json").loads(schema_text("transaction")))


@dataclass(frozen=True)
class Topics:
    """Unique topic and id names of one test."""

    unique: str
    transactions: str
    legit: str
    fraud: str
    dlq: str
    application_id: str

    @classmethod
    def make(cls, unique: str) -> Topics:
        return cls(
            unique,
            f"eos-{unique}.transactions",
            f"eos-{unique}.legit",
            f"eos-{unique}.fraud",
            f"eos-{unique}.dlq",
            f"eos-{unique}-detector",
        )

    @property
    def alerts(self) -> str:
        return f"eos-{self.unique}.alerts"

    @property
    def outputs(self) -> tuple[str, str, str]:
        return (self.legit, self.fraud, self.dlq)


def stateless_topology(t: Topics) -> str:
    """The issue-4 detector: the tutorial's rule (``amount >= 900``) decides fraud; the rest is legit."""
    return f"""\
topology: eos-{t.unique}
source:
  topic: {t.transactions}
  key: [source_account]
  time: event_time
dlq: {t.dlq}
rules:
  - id: large-amount
    version: 1
    when: amount >= 900
branches:
  - name: fraud
    to: {t.fraud}
    rules: [large-amount]
default_branch:
  name: legit
  to: {t.legit}
"""


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        future.result(timeout=30)


@dataclass(frozen=True)
class Sent:
    """One input transaction as produced (in produce order)."""

    transaction_id: str
    key: bytes
    amount: Decimal


def transactions(count: int, seed: int, accounts: int = 500) -> Iterator[dict[str, Any]]:
    """Deterministic transactions: ~5% of amounts >= 900 (the tutorial's fraud)."""
    rnd = random.Random(seed)
    start = 1_780_000_000_000
    for i in range(count):
        large = rnd.random() < 0.05
        cents = rnd.randint(90_000, 500_000) if large else rnd.randint(100, 89_999)
        yield {
            "transaction_id": f"{seed:08x}{i:024x}",
            "source_account": f"acct-{rnd.randrange(accounts):05d}",
            "target_account": f"acct-{rnd.randrange(accounts):05d}",
            "amount": Decimal(cents).scaleb(-2),
            "currency": "EUR",
            "event_time": start + i * 10,
            "channel": "card",
            "country": "NL",
            "merchant_category": None,
        }


def produce_transactions(
    bootstrap: str, registry: Any, topic: str, count: int, *, seed: int = 1,
    poison_every: int = 0,
) -> tuple[list[Sent], list[bytes]]:
    """Produce ``count`` Avro transactions (and, with ``poison_every``, malformed values between them)."""
    encoder = AvroEncoder(registry, schema_text("transaction"), f"{topic}-value")
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True,
                         "queue.buffering.max.messages": 1_000_000})
    sent: list[Sent] = []
    poison: list[bytes] = []
    for i, tx in enumerate(transactions(count, seed)):
        key = tx["source_account"].encode()
        if poison_every and i % poison_every == poison_every // 2:
            bad = _poison(len(poison), encoder.encode(tx))
            poison.append(bad)
            _produce(producer, topic, bad, key)
        _produce(producer, topic, encoder.encode(tx), key)
        sent.append(Sent(tx["transaction_id"], key, tx["amount"]))
    assert producer.flush(60) == 0
    return sent, poison


POISON_REASONS = ("not-wire-format", "unknown-schema", "truncated", "invalid-avro")


def _poison(n: int, good: bytes) -> bytes:
    """The ``n``-th malformed value, cycling through ``POISON_REASONS``."""
    kinds = [
        b"not avro at all " + str(n).encode(),  # wrong magic byte
        b"\x00\x7f\xff\xff\xf0" + good[5:],  # unknown schema id
        good[: len(good) // 2],  # truncated
        good + b"\x00\x00",  # a valid record followed by bytes that belong to no field
    ]
    return kinds[n % len(kinds)]


def _produce(producer: Producer, topic: str, value: bytes, key: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:
            producer.poll(0.1)


@dataclass
class Output:
    """One record read from an output topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes] = field(default_factory=dict)

    def transaction_id(self) -> str:
        assert self.value is not None
        buf = io.BytesIO(self.value)
        buf.seek(5)
        record = schemaless_reader(buf, TX_SCHEMA, None)
        assert isinstance(record, dict)
        return str(record["transaction_id"])


def end_offsets(bootstrap: str, topics: tuple[str, ...], isolation: str) -> dict[tuple[str, int], int]:
    """End offsets as a reader with ``isolation`` sees them (read_committed: the last stable offset)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "eos-probe", "isolation.level": isolation})
    try:
        ends: dict[tuple[str, int], int] = {}
        for topic in topics:
            meta = c.list_topics(topic, timeout=30).topics[topic]
            # services.kafka.end_offsets waits out a partition without a leader yet (just created)
            ends.update(((topic, p), o) for p, o in kafka_end_offsets(c, topic, meta.partitions, timeout_s=30).items())
        return ends
    finally:
        c.close()


def read_all(bootstrap: str, topics: tuple[str, ...], isolation: str, timeout_s: float = 90.0) -> list[Output]:
    """Every record of ``topics`` up to their high watermarks, read with ``isolation``.

    With read_committed the reader's position must reach the high watermark (commit markers
    included): a transaction left hanging would stop it at the last stable offset and fail here.
    """
    ends = {tp: o for tp, o in end_offsets(bootstrap, topics, "read_uncommitted").items() if o > 0}
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "eos-reader", "isolation.level": isolation,
                  "enable.auto.commit": False})
    out: list[Output] = []
    try:
        c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
        pending = dict(ends)
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"{isolation} reader stuck before the end of {sorted(pending)}")
            for m in c.consume(10_000, 0.5):
                if m.error() is not None:
                    continue
                headers = cast(list[tuple[str, bytes | None]], m.headers() or [])
                out.append(Output(m.topic(), m.partition(), m.offset(), m.key(), m.value(),  # type: ignore[arg-type]
                                  {k: v or b"" for k, v in headers}))
            for tp in c.position([TopicPartition(t, p) for t, p in pending]):
                if tp.offset >= pending[(tp.topic, tp.partition)]:
                    del pending[(tp.topic, tp.partition)]
        return out
    finally:
        c.close()


def connection(bootstrap: str, registry_url: str) -> KafkaSettings:
    """The connection section for these endpoints (and the environment's security settings)."""
    return KafkaSettings.with_overrides(bootstrap_servers=bootstrap, schema_registry_url=registry_url)


def rules_topology(bootstrap: str, registry_url: str, name: str, tmp_path: Path, partitions: int
                   ) -> tuple[Topics, str, Path]:
    """Topics named after ``name``, the input created with ``partitions``, the stateless topology
    written to ``tmp_path``, and rule ``big@1`` (amount >= 5000) published to ``<name>.rules``.
    Returns the topics, the rules topic and the topology file."""
    t = Topics.make(name)
    rules_topic = f"{name}.rules"
    create_topics(bootstrap, [t.transactions], partitions)
    topology = tmp_path / "topology.yaml"
    topology.write_text(stateless_topology(t))
    publish(connection(bootstrap, registry_url), rules_topic, "big",
            {"id": "big", "version": 1, "definition": "when: amount >= 5000"})  # fmt: skip
    return t, rules_topic, topology


def read_until(bootstrap: str, topics: tuple[str, ...], isolation: str, count: int,
               timeout_s: float = 60.0) -> list[Output]:
    """``read_all`` again until it returns ``count`` records; fails if there are more, or fewer in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = read_all(bootstrap, topics, isolation)
        if len(out) >= count or time.monotonic() > deadline:
            assert len(out) == count, f"{len(out)} {isolation} outputs, expected {count}"
            return out
        time.sleep(0.3)


class GroupProgress:
    """The sum of a group's committed offsets on one topic, read over one long-lived consumer.

    ``read_uncommitted`` on purpose: librdkafka asks a ``read_committed`` consumer's offset fetch
    for *stable* offsets, which blocks while a killed instance's transactional offset commit is
    pending (until the broker aborts it). The last committed offsets are what is wanted here.
    The consumer never subscribes, so it never joins the group it reads.
    """

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                   "isolation.level": "read_uncommitted", "enable.auto.commit": False})
        parts = self._consumer.list_topics(topic, timeout=30).topics[topic].partitions
        self._partitions = [TopicPartition(topic, p) for p in parts]

    def __enter__(self) -> GroupProgress:
        return self

    def __exit__(self, *_: object) -> None:
        self._consumer.close()

    def committed(self) -> int:
        """Sum of the committed offsets (0 for partitions without one)."""
        return sum(max(tp.offset, 0) for tp in self._consumer.committed(self._partitions, timeout=30))


def committed_offsets(bootstrap: str, group: str, topic: str) -> int:
    """One reading of :class:`GroupProgress`."""
    with GroupProgress(bootstrap, group, topic) as progress:
        return progress.committed()


RUNNING = " started: sources "  # the runtime's start line, logged once the stop handlers are set


class Service:
    """``python -m services <command> ...`` as a subprocess (its output goes to a log file)."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None, *, started: str) -> None:
        self.started_line = started  # logged once the service's stop handlers are set
        self.log = log
        self._since = log.stat().st_size if log.exists() else 0  # where this run's output starts in the log
        self._file = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services", *args],
            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})},
            stdout=self._file, stderr=subprocess.STDOUT,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig``; a stop request (SIGTERM, SIGINT) only once the service runs, so its handler is
        set (sent while Python is still importing, it would kill the process with the default action)."""
        if sig in (signal.SIGTERM, signal.SIGINT):
            deadline = time.monotonic() + 120
            while not self.logged(self.started_line) and self.proc.poll() is None:
                assert time.monotonic() < deadline, f"not running after 120 s:\n{self.output()[-3000:]}"
                time.sleep(0.1)
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._file.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def logged(self, text: str) -> bool:
        """Whether this run (not an earlier one writing to the same log) logged ``text``."""
        with self.log.open("rb") as f:
            f.seek(self._since)
            return text in f.read().decode(errors="replace")

    def wait_for_log(self, text: str, timeout_s: float = 30.0) -> None:
        """Wait until this run logs ``text``; fail with the log's tail if it does not within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.logged(text):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged:\n{self.output()[-3000:]}")
            time.sleep(0.2)


class Detector(Service):
    """``python -m services detect`` on ``topology`` as a subprocess."""

    def __init__(self, bootstrap: str, registry_url: str, topology: Path, app_id: str, instance_id: str,
                 log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        # No run-time rules unless a test asks (FRAUDSTREAM_DETECTOR_RULES_TOPIC in its own env):
        # the canonical rules topic of a shared broker must not change another test's decisions.
        super().__init__(
            ["detect", "--topology", str(topology), "--application-id", app_id, "--instance-id", instance_id,
             "--stats-interval-s", "1", "--session-timeout-ms", "6000", *args],
            log,
            {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SCHEMA_REGISTRY_URL": registry_url,
             "FRAUDSTREAM_DETECTOR_RULES_TOPIC": os.environ.get("FRAUDSTREAM_DETECTOR_RULES_TOPIC", ""),
             **(env or {})},
            started=RUNNING,
        )  # fmt: skip

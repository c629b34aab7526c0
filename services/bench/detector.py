"""Detector benchmark: the exactly-once runtime against a raw exactly-once copy loop, then latency.

In one run, on unique topics of the broker:
1. preload N Avro transactions (the generator's pure stream + the Avro encoder);
2. (a) a raw consume -> produce exactly-once copy loop written directly on confluent_kafka, with the
   runtime's own producer/consumer configuration, commit interval and batch sizes;
3. (b) the detector runtime with the fraud topology (``topology/fraud.yaml``, stateful rules and a
   repartition stage), and (b') with the stateless tutorial rule only; each until every output is
   committed. Throughput is N / (last commit - first record consumed);
4. end-to-end latency at a fixed input rate: the detector runs as a subprocess
   (``python -m services detect``); this process produces at the rate and reads the outputs with a
   read_committed consumer; latency = time visible - the input's produce timestamp (the runtime keeps
   the input timestamp on its outputs).
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import os
import platform
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

import schemas
from services.config import GeneratorSettings, KafkaSettings
from services.generator.produce import stream_config
from services.generator.scenarios import TransactionStream
from services.kafka import check_broker, check_registry, ensure_topics
from services.kafka import consumer_config as kafka_consumer_config
from services.kafka import producer_config as kafka_producer_config
from topology.columnar import ColumnarDecoder
from topology.processor import TopologyProcessor
from topology.projection import ProjectionDecoder
from topology.runtime import (
    ExactlyOnceRuntime,
    RuntimeSettings,
    consumer_config,
    producer_config,
    quantile,
)
from topology.serde import AvroEncoder, RegistryError
from topology.yaml_loader import DEFAULT_PATH, loads_topology

Log = Callable[[str], None]


@dataclass
class Throughput:
    """One measured exactly-once pass over the preloaded input."""

    name: str
    records: int
    seconds: float
    transactions: int
    ratio_to_raw: float | None = None

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Latency:
    """End-to-end latency at a fixed input rate."""

    target_rate: float
    achieved_rate: float
    records: int
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass
class Report:
    machine: dict[str, Any]
    count: int
    partitions: int
    commit_interval_ms: int
    preload_per_second: float
    results: list[Throughput] = field(default_factory=list)
    latency: Latency | None = None
    profile: str | None = None

    def as_json(self) -> dict[str, Any]:
        doc = asdict(self)
        for r, d in zip(self.results, doc["results"], strict=True):
            d["per_second"] = round(r.per_second, 1)
        return doc


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def renamed_topology(text: str, prefix: str, stateless: bool = False) -> str:
    """``fraud.yaml`` with unique topic names (and topology name, the prefix of its internal topics)."""
    names = {
        "queueing.transactions": f"{prefix}.transactions",
        "streaming.transactions.legit": f"{prefix}.legit",
        "streaming.transactions.fraud": f"{prefix}.fraud",
        "streaming.transactions.dlq": f"{prefix}.dlq",
    }
    if stateless:
        return (
            f"topology: {prefix}\nsource:\n  topic: {names['queueing.transactions']}\n"
            f"  key: [source_account]\n  time: event_time\ndlq: {names['streaming.transactions.dlq']}\n"
            "rules:\n  - id: large-amount\n    version: 1\n    when: amount >= 900\n"
            f"branches:\n  - name: fraud\n    to: {names['streaming.transactions.fraud']}\n"
            "    rules: [large-amount]\n"
            f"default_branch:\n  name: legit\n  to: {names['streaming.transactions.legit']}\n"
        )
    out = re.sub(r"^topology:.*$", f"topology: {prefix}", text, count=1, flags=re.M)
    for old, new in names.items():
        out = re.sub(rf"(?<![\w.]){re.escape(old)}(?![\w.])", new, out)
    return out


class DetectorBench:
    """The whole benchmark; every topic and group is unique to one run and deleted at the end."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        count: int,
        partitions: int = 6,
        commit_interval_ms: int = 100,
        max_batch: int = 10_000,
        consume_batch: int = 2_000,
        log: Log = print,
    ) -> None:
        self.kafka = kafka
        self.bootstrap = kafka.bootstrap_servers
        self.registry_url = kafka.schema_registry_url
        self.count = count
        self.partitions = partitions
        self.commit_interval_ms = commit_interval_ms
        self.max_batch = max_batch
        self.consume_batch = consume_batch
        self.log = log
        self.run_id = uuid.uuid4().hex[:8]
        self.input = f"bench-{self.run_id}.transactions"
        self.admin = check_broker(kafka)
        self.registry = check_registry(kafka)
        self.created: set[str] = set()

    # ----------------------------------------------------------- helpers

    def _topics(self, names: list[str]) -> None:
        new = [n for n in names if n not in self.created]
        ensure_topics(self.admin, new, partitions=self.partitions, replication_factor=-1, timeout_s=30)
        self.created.update(new)

    def cleanup(self) -> None:
        existing = set(self.admin.list_topics(timeout=30).topics)
        mine = [t for t in existing if t.startswith((f"bench-{self.run_id}", f"bench-{self.run_id}-"))]
        if mine:
            for future in self.admin.delete_topics(mine).values():
                with contextlib.suppress(KafkaException):
                    future.result(timeout=30)

    def _settings(self, app: str, **extra: Any) -> RuntimeSettings:
        return RuntimeSettings(
            bootstrap_servers=self.bootstrap,
            client_config=self.kafka.client_config(),
            application_id=app,
            instance_id="bench",
            commit_interval_ms=self.commit_interval_ms,
            max_batch=self.max_batch,
            consume_batch=self.consume_batch,
            **extra,
        )

    # ----------------------------------------------------------- phases

    def preload(self, topic: str | None = None, count: int | None = None) -> float:
        """Produce ``count`` generated transactions to ``topic``; returns records per second."""
        topic = topic or self.input
        count = count or self.count
        self._topics([topic])
        encoder = AvroEncoder(self.registry, schemas.schema_text("transaction"), f"{topic}-value")
        stream = TransactionStream(stream_config(GeneratorSettings.with_overrides(seed=42, rate=0)))
        producer = Producer(kafka_producer_config(self.kafka))
        started = time.perf_counter()
        encode, produce = encoder.encode, producer.produce
        for i in range(count):
            g = next(stream)
            value = encode(g.record)
            key = g.record["source_account"].encode()
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
            if i % 50_000 == 0 and i:
                self.log(f"  preloaded {i:,}")
        if producer.flush(120) != 0:
            raise RuntimeError("preload: records left unsent")
        return count / (time.perf_counter() - started)

    def raw_copy(self, headers: list[tuple[str, str | bytes | None]] | None = None) -> Throughput:
        """(a) consume -> produce -> send offsets -> commit, directly on confluent_kafka; with ``headers``,
        (a') the same loop writing those headers on every record instead of copying the input's."""
        tag = "raw-headers" if headers is not None else "raw-copy"
        out = f"bench-{self.run_id}.{tag}"
        self._topics([out])
        s = self._settings(f"bench-{self.run_id}-{tag}")
        producer = Producer(producer_config(s))
        producer.init_transactions(30)
        consumer = Consumer(consumer_config(s))
        consumer.subscribe([self.input])
        interval = self.commit_interval_ms / 1000.0
        copied = in_txn = txns = 0
        offsets: dict[tuple[str, int], int] = {}
        first: float | None = None
        started = 0.0
        produce = producer.produce
        while copied < self.count:
            timeout = max(0.0, min(0.1, started + interval - time.monotonic())) if in_txn else 0.1
            messages = consumer.consume(min(self.consume_batch, self.max_batch - in_txn), timeout)
            for m in messages:
                if m.error() is not None:
                    continue
                if not in_txn:
                    producer.begin_transaction()
                    started = time.monotonic()
                    if first is None:
                        first = started
                while True:
                    try:
                        produce(out, m.value(), m.key(), headers=m.headers() if headers is None else headers)
                        break
                    except BufferError:
                        producer.poll(0.05)
                offsets[(m.topic(), m.partition())] = m.offset() + 1  # type: ignore[index,operator]
                in_txn += 1
            if in_txn and (
                in_txn >= self.max_batch or time.monotonic() - started >= interval or copied + in_txn >= self.count
            ):
                producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    consumer.consumer_group_metadata(),
                    30,
                )
                producer.commit_transaction(30)
                copied += in_txn
                in_txn = 0
                txns += 1
                offsets = {}
        seconds = time.monotonic() - (first or time.monotonic())
        consumer.close()
        name = "(a) raw exactly-once copy loop (confluent_kafka)"
        if headers is not None:
            name = f"(a') the same loop, writing the detector's {len(headers)} decision headers"
        return Throughput(name, copied, seconds, txns)

    def detector(self, name: str, stateless: bool, profile: bool = False) -> tuple[Throughput, str | None]:
        """(b) the runtime with a topology over the preloaded input, until every output is committed."""
        tag = "stateless" if stateless else "fraud"
        prefix = f"bench-{self.run_id}-{tag}"
        text = renamed_topology(DEFAULT_PATH.read_text(encoding="utf-8"), prefix, stateless)
        text = text.replace(f"{prefix}.transactions", self.input)
        topology = loads_topology(text, filename=f"<{tag} bench topology>")
        decoder = ProjectionDecoder.for_topology(self.registry, topology, schemas.schema_text("transaction"))
        columnar = ColumnarDecoder(self.registry, schemas.schema_text("transaction"))
        processor = TopologyProcessor(topology, decoder, version="bench", columnar=columnar)
        runtime = ExactlyOnceRuntime(
            processor,
            self._settings(
                f"bench-{self.run_id}-{tag}",
                dlq_topic=topology.dlq,
                transient_errors=(RegistryError,),
                topic_partitions=self.partitions,
            ),
        )
        stats = runtime.stats
        source = self.input
        repartition = tuple(processor.repartition_topics)

        def done() -> bool:
            by = stats.records_in_by_topic
            return by[source] >= self.count and all(by[r] >= stats.records_out[r] for r in repartition)

        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        runtime.run(stop=done)
        if profiler is not None:
            profiler.disable()
        seconds = (stats.last_commit_at or 0.0) - (stats.first_record_at or 0.0)
        text_profile = None
        if profiler is not None:
            buf = io.StringIO()
            pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(25)
            text_profile = buf.getvalue()
        result = Throughput(name, stats.records_in_by_topic[source], seconds, stats.transactions_committed)
        return result, text_profile

    def latency(self, rate: float, seconds: float) -> Latency:
        """Run ``fraudstream detect`` as a subprocess; produce at ``rate``; time outputs to visibility."""
        prefix = f"bench-{self.run_id}-lat"
        text = renamed_topology(DEFAULT_PATH.read_text(encoding="utf-8"), prefix)
        outputs = [f"{prefix}.legit", f"{prefix}.fraud", f"{prefix}.dlq"]
        self._topics([f"{prefix}.transactions", *outputs])
        total = int(rate * seconds)
        warmup = 2_000
        encoder = AvroEncoder(self.registry, schemas.schema_text("transaction"), f"{prefix}.transactions-value")
        stream = TransactionStream(stream_config(GeneratorSettings.with_overrides(seed=43, rate=0)))
        values = []
        for _ in range(total + warmup):
            g = next(stream)
            values.append((encoder.encode(g.record), g.record["source_account"].encode()))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "topology.yaml"
            path.write_text(text, encoding="utf-8")
            env = dict(
                os.environ, KAFKA_BOOTSTRAP_SERVERS=self.bootstrap, SCHEMA_REGISTRY_URL=self.registry_url, COLUMNS="200"
            )
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services",
                    "detect",
                    "--topology",
                    str(path),
                    "--application-id",
                    f"{prefix}-detector",
                    "--instance-id",
                    "bench",
                    "--commit-interval-ms",
                    str(self.commit_interval_ms),
                    "--stats-interval-s",
                    "5",
                ],
                env=env,
                stdout=(Path(tmp) / "detector.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
            try:
                return self._measure(proc, f"{prefix}.transactions", outputs, values, warmup, rate)
            except RuntimeError as exc:
                tail = (Path(tmp) / "detector.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{exc}; detector output:\n{tail}") from exc
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def _measure(
        self,
        proc: subprocess.Popen[bytes],
        topic: str,
        outputs: list[str],
        values: list[tuple[bytes, bytes]],
        warmup: int,
        rate: float,
    ) -> Latency:
        producer = Producer(kafka_producer_config(self.kafka, **{"linger.ms": 1}))
        fast: dict[str, Any] = {"fetch.wait.max.ms": 10}
        reader = Consumer(kafka_consumer_config(self.kafka, f"bench-{self.run_id}-lat-reader", **fast))
        reader.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in outputs for p in range(self.partitions)])
        seen = 0

        def drain(timeout: float, record: list[float] | None) -> int:
            n = 0
            for m in reader.consume(5_000, timeout):
                if m.error() is None:
                    n += 1
                    if record is not None:
                        record.append(time.time() * 1000.0 - m.timestamp()[1])
            return n

        for value, key in values[:warmup]:
            producer.produce(topic, value, key)
        producer.flush(30)
        deadline = time.monotonic() + 120
        while seen < warmup:  # the detector is up and has processed the warm-up records
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the detector did not process the warm-up records")
            seen += drain(0.2, None)
        samples: list[float] = []
        todo = values[warmup:]
        started = time.monotonic()
        sent = 0
        while sent < len(todo):
            due = min(len(todo), int((time.monotonic() - started) * rate) + 1)
            while sent < due:
                value, key = todo[sent]
                try:
                    producer.produce(topic, value, key)
                    sent += 1
                except BufferError:
                    producer.poll(0.01)
            producer.poll(0)
            drain(0.002, samples)
        achieved = sent / (time.monotonic() - started)
        producer.flush(30)
        deadline = time.monotonic() + 120
        while len(samples) < len(todo) and time.monotonic() < deadline:
            drain(0.2, samples)
        reader.close()
        if len(samples) < len(todo):
            raise RuntimeError(f"only {len(samples)} of {len(todo)} outputs became visible")
        return Latency(
            rate,
            round(achieved, 1),
            len(samples),
            round(quantile(samples, 0.5) or 0.0, 1),
            round(quantile(samples, 0.99) or 0.0, 1),
            round(max(samples), 1),
        )

"""Detector benchmark: the exactly-once runtime against a raw exactly-once copy loop, then latency.

In one run, on unique topics of the broker (all deleted at the end):
1. preload N Avro transactions once (the generator's pure stream + the Avro encoder);
2. over several rounds, interleaved (raw, stateless, window, fraud, raw, stateless, ...), each pass
   reading the same preloaded topic with its own application (group) id:
   - ``raw``: a consume -> produce exactly-once copy loop written directly on confluent_kafka, with
     the runtime's own producer/consumer configuration, commit interval and batch sizes;
   - ``stateless``: the runtime with the rule ``amount >= 900`` only;
   - ``window``: the runtime with one sliding-window count (``count by source_account over sliding
     3m >= 10``) plus the amount rule;
   - ``fraud``: the runtime with ``services/detector/fraud.yaml`` (9 window stores, one repartition stage);
   each until every output is committed. Throughput is N / (last commit - first record consumed);
   CPU is this process's CPU time (every thread, librdkafka's included) over the pass;
3. per row: the median tx/s and its spread, the median ratio to the raw pass of the same round and
   that ratio's spread, against the targets of issue 14;
4. end-to-end latency at a fixed input rate: the detector runs as a subprocess
   (``python -m services detect``); this process produces at the rate and reads the outputs with a
   read_committed consumer; latency = time visible - the input's produce timestamp (the runtime keeps
   the input timestamp on its outputs).
"""

from __future__ import annotations

import contextlib
import cProfile
import gc
import io
import os
import platform
import pstats
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient

import schemas
from services.config import GeneratorSettings, KafkaSettings
from services.detector import FRAUD_TOPOLOGY, loads_topology
from services.detector.alerts import FraudAlerts
from services.generator.produce import stream_config
from services.generator.scenarios import TransactionStream
from services.kafka import check_broker, check_registry
from topology.batch.decode import ColumnarDecoder
from topology.build import engine_label
from topology.plan.model import Topology
from topology.processor import TopologyProcessor
from topology.runtime import (
    ExactlyOnceRuntime,
    RuntimeSettings,
    consumer_config,
    producer_config,
    quantile,
)
from topology.runtime.collector import young_threshold
from topology.serde.decoder import AvroEncoder, RegistryError
from topology.serde.projection import ProjectionDecoder

Log = Callable[[str], None]

RAW = "raw"
ROWS: dict[str, str] = {  # the rows of the table (their labels), in run order within a round
    RAW: "raw EOS copy loop",
    "stateless": "stateless amount >= 900",
    "window": "one window + amount",  # count by source_account over sliding 3m >= 10, plus amount >= 900
    "fraud": "fraud.yaml (9 stores, repartition)",
}
RATIO_TARGETS: dict[str, float] = {"window": 0.40, "fraud": 0.20}  # issue 14: share of the raw loop
LATENCY_TARGET_MS = 150.0  # issue 14: end-to-end p99 for fraud.yaml ...
LATENCY_TARGET_RATE = 5_000.0  # ... at this input rate (tx/s)

# The stateless and one-window rows, in the format of services/detector/fraud.yaml (topology/plan/loader.py).
_SMALL_TOPOLOGY = """\
topology: {prefix}
source:
  topic: {source}
  schema: transaction
  key: [source_account]
  time: event_time
dlq: {prefix}.dlq
rules:
{rules}branches:
  - name: fraud
    to: {prefix}.fraud
    rules: [{ids}]
default_branch:
  name: legit
  to: {prefix}.legit
"""
_RULES: dict[str, str] = {
    "large-amount": "  - id: large-amount\n    version: 1\n    when: amount >= 900\n",
    "velocity-many": """\
  - id: velocity-many
    version: 1
    when:
      aggregate:
        function: count
        group_by: [source_account]
        window: {kind: sliding, size: 3m, grace: 30s}
        op: ">="
        threshold: 10
""",
}
_ROW_RULES: dict[str, tuple[str, ...]] = {"stateless": ("large-amount",), "window": ("large-amount", "velocity-many")}


@dataclass
class Throughput:
    """One measured exactly-once pass over the preloaded input."""

    name: str
    records: int
    seconds: float
    transactions: int
    ratio_to_raw: float | None = None
    row: str = ""
    round: int = 1
    cpu_seconds: float | None = None  # this process's CPU time over the pass (every thread)
    load_after: float | None = None  # the machine's 1-minute load average when the pass ended

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_record(self) -> float | None:
        if self.cpu_seconds is None or not self.records:
            return None
        return self.cpu_seconds / self.records * 1e6


@dataclass(frozen=True)
class Spread:
    """The median of some figures and their range."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        ordered = sorted(values)
        if not ordered:
            raise ValueError("a spread of no values")
        return cls(statistics.median(ordered), ordered[0], ordered[-1])


@dataclass(frozen=True)
class RowSummary:
    """A row of the table: its passes over every round, summed up."""

    row: str
    name: str
    passes: int
    rate: Spread  # tx/s
    ratio: Spread | None  # to the raw pass of the same round; None for the raw row
    cpu_us: Spread | None  # CPU µs per record
    target: float | None  # the ratio issue 14 asks for

    @property
    def verdict(self) -> str | None:
        if self.target is None or self.ratio is None:
            return None
        return ratio_verdict(self.ratio.median, self.target)


def schedule(rounds: int, rows: Sequence[str]) -> list[tuple[int, str]]:
    """The passes in run order: every row once per round (rounds 1-based), so noise hits all rows alike."""
    return [(r, row) for r in range(1, rounds + 1) for row in rows]


def round_ratios(results: Sequence[Throughput], row: str) -> list[float]:
    """``row``'s tx/s over the tx/s of the raw pass of the same round, for each round that has both."""
    raw = {r.round: r.per_second for r in results if r.row == RAW}
    return [r.per_second / raw[r.round] for r in results if r.row == row and raw.get(r.round)]


def summarise(results: Sequence[Throughput]) -> list[RowSummary]:
    """One summary per row, in the order the rows first ran."""
    out = []
    for row in dict.fromkeys(r.row for r in results):
        mine = [r for r in results if r.row == row]
        ratios = round_ratios(results, row) if row != RAW else []
        cpu = [c for c in (r.cpu_us_per_record for r in mine) if c is not None]
        out.append(
            RowSummary(
                row,
                mine[0].name,
                len(mine),
                Spread.of(r.per_second for r in mine),
                Spread.of(ratios) if ratios else None,
                Spread.of(cpu) if cpu else None,
                RATIO_TARGETS.get(row),
            )
        )
    return out


def ratio_verdict(ratio: float, target: float) -> str:
    """``met``, or how far the ratio is from its target (points of the raw loop, and the speed-up needed)."""
    if ratio >= target:
        return "met"
    needed = f", needs {target / ratio:.2f}x" if ratio > 0 else ""
    return f"short by {(target - ratio) * 100:.0f} pts{needed}"


@dataclass
class Latency:
    """End-to-end latency at a fixed input rate."""

    target_rate: float
    achieved_rate: float
    records: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    row: str = "fraud"
    commit_interval_ms: int = 0  # the detector's
    first_p50_ms: float | None = None  # median of the first tenth of the outputs (in the order seen)
    last_p50_ms: float | None = None  # median of the last tenth

    @property
    def fell_behind(self) -> bool:
        """Latency grew over the run: the detector did not sustain the rate (a backlog, not a latency)."""
        first, last = self.first_p50_ms, self.last_p50_ms
        return first is not None and last is not None and last > 2 * first + 100

    @property
    def verdict(self) -> str | None:
        """Against issue 14's target (fraud.yaml at 5,000 tx/s); None for any other measurement."""
        if self.row != "fraud" or self.achieved_rate < 0.95 * LATENCY_TARGET_RATE:
            return None
        return "met" if self.p99_ms <= LATENCY_TARGET_MS else f"short by {self.p99_ms - LATENCY_TARGET_MS:.0f} ms"


@dataclass
class Report:
    machine: dict[str, Any]
    count: int
    partitions: int
    commit_interval_ms: int
    preload_per_second: float
    rounds: int = 1
    results: list[Throughput] = field(default_factory=list)
    latency: Latency | None = None
    profile: str | None = None
    deleted_topics: int = 0

    def rows(self) -> list[RowSummary]:
        return summarise(self.results)

    def as_json(self) -> dict[str, Any]:
        doc = asdict(self)
        for r, d in zip(self.results, doc["results"], strict=True):
            d["per_second"] = round(r.per_second, 1)
            d["cpu_us_per_record"] = None if r.cpu_us_per_record is None else round(r.cpu_us_per_record, 2)
        doc["rows"] = [{**asdict(s), "verdict": s.verdict} for s in self.rows()]
        if self.latency is not None:
            doc["latency"]["verdict"] = self.latency.verdict
            doc["latency"]["fell_behind"] = self.latency.fell_behind
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
        "engine": engine_label(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def topology_text(row: str, prefix: str, source: str | None = None) -> str:
    """The YAML of a detector row (``stateless``, ``window``, ``fraud``) on topics ``<prefix>.*`` reading ``source``."""
    source = source or f"{prefix}.transactions"
    if row == "fraud":
        text = renamed_topology(FRAUD_TOPOLOGY.read_text(encoding="utf-8"), prefix)
        return text.replace(f"{prefix}.transactions", source)
    ids = _ROW_RULES[row]
    return _SMALL_TOPOLOGY.format(
        prefix=prefix, source=source, rules="".join(_RULES[i] for i in ids), ids=", ".join(ids)
    )


def renamed_topology(text: str, prefix: str, stateless: bool = False) -> str:
    """``fraud.yaml`` with unique topic names (and topology name, the prefix of its internal topics)."""
    if stateless:
        return topology_text("stateless", prefix)
    names = {
        "queueing.transactions": f"{prefix}.transactions",
        "streaming.transactions.legit": f"{prefix}.legit",
        "streaming.transactions.fraud": f"{prefix}.fraud",
        "streaming.transactions.dlq": f"{prefix}.dlq",
        "streaming.transactions.alerts": f"{prefix}.alerts",  # never the shared stack's alerts topic
    }
    out = re.sub(r"^topology:.*$", f"topology: {prefix}", text, count=1, flags=re.M)
    for old, new in names.items():
        out = re.sub(rf"(?<![\w.]){re.escape(old)}(?![\w.])", new, out)
    return out


def bench_processor(registry: SchemaRegistryClient, topology: Topology) -> TopologyProcessor:
    """The processor ``fraudstream detect`` builds for ``topology`` (projection and columnar decoders, alerts)."""
    schema = schemas.schema_text("transaction")
    alerts = FraudAlerts.for_topic(registry, topology.alerts) if topology.alerts is not None else None
    return TopologyProcessor(
        topology, ProjectionDecoder.for_topology(registry, topology, schema, alerts), version="bench",
        alerts=alerts, columnar=ColumnarDecoder(registry, schema),
    )


def profile_text(profiler: cProfile.Profile, top: int = 25) -> str:
    """The ``top`` functions by cumulative time, then by own time."""
    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return buf.getvalue()


class DetectorBench:
    """The throughput passes; every topic and group is unique to one run and deleted by ``cleanup``."""

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
        self.groups: set[str] = set()

    # ----------------------------------------------------------- helpers

    def _topics(self, names: list[str]) -> None:
        new = [NewTopic(n, self.partitions, -1) for n in names if n not in self.created]
        if not new:
            return
        for name, future in self.admin.create_topics(new).items():
            future.result(timeout=30)
            self.created.add(name)

    def cleanup(self) -> list[str]:
        """Delete this run's topics (``bench-<run id>...``) and consumer groups; the topics deleted."""
        existing = set(self.admin.list_topics(timeout=30).topics)
        mine = sorted(t for t in existing if t.startswith(f"bench-{self.run_id}"))
        if mine:
            for future in self.admin.delete_topics(mine).values():
                with contextlib.suppress(KafkaException):
                    future.result(timeout=30)
        if self.groups:
            for future in self.admin.delete_consumer_groups(sorted(self.groups)).values():
                with contextlib.suppress(KafkaException):
                    future.result(timeout=30)
        return mine

    def _settings(self, app: str, **extra: Any) -> RuntimeSettings:
        self.groups.add(app)
        return RuntimeSettings(
            bootstrap_servers=self.bootstrap,
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
        count = count or self.count
        return self.preload_records(topic or self.input, (g.record for g in self.generated(count)), count)

    @staticmethod
    def generated(count: int) -> Iterable[Any]:
        """The seeded stream every pass reads (seed 42)."""
        return TransactionStream(stream_config(GeneratorSettings.with_overrides(seed=42, rate=0))).take(count)

    def preload_records(self, topic: str, records: Iterable[Mapping[str, Any]], count: int) -> float:
        """Produce ``records`` (``count`` of them) as Avro to ``topic``, keyed by source account; records/s."""
        self._topics([topic])
        encoder = AvroEncoder(self.registry, schemas.schema_text("transaction"), f"{topic}-value")
        producer = Producer(
            {
                **self.kafka.client_config(),
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "linger.ms": 20,
                "batch.size": 1_000_000,
                "queue.buffering.max.messages": 1_000_000,
                "compression.type": "lz4",
            }
        )
        started = time.perf_counter()
        encode, produce = encoder.encode, producer.produce
        for i, record in enumerate(records):
            value = encode(record)
            key = record["source_account"].encode()
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
            if i % 100_000 == 0 and i:
                self.log(f"  preloaded {i:,}")
        if producer.flush(120) != 0:
            raise RuntimeError("preload: records left unsent")
        return count / (time.perf_counter() - started)

    def run_pass(self, row: str, round_: int = 1, profile: bool = False) -> tuple[Throughput, str | None]:
        """One pass of ``row`` (a key of ``ROWS``) over the preloaded input, with its own group id."""
        gc.collect()  # no garbage of the previous pass is collected during this one
        result, text = (self.raw_copy(round_), None) if row == RAW else self.run_detector(row, round_, profile)
        result.load_after = round(os.getloadavg()[0], 2)
        return result, text

    def raw_copy(self, round_: int = 1) -> Throughput:
        """The baseline: consume -> produce -> send offsets -> commit, directly on confluent_kafka."""
        tag = f"{RAW}-r{round_}"
        out = f"bench-{self.run_id}.{tag}"
        self._topics([out])
        s = self._settings(f"bench-{self.run_id}-{tag}")
        cpu = time.process_time()
        producer = Producer(producer_config(s))
        producer.init_transactions(30)
        consumer = Consumer(consumer_config(s))
        consumer.subscribe([self.input])
        try:
            with young_threshold(s.gc_threshold):  # as the runtime runs its loop
                copied, txns, first, last = self._copy(consumer, producer, out)
        finally:
            consumer.close()
        cpu = time.process_time() - cpu
        return Throughput(ROWS[RAW], copied, last - first, txns, row=RAW, round=round_, cpu_seconds=cpu)

    def _copy(self, consumer: Consumer, producer: Producer, out: str) -> tuple[int, int, float, float]:
        """Copy ``count`` records; (records, transactions, first record consumed, last commit) (monotonic)."""
        interval = self.commit_interval_ms / 1000.0
        copied = in_txn = txns = 0
        offsets: dict[tuple[str, int], int] = {}
        first: float | None = None
        started = 0.0
        produce = producer.produce
        while copied < self.count:
            timeout = max(0.0, min(0.1, started + interval - time.monotonic())) if in_txn else 0.1
            for m in consumer.consume(min(self.consume_batch, self.max_batch - in_txn), timeout):
                if m.error() is not None:
                    continue
                if not in_txn:
                    producer.begin_transaction()
                    started = time.monotonic()
                    first = started if first is None else first
                while True:
                    try:
                        produce(out, m.value(), m.key(), headers=m.headers())
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
                copied, in_txn, txns, offsets = copied + in_txn, 0, txns + 1, {}
        return copied, txns, first or 0.0, time.monotonic()

    def run_detector(
        self, row: str, round_: int = 1, profile: bool = False, *, source: str | None = None,
        count: int | None = None, tag: str = "",
    ) -> tuple[Throughput, str | None]:
        """The runtime with ``row``'s topology over the preloaded input (or ``source``, holding ``count``
        records), until every output is committed; ``tag`` names the pass's topics apart."""
        source = source or self.input
        count = count or self.count
        prefix = f"bench-{self.run_id}-{row}{tag}-r{round_}"  # also the prefix of its changelog/repartition topics
        topology = loads_topology(topology_text(row, prefix, source), filename=f"<{row} bench topology>")
        processor = bench_processor(self.registry, topology)
        settings = self._settings(
            prefix, dlq_topic=topology.dlq, transient_errors=(RegistryError,), topic_partitions=self.partitions
        )
        runtime = ExactlyOnceRuntime(processor, settings)
        stats = runtime.stats
        repartition = tuple(processor.repartition_topics)

        def done() -> bool:
            by = stats.records_in_by_topic
            return by[source] >= count and all(by[r] >= stats.records_out[r] for r in repartition)

        profiler = cProfile.Profile() if profile else None
        cpu = time.process_time()
        if profiler is not None:
            profiler.enable()
        try:
            runtime.run(stop=done)
        finally:
            if profiler is not None:
                profiler.disable()
        cpu = time.process_time() - cpu
        seconds = (stats.last_commit_at or 0.0) - (stats.first_record_at or 0.0)
        result = Throughput(
            ROWS[row], stats.records_in_by_topic[source], seconds, stats.transactions_committed,
            row=row, round=round_, cpu_seconds=cpu,
        )
        return result, None if profiler is None else profile_text(profiler)

    def detector(self, name: str, stateless: bool, profile: bool = False) -> tuple[Throughput, str | None]:
        """``run_detector`` of the stateless or the fraud.yaml row, named ``name`` (``bench state``'s call)."""
        result, text = self.run_detector("stateless" if stateless else "fraud", profile=profile)
        result.name = name
        return result, text

    def latency(
        self, rate: float, seconds: float, row: str = "fraud", commit_interval_ms: int | None = None
    ) -> Latency:
        """End-to-end latency of ``row``'s topology at ``rate`` tx/s for ``seconds`` (see ``LatencyBench``), the
        detector committing every ``commit_interval_ms`` (None: as the throughput passes)."""
        return LatencyBench(self, commit_interval_ms or self.commit_interval_ms).run(rate, seconds, row)


class LatencyBench:
    """``fraudstream detect`` as a subprocess; produce at a fixed rate; time outputs to visibility."""

    warmup = 2_000

    def __init__(self, bench: DetectorBench, commit_interval_ms: int) -> None:
        self.bench = bench
        self.commit_interval_ms = commit_interval_ms
        self.prefix = f"bench-{bench.run_id}-lat"

    def run(self, rate: float, seconds: float, row: str = "fraud") -> Latency:
        b, prefix = self.bench, self.prefix
        outputs = [f"{prefix}.legit", f"{prefix}.fraud", f"{prefix}.dlq"]
        b._topics([f"{prefix}.transactions", *outputs])
        values = self._values(int(rate * seconds) + self.warmup)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "topology.yaml"
            path.write_text(topology_text(row, prefix), encoding="utf-8")
            log_path = Path(tmp) / "detector.log"
            with log_path.open("wb") as out:
                proc = self._start(path, out)
            try:
                lat = self._measure(proc, f"{prefix}.transactions", outputs, values, rate)
            except RuntimeError as exc:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{exc}; detector output:\n{tail}") from exc
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        lat.row, lat.commit_interval_ms = row, self.commit_interval_ms
        return lat

    def _values(self, n: int) -> list[tuple[bytes, bytes]]:
        encoder = AvroEncoder(
            self.bench.registry, schemas.schema_text("transaction"), f"{self.prefix}.transactions-value"
        )
        stream = TransactionStream(stream_config(GeneratorSettings.with_overrides(seed=43, rate=0)))
        values = []
        for _ in range(n):
            g = next(stream)
            values.append((encoder.encode(g.record), g.record["source_account"].encode()))
        return values

    def _start(self, topology: Path, out: Any) -> subprocess.Popen[bytes]:
        b = self.bench
        app = f"{self.prefix}-detector"
        b.groups.add(app)
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=b.bootstrap, SCHEMA_REGISTRY_URL=b.registry_url, COLUMNS="200")
        command = [
            sys.executable, "-m", "services", "detect", "--topology", str(topology), "--application-id", app,
            "--instance-id", "bench", "--commit-interval-ms", str(self.commit_interval_ms), "--stats-interval-s", "5",
        ]
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)

    def _measure(
        self,
        proc: subprocess.Popen[bytes],
        topic: str,
        outputs: list[str],
        values: list[tuple[bytes, bytes]],
        rate: float,
    ) -> Latency:
        b = self.bench
        producer = Producer(
            {**b.kafka.client_config(), "bootstrap.servers": b.bootstrap, "enable.idempotence": True, "linger.ms": 1}
        )
        group = f"{self.prefix}-reader"
        b.groups.add(group)
        reader = Consumer(
            {
                **b.kafka.client_config(),
                "bootstrap.servers": b.bootstrap,
                "group.id": group,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        reader.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in outputs for p in range(b.partitions)])
        try:
            self._warm_up(proc, producer, reader, topic, values[: self.warmup])
            samples, achieved = self._paced(producer, reader, topic, values[self.warmup :], rate)
        finally:
            reader.close()
        tenth = max(1, len(samples) // 10)
        return Latency(
            rate,
            round(achieved, 1),
            len(samples),
            round(quantile(samples, 0.5) or 0.0, 1),
            round(quantile(samples, 0.99) or 0.0, 1),
            round(max(samples), 1),
            first_p50_ms=round(statistics.median(samples[:tenth]), 1),
            last_p50_ms=round(statistics.median(samples[-tenth:]), 1),
        )

    @staticmethod
    def _drain(reader: Consumer, timeout: float, samples: list[float] | None) -> int:
        """Read what is visible; with ``samples``, append each output's latency (ms)."""
        n = 0
        for m in reader.consume(5_000, timeout):
            if m.error() is None:
                n += 1
                if samples is not None:
                    samples.append(time.time() * 1000.0 - m.timestamp()[1])
        return n

    def _warm_up(
        self, proc: subprocess.Popen[bytes], producer: Producer, reader: Consumer, topic: str,
        values: list[tuple[bytes, bytes]],
    ) -> None:
        """Wait until the detector is up and has processed the warm-up records."""
        for value, key in values:
            producer.produce(topic, value, key)
        producer.flush(30)
        deadline = time.monotonic() + 120
        seen = 0
        while seen < len(values):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the detector did not process the warm-up records")
            seen += self._drain(reader, 0.2, None)

    def _paced(
        self, producer: Producer, reader: Consumer, topic: str, todo: list[tuple[bytes, bytes]], rate: float
    ) -> tuple[list[float], float]:
        """Produce ``todo`` at ``rate`` while reading outputs; (latencies in ms, achieved rate)."""
        samples: list[float] = []
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
            self._drain(reader, 0.002, samples)
        achieved = sent / (time.monotonic() - started)
        producer.flush(30)
        deadline = time.monotonic() + 120
        while len(samples) < len(todo) and time.monotonic() < deadline:
            self._drain(reader, 0.2, samples)
        if len(samples) < len(todo):
            raise RuntimeError(f"only {len(samples)} of {len(todo)} outputs became visible")
        return samples, achieved

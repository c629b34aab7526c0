"""State benchmark: changelog restore time for N keys, and detector throughput with stateful rules vs stateless.

In one run, on unique topics of the broker (deleted at the end):

1. **restore**: a compacted changelog topic of the velocity store (``services/detector/fraud.yaml``'s
   ``velocity`` rule, counted per source account) is filled with ``keys`` distinct keys. Their
   values are real changelog values: the processor itself writes them while aggregating generated
   transactions (a few thousand accounts), and the bench cycles those values over the keys. Then a
   fresh ``TopologyProcessor`` runs on the ``ExactlyOnceRuntime``: the group assignment triggers the
   runtime's own restore path (read_committed, from the start to the high watermark). Restore time
   = the processor's ``assigned`` call to the last restore progress report; keys/s = keys / that.
   Restore keeps documents undecoded (``topology.state.group``); the decoding of every key, which the
   detector spreads over first uses and flushes, is timed apart and printed next to it.
2. **throughput**: ``count`` generated Avro transactions are preloaded once, then processed by the
   runtime with ``fraud.yaml`` (stateful rules + repartition stage) and with the stateless tutorial
   rule alone (``services.bench.detector.DetectorBench``), each until every output is committed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from services.bench.detector import DetectorBench, Log, Throughput, renamed_topology
from services.bench.stores import read_to_end, write_changelog
from services.config import GeneratorSettings
from services.detector import FRAUD_TOPOLOGY, loads_topology
from services.generator.produce import stream_config
from services.generator.scenarios import TransactionStream
from services.kafka import ensure_topics
from topology.plan.model import Topology
from topology.processor import TopologyProcessor
from topology.records import OutRecord, RawRecord
from topology.runtime import ExactlyOnceRuntime
from topology.runtime.settings import RuntimeSettings, restore_config

if TYPE_CHECKING:
    from rich.table import Table

STORE_RULE = "velocity"


@dataclass
class Restore:
    """One measured restore of a changelog of ``keys`` distinct keys."""

    keys: int
    partitions: int
    template_values: int  # distinct real changelog values cycled over the keys
    value_bytes_avg: float
    write_seconds: float
    seconds: float
    records_restored: int
    keys_in_store: int  # (store, key) entries held once every restored key is decoded
    decode_seconds: float  # decoding every restored key at once (in the detector: on first use, or per flush)
    raw_read_seconds: float = 0.0  # the baseline: a bare read_committed read of the same changelog, same config

    @property
    def keys_per_second(self) -> float:
        return self.keys / self.seconds if self.seconds > 0 else 0.0


@dataclass
class StateReport:
    machine: dict[str, Any]
    keys: int
    count: int
    partitions: int
    restore: Restore | None = None
    results: list[Throughput] = field(default_factory=list)

    @property
    def stateful_vs_stateless(self) -> float | None:
        """Throughput of the stateful topology relative to the stateless one (same run)."""
        if len(self.results) < 2 or self.results[1].per_second <= 0:
            return None
        return self.results[0].per_second / self.results[1].per_second

    def as_json(self) -> dict[str, Any]:
        doc = asdict(self)
        if self.restore is not None:
            doc["restore"]["keys_per_second"] = round(self.restore.keys_per_second, 1)
        for r, d in zip(self.results, doc["results"], strict=True):
            d["per_second"] = round(r.per_second, 1)
        ratio = self.stateful_vs_stateless
        doc["stateful_vs_stateless"] = None if ratio is None else round(ratio, 3)
        return doc


def store_topology(prefix: str) -> Topology:
    """``fraud.yaml`` on ``prefix``'s topics, keeping only the rule whose store is restored."""
    full = loads_topology(renamed_topology(FRAUD_TOPOLOGY.read_text(encoding="utf-8"), prefix), filename="fraud.yaml")
    branches = []
    for b in full.branches:
        rules = tuple(r for r in b.rules if r.id == STORE_RULE)
        if rules:
            branches.append(dataclasses.replace(b, rules=rules))
    if not branches:
        raise ValueError(f"fraud.yaml has no rule {STORE_RULE!r}")
    return dataclasses.replace(full, branches=tuple(branches))


def template_values(topology: Topology, accounts: int, transactions: int) -> list[bytes]:
    """Real changelog values: the latest state per key after the processor aggregated generated traffic."""
    stream = TransactionStream(stream_config(GeneratorSettings.with_overrides(seed=7, rate=0, accounts=accounts)))
    records = [g.record for g in stream.take(transactions)]

    def decode(value: bytes | None) -> Mapping[str, Any]:
        return records[int(value or b"0")]

    processor = TopologyProcessor(topology, decode, version="bench")
    processor.assigned([(topology.source, 0)])
    changelogs = set(processor.changelog_topics)
    latest: dict[bytes, bytes] = {}

    def keep(outs: Iterable[OutRecord]) -> None:
        for o in outs:
            if o.topic in changelogs and o.key is not None and o.value is not None:
                latest[o.key] = o.value

    for i, r in enumerate(records):
        key = str(r["source_account"]).encode()
        keep(processor.process(RawRecord(topology.source, 0, i, key, str(i).encode(), 0, ())))
    flush: Callable[[], list[OutRecord]] | None = getattr(processor, "flush", None)
    if flush is not None:  # a processor with a write-back cache hands its changelog records out here
        keep(flush())
    if not latest:
        raise RuntimeError("the processor wrote no changelog records")
    return sorted(latest.values())


class _Timed:
    """Delegates to a processor; notes when the runtime hands it partitions (the restore starts next)."""

    def __init__(self, processor: TopologyProcessor) -> None:
        self._processor = processor
        self.assigned_at: float | None = None

    def assigned(self, partitions: list[tuple[str, int]]) -> None:
        if self.assigned_at is None:
            self.assigned_at = time.perf_counter()
        self._processor.assigned(partitions)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._processor, name)


class StateBench:
    """Restore and throughput measurements on unique topics (``bench-<run id>-...``)."""

    def __init__(self, bench: DetectorBench, *, keys: int, log: Log = print) -> None:
        self.bench = bench
        self.keys = keys
        self.log = log

    def restore(self, accounts: int = 5_000, transactions: int = 20_000) -> Restore:
        b = self.bench
        prefix = f"bench-{b.run_id}-restore"
        app = f"{prefix}-app"
        topology = dataclasses.replace(store_topology(prefix), name=app)
        templates = template_values(topology, accounts, transactions)
        processor = TopologyProcessor(topology, _no_input, version="bench")
        (changelog,) = processor.changelog_topics
        self.log(f"  {len(templates):,} template values from {transactions:,} transactions; writing {changelog}")
        b._topics([topology.source])
        ensure_topics(b.admin, [changelog], partitions=b.partitions, replication_factor=-1,
                      config={"cleanup.policy": "compact"}, timeout_s=30)
        b.created.add(changelog)
        started = time.perf_counter()
        write_changelog(self.bench.kafka, changelog, self.keys, self.bench.partitions, templates, self.log)
        write_seconds = time.perf_counter() - started

        settings = b._settings(app, dlq_topic=topology.dlq, topic_partitions=b.partitions)
        raw_read = read_all(settings, changelog, b.partitions, self.keys)
        self.log(f"  baseline: read the changelog in {raw_read:.2f} s")
        timed = _Timed(processor)
        restored: dict[str, float] = {"done": 0, "at": 0.0, "keys": 0, "decode": 0.0}

        def progress(_topics: str, done: int, _total: int) -> None:
            restored["done"], restored["at"] = done, time.perf_counter()
            if done >= self.keys:  # counted now: closing the runtime revokes (drops) the partitions
                began = time.perf_counter()
                restored["keys"] = sum(s.size() for s in dict.fromkeys(processor.stores.values()))  # decodes every key
                restored["decode"] = time.perf_counter() - began
            self.log(f"  restored {done:,} records")

        runtime = ExactlyOnceRuntime(
            timed,  # delegates every attribute to the processor
            settings,
            on_restore_progress=progress,
        )
        deadline = time.monotonic() + 600
        runtime.run(stop=lambda: restored["done"] >= self.keys or time.monotonic() > deadline)
        if restored["done"] < self.keys or timed.assigned_at is None:
            raise RuntimeError(f"restore incomplete: {restored['done']:,.0f} of {self.keys:,} records")
        return Restore(
            keys=self.keys,
            partitions=b.partitions,
            template_values=len(templates),
            value_bytes_avg=round(sum(map(len, templates)) / len(templates), 1),
            write_seconds=round(write_seconds, 2),
            seconds=round(restored["at"] - timed.assigned_at, 3),
            records_restored=runtime.stats.restored,
            keys_in_store=int(restored["keys"]),
            decode_seconds=round(restored["decode"], 2),
            raw_read_seconds=round(raw_read, 2),
        )

    def throughput(self) -> list[Throughput]:
        """Stateful fraud.yaml, then the stateless rule, over the same preloaded input."""
        b = self.bench
        self.log(f"preloading {b.count:,} Avro transactions ({b.partitions} partitions) ...")
        b.preload()
        self.log("detector, fraud.yaml (stateful rules + repartition) ...")
        stateful, _ = b.detector("detector: fraud.yaml (stateful + repartition)", False)
        self.log("detector, stateless rule only ...")
        stateless, _ = b.detector("detector: stateless amount >= 900", True)
        stateful.ratio_to_raw = stateless.ratio_to_raw = None
        return [stateful, stateless]


def read_all(settings: RuntimeSettings, topic: str, partitions: int, records: int) -> float:
    """Seconds to read ``records`` records of ``topic`` from its start with the restore reader's configuration,
    touching each key, value and headers and nothing more: the floor of a restore in Python."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(restore_config(settings))
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 30, False)[1] for p in range(partitions)}
        started = time.perf_counter()
        touch = lambda m: (m.key(), m.value(), m.headers())  # noqa: E731
        seen = read_to_end(consumer, topic, dict.fromkeys(ends, 0), ends, touch, timeout_s=0.05)  # the restorer's wait
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
    if seen < records:
        raise RuntimeError(f"baseline read: {seen:,} of {records:,} records")
    return seconds


def _no_input(value: bytes | None) -> Mapping[str, Any]:
    raise RuntimeError("the restore benchmark's input topic is empty")


def run_state_bench(
    *, keys: int, count: int, partitions: int, restore: bool, throughput: bool, json_output: bool
) -> int:
    """Run the measurements; print a table (or ``--json``); the exit code."""
    import json
    import sys

    from rich.console import Console

    from services.bench.detector import machine
    from services.config import KafkaSettings
    from services.kafka import Unreachable

    console = Console(stderr=json_output)

    def log(line: str) -> None:
        console.print(line, style="dim", markup=False, highlight=False)

    kafka = KafkaSettings()
    try:
        bench = DetectorBench(
            kafka, count=count, partitions=partitions, log=log
        )
    except Unreachable as exc:
        console.print(f"error: {exc}", style="red")
        return 2
    report = StateReport(machine(), keys, count, partitions)
    state = StateBench(bench, keys=keys, log=log)
    try:
        if restore:
            log(f"restore: changelog of {keys:,} keys ({partitions} partitions) ...")
            report.restore = state.restore()
        if throughput:
            report.results = state.throughput()
    finally:
        bench.cleanup()
    if json_output:
        json.dump(report.as_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    console.print(_table(report))
    return 0


def _table(report: StateReport) -> Table:
    """The report as a table: the restore row, then a row per throughput measurement."""
    from rich.table import Table

    m = report.machine
    table = Table(
        title=(
            f"fraudstream state benchmark: {m['cpus']} CPUs ({m['cpu']}), Python {m['python']} "
            f"({m['engine']}), load {m['load_average_at_start']}"
        )
    )
    table.add_column("measurement")
    table.add_column("records", justify="right")
    table.add_column("per second", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("note")
    r = report.restore
    if r is not None:
        table.add_row(
            f"restore: {STORE_RULE} store changelog",
            f"{r.records_restored:,}",
            f"{r.keys_per_second:,.0f} keys/s",
            f"{r.seconds:.2f}",
            f"value avg {r.value_bytes_avg:.0f} B; a bare read of the same changelog: {r.raw_read_seconds:.2f} s; "
            f"decoding every key after: {r.decode_seconds:.2f} s ({r.keys_in_store:,} store entries)",
        )
    for i, t in enumerate(report.results):
        note = ""
        if i == 0 and report.stateful_vs_stateless is not None:
            note = f"{report.stateful_vs_stateless:.0%} of stateless"
        table.add_row(t.name, f"{t.records:,}", f"{t.per_second:,.0f} tx/s", f"{t.seconds:.1f}", note)
    return table


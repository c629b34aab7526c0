"""Store benchmark: the in-memory window store against embedded stores (RocksDB, LMDB), one run, one workload.

1. **update + flush** (no broker): generated transactions (seeded) are turned, per aggregate, into
   the store calls the detector makes (``add(partition, group key, event time, value)``), with a
   ``flush`` every ``flush_every`` records (one transaction's worth). The same calls run on each
   implementation; the time of the ``add`` calls and of the flushes are measured apart, and every
   implementation must return the same window values as the in-memory store (checked).
   Workloads: single aggregates of ``fraud.yaml`` (sliding count, sum, distinct count) and
   tumbling/hopping ones, then every store of ``fraud.yaml`` grouped by stage as the detector does.
2. **restore, memory, restart** (real Kafka): a compacted changelog of ``keys`` keys is written
   once (values: real changelog documents of ``fraud.yaml``'s first stage, cycled). Each
   measurement runs in a fresh process (so its RSS is its own): read the changelog
   (read_committed) to its end and apply every record to the store; RSS growth is measured after.
   A read-only pass gives the Kafka part of the time. An embedded store then closes with a
   checkpoint, and a restart in a new process resumes from it (replaying only the tail).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import shutil
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.config import GeneratorSettings, KafkaSettings
from services.detector import FRAUD_TOPOLOGY, load_topology
from services.generator.produce import stream_config
from services.generator.scenarios import TransactionStream
from topology.plan.expr import to_epoch_ms
from topology.plan.model import Aggregate, Window
from topology.state import StateGroup, WindowStore, encode_group_key
from topology.state.rocksdb import KeyValue, KVStateGroup, KVWindowStore, RocksKV

if TYPE_CHECKING:
    from rich.table import Table

CACHED = "-cached"  # an embedded store with a cache of CACHE_KEYS keys per partition kept across flushes
CACHE_KEYS = 100_000
Log = Callable[[str], None]


class LmdbKV:
    """LMDB (``lmdb``): a memory-mapped B+tree, no sync (the changelog is what survives a crash). Measured only."""

    def __init__(self, path: Path) -> None:
        import lmdb

        path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(str(path), map_size=16 * 2**30, sync=False, metasync=False, writemap=True)

    def get(self, key: bytes) -> bytes | None:
        with self._env.begin() as txn:
            value: bytes | None = txn.get(key)
            return value

    def write(self, changes: Iterable[tuple[bytes, bytes | None]]) -> None:
        with self._env.begin(write=True) as txn:
            for k, v in changes:
                if v is None:
                    txn.delete(k)
                else:
                    txn.put(k, v)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        with self._env.begin() as txn:
            yield from txn.cursor().iternext()

    def flush(self) -> None:
        self._env.sync(True)

    def close(self) -> None:
        self._env.sync(True)
        self._env.close()


BACKENDS: dict[str, Callable[[Path], KeyValue]] = {"rocksdb": RocksKV, "lmdb": LmdbKV}
KINDS = ("memory", *BACKENDS, *(b + CACHED for b in BACKENDS))


@dataclass
class Update:
    """One workload on one store implementation."""

    workload: str
    store: str
    records: int
    adds: int
    flushes: int
    flushed_keys: int
    add_seconds: float
    flush_seconds: float
    same_values: bool  # the same window values as the in-memory store

    @property
    def add_us_per_record(self) -> float:
        return self.add_seconds / self.records * 1e6 if self.records else 0.0

    @property
    def flush_ms_per_flush(self) -> float:
        return self.flush_seconds / self.flushes * 1e3 if self.flushes else 0.0

    @property
    def flush_us_per_key(self) -> float:
        return self.flush_seconds / self.flushed_keys * 1e6 if self.flushed_keys else 0.0

    @property
    def us_per_record(self) -> float:
        """Update and flush cost per input record."""
        return (self.add_seconds + self.flush_seconds) / self.records * 1e6 if self.records else 0.0

    def as_json(self) -> dict[str, Any]:
        """The fields, and the costs derived from them (3 decimals)."""
        costs = {
            "add_us_per_record": self.add_us_per_record, "flush_ms_per_flush": self.flush_ms_per_flush,
            "flush_us_per_key": self.flush_us_per_key, "us_per_record": self.us_per_record,
        }
        return {**asdict(self), **{name: round(cost, 3) for name, cost in costs.items()}}


@dataclass
class Restore:
    """One changelog replay into one store implementation, in its own process."""

    name: str
    store: str
    records: int
    keys_in_store: int
    seconds: float
    rss_mb: float  # growth of the process's resident set during the replay

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        """The fields, and the rate derived from them."""
        return {**asdict(self), "records_per_second": round(self.records_per_second, 1)}


@dataclass
class StoresReport:
    machine: dict[str, Any]
    records: int
    flush_every: int
    repeat: int
    keys: int
    partitions: int
    value_bytes_avg: float = 0.0
    first_stage_stores: int = 0  # stores in one changelog document of the replay
    updates: list[Update] = field(default_factory=list)
    restores: list[Restore] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The report, each measurement with its derived figures."""
        measured = {"updates": [u.as_json() for u in self.updates], "restores": [r.as_json() for r in self.restores]}
        return {**asdict(self), **measured}


# ---------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Slot:
    """One aggregate fed as the processor feeds it: filter, group key, value, event time."""

    name: str
    aggregate: Aggregate
    stage: int

    def call(self, record: Mapping[str, Any], time_field: str) -> tuple[bytes, int, Any, str] | None:
        a = self.aggregate
        if a.filter is not None and not a.filter.evaluate(record):
            return None
        vals = [record[f] for f in a.group_by]
        if any(v is None for v in vals):
            return None
        value = True if a.field is None else record[a.field]
        if value is None:
            return None
        ident = str(record["transaction_id"]) if a.related else ""  # kept by stores that name related records
        return encode_group_key(vals), int(to_epoch_ms(record[time_field])), value, ident


def workloads() -> list[tuple[str, list[Slot]]]:
    """(name, aggregates) of each measured workload; the last one is all of ``fraud.yaml``."""
    topology = load_topology(FRAUD_TOPOLOGY)
    stores = {s.name: s for s in topology.stores}
    h, m = 3_600_000, 60_000

    def extra(name: str, function: str, kind: str, size: int, fld: str | None, advance: int | None = None) -> Slot:
        window = Window(kind, size, m, advance)  # type: ignore[arg-type]
        aggregate = Aggregate(function, ("source_account",), window, ">=", Decimal(1), fld, name=name)  # type: ignore[arg-type]
        return Slot(name, aggregate, 0)

    def of(name: str) -> Slot:
        s = stores[name]
        return Slot(name, s.aggregate, s.stage)

    def label(s: Slot) -> str:
        a = s.aggregate
        w = a.window
        return f"{s.name}: {a.function} {w.kind} {_span(w.size_ms)}"

    singles = [
        of("velocity-count"),  # sliding count, 3 minutes, keeps transaction ids
        of("fan-out"),  # sliding distinct count, 15 minutes, filtered
        of("fan-in"),  # sliding distinct count, 1 day, by target account and amount (second stage)
        of("structuring-sum"),  # sliding sum, 1 day, filtered
        extra("tumbling-count", "count", "tumbling", h, None),
        extra("tumbling-sum", "sum", "tumbling", h, "amount"),
        extra("hopping-distinct", "distinct_count", "hopping", h, "target_account", 15 * m),
    ]
    out = [(label(s), [s]) for s in singles]
    out.append((f"fraud.yaml: {len(stores)} stores, {len(topology.stages)} stages", [of(n) for n in stores]))
    return out


def _span(ms: int) -> str:
    for unit, n in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % n == 0:
            return f"{ms // n}{unit}"
    return f"{ms}ms"


def generated(records: int, accounts: int = 10_000) -> list[dict[str, Any]]:
    """Seeded generator output (the default traffic mix with its fraud scenarios)."""
    settings = GeneratorSettings.with_overrides(seed=7, rate=0, event_rate=100.0, accounts=accounts)
    return [g.record for g in TransactionStream(stream_config(settings)).take(records)]


Op = tuple[int, int, bytes, int, Any, str]  # store index, partition, key, time, value, transaction id


def operations(slots: Sequence[Slot], records: Sequence[Mapping[str, Any]], partitions: int) -> list[list[Op]]:
    """Per record, the store calls it causes (partition = hash of the group key)."""
    out: list[list[Op]] = []
    for r in records:
        ops: list[Op] = []
        for i, s in enumerate(slots):
            c = s.call(r, "event_time")
            if c is not None:
                key, t, v, ident = c
                ops.append((i, zlib.crc32(key) % partitions, key, t, v, ident))
        out.append(ops)
    return out


def build(kind: str, slots: Sequence[Slot], directory: Path) -> tuple[list[WindowStore], list[StateGroup]]:
    """The stores of ``slots`` (one group per stage, as the processor groups them) of implementation ``kind``."""
    stages = sorted({s.stage for s in slots})
    stores: list[WindowStore] = []
    groups: list[StateGroup] = []
    for stage in stages:
        topic = f"stage-{stage}-changelog"
        mine = [s for s in slots if s.stage == stage]
        if kind == "memory":
            made: list[WindowStore] = [WindowStore(s.name, s.aggregate, topic) for s in mine]
            groups.append(StateGroup(topic, made))
        else:
            kv = [KVWindowStore(s.name, s.aggregate, topic) for s in mine]
            backend, cached = kind.removesuffix(CACHED), kind.endswith(CACHED)
            groups.append(KVStateGroup(topic, kv, directory, BACKENDS[backend], cache_keys=CACHE_KEYS if cached else 0))
            made = list(kv)
        stores.extend(made)
    by_name = {st.name: st for st in stores}
    return [by_name[s.name] for s in slots], groups


def measure_update(
    workload: str, kind: str, slots: Sequence[Slot], ops: Sequence[Sequence[Op]], flush_every: int, directory: Path
) -> tuple[Update, int]:
    """Run ``ops`` on a fresh ``kind`` store set; (figures, a digest of every returned window value)."""
    shutil.rmtree(directory, ignore_errors=True)
    stores, groups = build(kind, slots, directory)
    digest = 0
    adds = flushes = flushed = 0
    add_s = flush_s = 0.0
    perf = time.perf_counter
    n = len(ops)
    for start in range(0, n, flush_every):
        chunk = ops[start : start + flush_every]
        values: list[Any] = []
        keep = values.append
        t0 = perf()
        for record_ops in chunk:
            for i, p, k, t, v, ident in record_ops:
                keep(stores[i].add(p, k, t, v, ident))
        t1 = perf()
        for g in groups:
            flushed += len(g.flush())
            g.committed()  # an embedded store writes its batch here
        t2 = perf()
        add_s += t1 - t0
        flush_s += t2 - t1
        flushes += 1
        adds += len(values)
        digest = zlib.crc32(repr(values).encode(), digest)
    for g in groups:
        for p in range(64):
            g.drop(p)
    shutil.rmtree(directory, ignore_errors=True)
    return Update(workload, kind, n, adds, flushes, flushed, round(add_s, 4), round(flush_s, 4), True), digest


def run_updates(
    records: int, flush_every: int, partitions: int, kinds: Sequence[str], log: Log, repeat: int = 1
) -> list[Update]:
    """Every workload on every implementation, ``repeat`` rounds taking turns (the best round of each
    counts: the machine is shared); ``same_values`` compares with the in-memory store."""
    log(f"generating {records:,} transactions ...")
    data = generated(records)
    out: list[Update] = []
    with tempfile.TemporaryDirectory(prefix="fraudstream-bench-stores-") as tmp:
        for name, slots in workloads():
            ops = operations(slots, data, partitions)
            baseline: int | None = None
            best: dict[str, Update] = {}
            differ: set[str] = set()
            for round_ in range(repeat):
                for kind in kinds:
                    log(f"  {name}: {kind} (round {round_ + 1}/{repeat}) ...")
                    figures, digest = measure_update(name, kind, slots, ops, flush_every, Path(tmp) / kind)
                    baseline = digest if baseline is None else baseline
                    if digest != baseline:
                        differ.add(kind)
                    if kind not in best or figures.us_per_record < best[kind].us_per_record:
                        best[kind] = figures
            for kind in kinds:
                best[kind].same_values = kind not in differ
                out.append(best[kind])
    return out


# ---------------------------------------------------------------- restore (real Kafka, one process each)


def template_documents(records: int = 20_000) -> list[bytes]:
    """Real changelog values of ``fraud.yaml``'s first stage: the group's flush after ``records`` transactions."""
    (_, slots) = workloads()[-1]
    first = [s for s in slots if s.stage == 0]
    stores, groups = build("memory", first, Path("."))
    for record_ops in operations(first, generated(records, accounts=5_000), 1):
        for i, p, k, t, v, ident in record_ops:
            stores[i].add(p, k, t, v, ident)
    docs = sorted({v for _, _, v in groups[0].flush() if v is not None})
    if not docs:
        raise RuntimeError("no changelog documents")
    return docs


def write_changelog(
    kafka: KafkaSettings, topic: str, keys: int, partitions: int, docs: Sequence[bytes], log: Log
) -> None:
    from confluent_kafka import Producer

    from services.kafka import producer_config

    producer = Producer(producer_config(kafka))
    n = len(docs)
    for i in range(keys):
        args = (topic, docs[i % n], f"bench-key-{i:08d}".encode(), i % partitions)
        while True:
            try:
                producer.produce(*args)
                break
            except BufferError:
                producer.poll(0.05)
        if i and i % 250_000 == 0:
            log(f"  wrote {i:,} keys")
    if producer.flush(120) != 0:
        raise RuntimeError("changelog: records left unsent")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def restore_in_process(
    kafka: KafkaSettings, topic: str, partitions: int, kind: str, directory: str, resume: bool
) -> dict[str, Any]:
    """In a fresh process: replay ``topic`` into a ``kind`` store of ``fraud.yaml``'s first stage
    (``kind="none"``: read only). An embedded store closes with a checkpoint; ``resume`` starts from it."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from services.kafka import consumer_config

    (_, slots) = workloads()[-1]
    first = [dataclasses.replace(s) for s in slots if s.stage == 0]
    base = _rss_mb()
    started = time.perf_counter()
    group: StateGroup | None = None
    starts = dict.fromkeys(range(partitions), OFFSET_BEGINNING)
    if kind != "none":
        _, groups = build(kind, first, Path(directory))
        group = groups[0]
        for p in range(partitions):
            group.clear(p)
            if resume and isinstance(group, KVStateGroup):
                offset = group.restore_from(p)  # 0: no valid checkpoint, wiped
                if offset > 0:
                    starts[p] = offset
    probe = Consumer(consumer_config(kafka, "bench-stores"))
    ends = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=30, cached=False)[1] for p in starts}
    probe.close()
    pending = {p for p in ends if ends[p] > 0 and (starts[p] < 0 or starts[p] < ends[p])}
    records = 0
    if pending:
        reader = Consumer(consumer_config(kafka, "bench-stores", **{"enable.partition.eof": False}))
        restore = group.restore if group is not None else None
        try:
            records = read_to_end(
                reader, topic, {p: starts[p] for p in pending}, ends,
                None if restore is None else lambda m: restore(m.partition(), m.key(), m.value()),
            )  # fmt: skip
        finally:
            reader.close()
    if isinstance(group, KVStateGroup):
        group.write_restored()  # the last restored batch: the timing ends with the last write
    seconds = time.perf_counter() - started
    rss = _rss_mb() - base
    keys = 0
    if group is not None:
        keys = group.size() if isinstance(group, KVStateGroup) else _memory_keys(group, partitions)
    if isinstance(group, KVStateGroup):
        for p in range(partitions):
            group.checkpoint(p, ends[p])
            group.drop(p)
    return {"records": records, "seconds": round(seconds, 3), "rss_mb": round(rss, 1), "keys": keys}


def read_to_end(
    reader: Any, topic: str, starts: Mapping[int, int], ends: Mapping[int, int],
    on_message: Callable[[Any], object] | None = None, timeout_s: float = 0.5,
) -> int:  # fmt: skip
    """Read ``topic``'s partitions from ``starts`` to ``ends`` with ``reader`` (a consumer, assigned here),
    calling ``on_message`` on each message (``consume`` waits up to ``timeout_s``); the number of messages.
    Under ``read_committed`` the
    position passes control records too, so it does reach the end."""
    from confluent_kafka import TopicPartition

    pending = {p for p in starts if starts[p] < 0 or starts[p] < ends[p]}
    reader.assign([TopicPartition(topic, p, starts[p]) for p in sorted(pending)])
    records = 0
    while pending:
        for m in reader.consume(5000, timeout_s):
            if m.error() is not None:
                continue
            if on_message is not None:
                on_message(m)
            records += 1
        for tp in reader.position([TopicPartition(topic, p) for p in pending]):
            if tp.offset >= ends[tp.partition]:
                pending.discard(tp.partition)
    return records


def _memory_keys(group: StateGroup, partitions: int) -> int:
    return sum(len({k for s in group.stores for k in s.keys(p)}) for p in range(partitions))


def run_restores(
    kafka: KafkaSettings, keys: int, partitions: int, kinds: Sequence[str], log: Log
) -> tuple[list[Restore], float]:
    """Write the changelog once; replay it in a new process per implementation; then restart the embedded ones."""
    from confluent_kafka.admin import AdminClient

    from services.kafka import admin_config, ensure_topics

    admin = AdminClient(admin_config(kafka, log_level=4))  # no info lines amid the tables
    topic = f"bench-{uuid.uuid4().hex[:8]}-stores-changelog"
    ensure_topics(admin, [topic], partitions=partitions, replication_factor=-1,
                  config={"cleanup.policy": "compact"}, timeout_s=30)
    out: list[Restore] = []
    ctx = multiprocessing.get_context("spawn")
    try:
        docs = template_documents()
        avg = sum(map(len, docs)) / len(docs)
        log(f"writing {keys:,} keys to {topic} ({len(docs):,} real documents cycled, avg {avg:.0f} B) ...")
        write_changelog(kafka, topic, keys, partitions, docs, log)
        with tempfile.TemporaryDirectory(prefix="fraudstream-bench-restore-") as tmp:
            plan = [("read only (Kafka)", "none", False)]
            replayed = [k for k in kinds if not k.endswith(CACHED)]  # a cache plays no part in a replay
            for kind in replayed:
                plan.append((f"restore {kind}", kind, False))
            for kind in replayed:
                if kind != "memory":
                    plan.append((f"restart {kind} (checkpoint)", kind, True))
            for name, kind, resume in plan:
                log(f"  {name} ...")
                with ctx.Pool(1) as pool:
                    r = pool.apply(restore_in_process, (kafka, topic, partitions, kind, f"{tmp}/{kind}", resume))
                out.append(Restore(name, kind, r["records"], r["keys"], r["seconds"], r["rss_mb"]))
        return out, round(avg, 1)
    finally:
        with contextlib.suppress(Exception):
            for future in admin.delete_topics([topic]).values():
                future.result(timeout=30)


def run_stores_bench(
    *,
    records: int,
    flush_every: int,
    keys: int,
    partitions: int,
    kinds: Sequence[str],
    restore: bool,
    json_output: bool,
    repeat: int = 3,
) -> int:
    """Run the measurements; print two tables (or ``--json``); the exit code."""
    import json
    import sys

    from rich.console import Console

    from services.bench.detector import machine
    from services.kafka import Unreachable, check_broker

    console = Console(stderr=json_output, width=150)

    def log(line: str) -> None:
        console.print(line, style="dim", markup=False, highlight=False)

    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds or kinds[0] != "memory":
        console.print(f"error: --stores must start with memory and name only {', '.join(KINDS)}", style="red")
        return 2
    report = StoresReport(machine(), records, flush_every, repeat, keys, partitions)
    kafka = KafkaSettings()
    if restore:
        try:
            check_broker(kafka)
        except Unreachable as exc:
            console.print(f"error: {exc}", style="red")
            return 2
    report.updates = run_updates(records, flush_every, partitions, kinds, log, repeat)
    if restore:
        report.restores, report.value_bytes_avg = run_restores(kafka, keys, partitions, kinds, log)
        report.first_stage_stores = sum(1 for s in workloads()[-1][1] if s.stage == 0)
    if json_output:
        json.dump(report.as_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    console.print(_updates_table(report))
    if report.restores:
        console.print(_restores_table(report))
    if any(not u.same_values for u in report.updates):
        console.print("error: a store returned other window values than the in-memory store", style="red")
        return 1
    return 0


def _updates_table(report: StoresReport) -> Table:
    """A row per workload and store: update and flush cost, against the in-memory store."""
    from rich.table import Table

    m = report.machine
    title = f"{m['cpus']} CPUs ({m['cpu']}), Python {m['python']} ({m['engine']}), load {m['load_average_at_start']}"
    table = Table(
        title=f"fraudstream store benchmark: update + flush, {report.records:,} transactions, "
        f"flush every {report.flush_every:,}, best of {report.repeat} rounds"
        f"\n{title}"
    )
    for col, right in (
        ("workload", False), ("store", False), ("adds", True), ("add µs/rec", True),
        ("flush µs/key", True), ("µs/rec add+flush", True), ("vs memory", True), ("same values", False),
    ):  # fmt: skip
        table.add_column(col, justify="right" if right else "left")
    memory: dict[str, float] = {}
    for u in report.updates:
        if u.store == "memory":
            memory[u.workload] = u.us_per_record
        base = memory.get(u.workload)
        ratio = f"{u.us_per_record / base:.1f}x" if base else ""
        table.add_row(
            u.workload, u.store, f"{u.adds:,}", f"{u.add_us_per_record:.2f}", f"{u.flush_us_per_key:.2f}",
            f"{u.us_per_record:.2f}", ratio, "yes" if u.same_values else "NO",
        )  # fmt: skip
    return table


def _restores_table(report: StoresReport) -> Table:
    """A row per changelog replay."""
    from rich.table import Table

    table = Table(
        title=f"changelog replay: {report.keys:,} keys, {report.partitions} partitions, "
        f"value avg {report.value_bytes_avg:.0f} B "
        f"(fraud.yaml's first stage: {report.first_stage_stores} stores), each in a new process"
    )
    for col, right in (("replay", False), ("records", True), ("keys in store", True), ("seconds", True),
                       ("records/s", True), ("RSS growth MB", True)):  # fmt: skip
        table.add_column(col, justify="right" if right else "left")
    for r in report.restores:
        table.add_row(
            r.name, f"{r.records:,}", f"{r.keys_in_store:,}" if r.store != "none" else "",
            f"{r.seconds:.2f}", f"{r.records_per_second:,.0f}", f"{r.rss_mb:,.0f}",
        )  # fmt: skip
    return table

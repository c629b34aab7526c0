"""Where the stateful path spends its time: cProfile of the in-memory processor, no broker.

``python -m services.bench.detector_profile --count 200000 --rows window,fraud`` generates transactions
(``TransactionStream``, Avro-encoded against a mock registry), then for each row's topology (the
``bench detector`` topologies) runs ``TopologyProcessor.process_batch`` over batches of ``--batch``
records as the runtime does: repartition records go straight back in (the next stage), the other outputs
to a stand-in ``_produce``, and ``flush()`` (the changelog) ends each batch. It prints µs per record
(unprofiled, then profiled; run it with ``FRAUDSTREAM_PURE_PYTHON=1`` under the compiled engine, whose
functions cProfile does not see), the share of named stages in the profiled time, the top functions by
cumulative and by own time, and with ``--callees`` what the hot functions spend their time on.
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import time
import zlib
from collections import Counter
from typing import Annotated, Any

import typer

import schemas
from services.bench.detector import bench_processor, topology_text
from services.config import GeneratorSettings, KafkaSettings
from services.detector import loads_topology
from services.generator.produce import stream_config
from services.generator.scenarios import TransactionStream
from services.kafka import registry_client
from topology.build import PURE_PYTHON_ENV, compiled_modules, engine_label
from topology.processor import TopologyProcessor
from topology.records import OutRecord, RawRecord
from topology.runtime.collector import DEFAULT_YOUNG_THRESHOLD, young_threshold
from topology.serde.decoder import AvroEncoder

SOURCE = "profile.transactions"
# (label, file suffix, function): their cumulative time, as a share of the whole loop's.
STAGES: list[tuple[str, str, str]] = [
    ("decode (ProjectionDecoder.decode)", "topology/serde/projection.py", "decode"),
    ("aggregate (_aggregate: filter, key, add)", "topology/processor/processor.py", "_aggregate"),
    ("  of which WindowStore.add", "topology/state/window.py", "add"),
    ("changelog (StateGroup.flush: JSON encode)", "topology/state/group.py", "flush"),
    ("repartition forward (JSON headers out)", "topology/processor/stages.py", "forward"),
    ("repartition read (_process_repartitioned)", "topology/processor/processor.py", "_process_repartitioned"),
    ("route (Decider.route)", "topology/processor/decisions.py", "route"),
    ("alert (_alert)", "topology/processor/processor.py", "_alert"),
    ("produce (stand-in call)", "services/bench/detector_profile.py", "_produce"),
]


def default_partition(key: bytes | None, partitions: int) -> int:
    """A stable partition of a key (crc32, as the in-memory fakes use; not Kafka's murmur2)."""
    return 0 if key is None else zlib.crc32(key) % partitions


def generated(count: int, partitions: int) -> tuple[Any, list[RawRecord]]:
    """(registry, ``count`` Avro transactions as source records keyed by source account)."""
    registry = registry_client(KafkaSettings.with_overrides(schema_registry_url="mock://detector-profile"))
    encoder = AvroEncoder(registry, schemas.schema_text("transaction"), f"{SOURCE}-value")
    stream = TransactionStream(stream_config(GeneratorSettings.with_overrides(seed=42, rate=0)))
    offsets = [0] * partitions
    records = []
    for _ in range(count):
        g = next(stream)
        key = g.record["source_account"].encode()
        p = default_partition(key, partitions)
        records.append(RawRecord(SOURCE, p, offsets[p], key, encoder.encode(g.record), g.record["event_time"], ()))
        offsets[p] += 1
    return registry, records


def processor_for(row: str, registry: Any, partitions: int) -> TopologyProcessor:
    """The processor of a ``bench detector`` row, built as the bench builds it, owning every partition."""
    processor = bench_processor(registry, loads_topology(topology_text(row, "profile", SOURCE), filename=f"<{row}>"))
    processor.assigned([(t, p) for t in processor.source_topics for p in range(partitions)])
    return processor


def _produce(out: OutRecord, produced: Counter[str]) -> None:
    produced[out.topic] += 1


def run_loop(processor: TopologyProcessor, records: list[RawRecord], batch: int, partitions: int) -> Counter[str]:
    """Every record through the processor in batches; the records produced per topic."""
    repartition = set(processor.repartition_topics)
    produced: Counter[str] = Counter()
    offsets: Counter[tuple[str, int]] = Counter()
    for start in range(0, len(records), batch):
        todo = records[start : start + batch]
        while todo:
            later: list[RawRecord] = []
            for outs in processor.process_batch(todo):
                for o in outs:
                    if o.topic in repartition:
                        p = default_partition(o.key, partitions)
                        later.append(RawRecord(o.topic, p, offsets[(o.topic, p)], o.key, o.value,
                                               o.timestamp_ms or 0, o.headers))
                        offsets[(o.topic, p)] += 1
                    else:
                        _produce(o, produced)
            todo = later
        for o in processor.flush():
            _produce(o, produced)
    return produced


def stage_shares(stats: pstats.Stats, total: float) -> list[tuple[str, float]]:
    """Each ``STAGES`` entry's cumulative time over ``total``."""
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    out = []
    for label, suffix, name in STAGES:
        ct = sum(v[3] for (f, _, fn), v in table.items() if fn == name and f.endswith(suffix))
        out.append((label, ct / total if total else 0.0))
    return out


# (file suffix, function) whose direct callees ``--callees`` lists.
CALLEES: list[tuple[str, str]] = [
    ("topology/processor/processor.py", "process"),
    ("topology/processor/processor.py", "_aggregate"),
    ("topology/state/window.py", "add"),
    ("topology/processor/stages.py", "forward"),
    ("topology/processor/processor.py", "_process_repartitioned"),
    ("topology/state/group.py", "flush"),
    ("topology/processor/decisions.py", "route"),
]


def callees(stats: pstats.Stats, total: float, top: int = 6) -> list[str]:
    """For each ``CALLEES`` function, its ``top`` direct callees by cumulative time spent under it."""
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    lines = []
    for suffix, name in CALLEES:
        for fn, (_, _, _, ct, _) in table.items():
            if fn[2] != name or not fn[0].endswith(suffix) or not ct:
                continue
            lines.append(f"  {suffix.rsplit('/', 1)[-1]}:{fn[1]} {name}: {ct / total:.1%}")
            under = [(v[4][fn][3], v[4][fn][1], f) for f, v in table.items() if fn in v[4]]
            for c_ct, calls, f in sorted(under, reverse=True)[:top]:
                where = f"{f[0].rsplit('/', 1)[-1]}:{f[1]}({f[2]})"
                lines.append(f"      {c_ct / total:6.1%} {calls:>9,} {where}")
    return lines


def profile_row(
    row: str, registry: Any, records: list[RawRecord], batch: int, partitions: int, top: int, show_callees: bool
) -> str:
    """The report of one row: µs/record unprofiled and profiled, stage shares, top functions."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    with young_threshold(DEFAULT_YOUNG_THRESHOLD):  # as the runtime runs its loop
        produced = run_loop(processor_for(row, registry, partitions), records, batch, partitions)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    profiler = cProfile.Profile()
    processor = processor_for(row, registry, partitions)
    gc.collect()
    profiler.enable()
    with young_threshold(DEFAULT_YOUNG_THRESHOLD):
        run_loop(processor, records, batch, partitions)
    profiler.disable()
    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf)
    total: float = stats.total_tt  # type: ignore[attr-defined]
    n = len(records)
    lines = [
        f"== {row}: {n:,} records, batches of {batch:,}, {partitions} partitions, {engine_label()}",
        f"unprofiled: {wall / n * 1e6:.1f} µs/record wall, {cpu / n * 1e6:.1f} µs/record CPU "
        f"({n / wall:,.0f} records/s); profiled: {total / n * 1e6:.1f} µs/record",
        "produced: " + ", ".join(f"{t} {c:,}" for t, c in sorted(produced.items())),
        "share of the profiled time (cumulative, nested rows overlap):",
        *(f"  {label:<45} {share:6.1%}" for label, share in stage_shares(stats, total)),
        *(["direct callees (share of the profiled time, calls):", *callees(stats, total)] if show_callees else []),
    ]
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return "\n".join(lines) + "\n" + buf.getvalue()


def main(
    count: Annotated[int, typer.Option(help="Generated transactions.")] = 200_000,
    rows: Annotated[str, typer.Option(help="Rows of `bench detector` (stateless,window,fraud).")] = "window,fraud",
    batch: Annotated[int, typer.Option(help="Records per batch (the runtime's consume batch), then flush.")] = 2_000,
    partitions: Annotated[int, typer.Option(help="Partitions (stores are per partition).")] = 6,
    top: Annotated[int, typer.Option(help="Functions listed per ordering.")] = 15,
    show_callees: Annotated[bool, typer.Option("--callees", help="Also the callees of the hot functions.")] = False,
) -> None:
    """Profile the in-memory processor over generated transactions, one row after the other."""
    if compiled_modules():
        print(f"cProfile does not see into the compiled modules: {PURE_PYTHON_ENV}=1 profiles the Python sources")
    registry, records = generated(count, partitions)
    for row in (r.strip() for r in rows.split(",") if r.strip()):
        print(profile_row(row, registry, records, batch, partitions, top, show_callees))


if __name__ == "__main__":
    typer.run(main)

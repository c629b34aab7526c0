"""Processor throughput without Kafka: input records per second, stateless vs fraud.yaml.

Transactions come from the generator's pure scenario stream (fixed seed), are encoded once
with the real ``AvroEncoder`` (confluent_kafka's in-memory mock registry) and then fed, as
``RawRecord``s, to ``TopologyProcessor.process`` with the real ``AvroDecoder``. Repartition
records are fed back in (the next stage), as the Kafka runtime would read them, and
``flush()`` is called every ``--commit-every`` input records, as the runtime does at each
commit. Only processing is timed (not generation or encoding).

    fraudstream bench processor [--count 100000] [--partitions 3] [--commit-every 1000] [--profile]
"""

from __future__ import annotations

import cProfile
import dataclasses
import json
import pstats
import sys
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient

from schemas import schema_text
from services.bench.detector import machine
from services.detector import FRAUD_TOPOLOGY, load_topology
from services.generator.scenarios import StreamConfig, TransactionStream
from topology.plan.model import Topology
from topology.processor import TopologyProcessor
from topology.records import RawRecord
from topology.serde.decoder import AvroDecoder, AvroEncoder


def stateless(topology: Topology) -> Topology:
    """``topology`` with its stateful rules (and branches left without rules) removed."""
    branches = []
    for b in topology.branches:
        rules = tuple(r for r in b.rules if not r.stateful)
        if rules:
            branches.append(dataclasses.replace(b, rules=rules))
    return dataclasses.replace(topology, branches=tuple(branches))


def encoded_input(
    registry: SchemaRegistryClient, topic: str, count: int, seed: int, partitions: int
) -> list[RawRecord]:
    """``count`` generated transactions as the records a consumer of ``topic`` would read."""
    encoder = AvroEncoder(registry, schema_text("transaction"), f"{topic}-value")
    offsets = [0] * partitions
    out = []
    for g in TransactionStream(StreamConfig(seed=seed)).take(count):
        key = g.record["source_account"].encode()
        p = zlib.crc32(key) % partitions
        out.append(RawRecord(topic, p, offsets[p], key, encoder.encode(g.record), g.record["event_time"]))
        offsets[p] += 1
    return out


def run(
    processor: TopologyProcessor, records: Sequence[RawRecord], partitions: int, commit_every: int
) -> tuple[float, Counter[str]]:
    """Seconds to process ``records`` (and the repartition records they cause), and outputs per topic."""
    process = processor.process
    flush = getattr(processor, "flush", None)
    repartition = set(processor.repartition_topics)
    processor.assigned([(t, p) for t in processor.source_topics for p in range(partitions)])
    offsets: dict[tuple[str, int], int] = {}
    outputs: Counter[str] = Counter()
    started = time.perf_counter()
    for i, record in enumerate(records, 1):
        queue = [record]
        while queue:
            rec = queue.pop()
            for o in process(rec):
                outputs[o.topic] += 1
                if o.topic in repartition:
                    p = zlib.crc32(o.key or b"") % partitions
                    off = offsets.get((o.topic, p), 0)
                    offsets[(o.topic, p)] = off + 1
                    queue.append(RawRecord(o.topic, p, off, o.key, o.value, rec.timestamp_ms, o.headers))
        if flush is not None and i % commit_every == 0:
            outputs.update(o.topic for o in flush())
    if flush is not None:
        outputs.update(o.topic for o in flush())
    return time.perf_counter() - started, outputs


def run_processor_bench(*, count: int, seed: int, partitions: int, commit_every: int, profile: bool,
                        json_output: bool) -> int:  # fmt: skip
    """Both topologies over the same generated input; print the table (or JSON); the exit code."""
    fraud = load_topology(FRAUD_TOPOLOGY)
    registry = SchemaRegistryClient.new_client({"url": "mock://bench-processor"})
    records = encoded_input(registry, fraud.source, count, seed, partitions)
    results: dict[str, Any] = {}
    for name, topology in (("stateless", stateless(fraud)), ("fraud.yaml", fraud)):
        decoder = AvroDecoder(registry, schema_text("transaction"))
        processor = TopologyProcessor(topology, decoder.decode, version="bench")
        profiler = cProfile.Profile() if profile and name == "fraud.yaml" else None
        if profiler is not None:
            profiler.enable()
        seconds, by_topic = run(processor, records, partitions, commit_every)
        if profiler is not None:
            profiler.disable()
        if by_topic[topology.dlq]:
            print(f"{name}: {by_topic[topology.dlq]} records dead-lettered: the bench is broken", file=sys.stderr)
            return 1
        outputs = sum(by_topic.values())
        results[name] = {
            "rules": len(topology.rules),
            "records": len(records),
            "seconds": round(seconds, 3),
            "input_per_second": round(len(records) / seconds),
            "outputs_per_input": round(outputs / len(records), 3),
            "fraud": by_topic[topology.branches[0].to],
        }
        if profiler is not None:
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(20)
    ratio = results["fraud.yaml"]["input_per_second"] / results["stateless"]["input_per_second"]
    m = machine()
    doc = {
        "machine": m,
        "count": count, "partitions": partitions, "commit_every": commit_every,
        "results": results, "stateful_vs_stateless": round(ratio, 3),
    }  # fmt: skip
    if json_output:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"processor bench: {count} generated transactions (seed {seed}), {partitions} partitions, "
          f"flush every {commit_every}, python {m['python']} ({m['engine']}), {m['cpus']} cpus")  # fmt: skip
    print(f"{'topology':<12} {'rules':>5} {'seconds':>8} {'input rec/s':>12} {'outputs/input':>14} {'fraud':>6}")
    for name, r in results.items():
        print(f"{name:<12} {r['rules']:>5} {r['seconds']:>8.2f} {r['input_per_second']:>12,} "
              f"{r['outputs_per_input']:>14.2f} {r['fraud']:>6}")  # fmt: skip
    print(f"stateful / stateless: {ratio:.2f}")
    return 0


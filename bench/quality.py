"""Detection quality without Kafka: the generator's labelled scenarios through the fraud topology.

The pure scenario stream (``services.generator.scenarios``; default traffic mix, fixed seed) is
encoded with the real Avro serde (in-memory mock registry), run through ``TopologyProcessor``
exactly as the runtimes run it (repartition records fed back in, ``flush()`` every
``commit_every`` records) and the decisions are scored against the labels with
``services.evaluate.score``: precision, recall and F1 overall, per rule and per scenario, and
incident-level recall (an incident counts as caught when any of its transactions is flagged).

    python -m bench.quality [--count 200000] [--seed 7] [--topology topology/fraud.yaml] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.schema_registry import SchemaRegistryClient
from rich.console import Console

from schemas import schema_text
from services.evaluate.cli import print_report
from services.evaluate.score import Decision, Label, Report, evaluate
from services.generator.scenarios import StreamConfig, TransactionStream
from topology.plan import Topology
from topology.processor import H_RULES, TopologyProcessor
from topology.records import RawRecord
from topology.serde import AvroDecoder, AvroEncoder
from topology.yaml_loader import DEFAULT_PATH, load_topology

H_INDEX = "bench.index"  # input position, carried through to the decision (headers pass through)


@dataclass(frozen=True)
class Run:
    """What one offline run decided, and how long it took."""

    report: Report
    labels: list[Label]
    decisions: dict[str, Decision]
    transactions: int
    flagged: int
    dead_letters: int
    seconds: float


def run(topology: Topology, count: int, seed: int, *, partitions: int = 3, commit_every: int = 1000) -> Run:
    """Generate ``count`` transactions with ``seed``, decide each with ``topology``, score the decisions."""
    registry = SchemaRegistryClient.new_client({"url": "mock://bench-quality"})
    encoder = AvroEncoder(registry, schema_text("transaction"), f"{topology.source}-value")
    processor = TopologyProcessor(topology, AvroDecoder(registry, schema_text("transaction")).decode, version="q")
    processor.assigned([(t, p) for t in processor.source_topics for p in range(partitions)])
    repartition = set(processor.repartition_topics)
    fraud_topics = {b.to for b in topology.branches}
    labels: list[Label] = []
    decisions: dict[str, Decision] = {}
    offsets: dict[tuple[str, int], int] = {}
    dead = 0
    started = time.perf_counter()
    for i, g in enumerate(TransactionStream(StreamConfig(seed=seed)).take(count)):
        tx_id = g.record["transaction_id"]
        labels.append(Label(tx_id, g.scenario, g.is_fraud, g.incident_id))
        key = g.record["source_account"].encode()
        p = zlib.crc32(key) % partitions
        off = offsets.get((topology.source, p), 0)
        offsets[(topology.source, p)] = off + 1
        queue = [RawRecord(topology.source, p, off, key, encoder.encode(g.record), g.record["event_time"],
                           ((H_INDEX, str(i).encode()),))]  # fmt: skip
        while queue:
            rec = queue.pop()
            for o in processor.process(rec):
                if o.topic in repartition:
                    rp = zlib.crc32(o.key or b"") % partitions
                    roff = offsets.get((o.topic, rp), 0)
                    offsets[(o.topic, rp)] = roff + 1
                    queue.append(RawRecord(o.topic, rp, roff, o.key, o.value, rec.timestamp_ms, o.headers))
                elif o.topic == topology.dlq:
                    dead += 1
                else:
                    rules = dict(o.headers).get(H_RULES, b"").decode()
                    ids = tuple(r.split("@", 1)[0] for r in rules.split(",") if r)
                    decisions[tx_id] = Decision(tx_id, o.topic in fraud_topics, ids)
        if (i + 1) % commit_every == 0:
            processor.flush()
    seconds = time.perf_counter() - started
    report = evaluate(labels, decisions)
    return Run(report, labels, decisions, count, sum(1 for d in decisions.values() if d.fraud), dead, seconds)


def as_json(r: Run) -> dict[str, object]:
    return {**r.report.as_dict(), "transactions": r.transactions, "flagged": r.flagged,
            "dead_letters": r.dead_letters}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.quality", description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--count", type=int, default=200_000, help="transactions (default 200000)")
    ap.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    ap.add_argument("--topology", type=Path, default=DEFAULT_PATH, help="topology YAML (default fraud.yaml)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    r = run(load_topology(args.topology), args.count, args.seed)
    if args.json:
        print(json.dumps(as_json(r)))
        return 0
    console = Console()
    console.print(f"{r.transactions} generated transactions (seed {args.seed}), topology {args.topology}: "
                  f"{r.flagged} flagged, {r.dead_letters} dead letters, {r.seconds:.1f} s")  # fmt: skip
    print_report(r.report, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

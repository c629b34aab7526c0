"""Detection quality without Kafka: the generator's labelled scenarios through the fraud topology.

The pure scenario stream (``services.generator.scenarios``; default traffic mix, fixed seed) is
encoded with the real Avro serde (in-memory mock registry), run through ``TopologyProcessor``
exactly as the runtimes run it (repartition records fed back in, ``flush()`` every
``commit_every`` records) and the decisions are scored against the labels with
``services.evaluate.score``: precision, recall and F1 overall, per rule and per scenario, and
incident-level recall (an incident counts as caught when any of its transactions is flagged).

Two views of the same run, labelled as such:
- routing: the fraud/legit decision taken when each transaction arrives (the fraud topic);
- detection: routing, plus the earlier transactions that a later FraudAlert names as related
  (``related: true`` aggregates: the first payments of a burst, routed before the pattern showed).

    python -m services.evaluate.quality [--count 200000] [--seeds 7,11,13] [--topology FILE] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from rich.console import Console
from rich.table import Table

from schemas import schema_text
from services.detector import FRAUD_TOPOLOGY, load_topology
from services.detector.alerts import FraudAlerts
from services.evaluate.cli import print_report
from services.evaluate.score import Decision, Label, Report, evaluate, related_from_alerts, with_related
from services.generator.scenarios import DEFAULT_RATES, ScenarioRates, StreamConfig, TransactionStream
from topology.plan.model import Topology
from topology.processor import TopologyProcessor
from topology.records import H_RULES, RawRecord
from topology.serde.decoder import AvroDecoder, AvroEncoder

H_INDEX = "bench.index"  # input position, carried through to the decision (headers pass through)


@dataclass(frozen=True)
class Run:
    """What one offline run decided, and how long it took."""

    report: Report  # routing decisions
    detection: Report  # routing decisions plus the transactions later alerts named as related
    labels: list[Label]
    decisions: dict[str, Decision]
    related: dict[str, tuple[str, ...]]  # transaction id -> rules whose alerts named it
    transactions: int
    flagged: int
    alerts: int
    dead_letters: int
    seconds: float


def run(
    topology: Topology, count: int, seed: int, *, partitions: int = 3, commit_every: int = 1000,
    rates: ScenarioRates | None = None,
) -> Run:
    """Generate ``count`` transactions with ``seed``, decide each with ``topology``, score the decisions."""
    registry = SchemaRegistryClient.new_client({"url": "mock://bench-quality"})
    encoder = AvroEncoder(registry, schema_text("transaction"), f"{topology.source}-value")
    alert_decoder = AvroDecoder(registry, schema_text("fraud_alert"))
    writer = FraudAlerts.for_topic(registry, topology.alerts) if topology.alerts is not None else None
    processor = TopologyProcessor(
        topology, AvroDecoder(registry, schema_text("transaction")).decode, version="q", alerts=writer
    )
    processor.assigned([(t, p) for t in processor.source_topics for p in range(partitions)])
    repartition = set(processor.repartition_topics)
    fraud_topics = {b.to for b in topology.branches}
    labels: list[Label] = []
    decisions: dict[str, Decision] = {}
    offsets: dict[tuple[str, int], int] = {}
    alert_values: list[dict[str, Any]] = []
    dead = 0
    started = time.perf_counter()
    for i, g in enumerate(TransactionStream(StreamConfig(seed=seed, rates=rates or DEFAULT_RATES)).take(count)):
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
                elif o.topic == topology.alerts:
                    alert_values.append(alert_decoder.decode(o.value))
                else:
                    rules = dict(o.headers).get(H_RULES, b"").decode()
                    ids = tuple(r.split("@", 1)[0] for r in rules.split(",") if r)
                    decisions[tx_id] = Decision(tx_id, o.topic in fraud_topics, ids)
        if (i + 1) % commit_every == 0:
            processor.flush()
    seconds = time.perf_counter() - started
    related = related_from_alerts(alert_values)
    report = evaluate(labels, decisions)
    detection = evaluate(labels, with_related(decisions, related))
    alerts = len(alert_values)
    flagged = sum(1 for d in decisions.values() if d.fraud)
    return Run(report, detection, labels, decisions, related, count, flagged, alerts, dead, seconds)


def as_json(r: Run) -> dict[str, object]:
    """The routing report's keys (overall, by_rule, ...), run figures, and ``detection`` (the same keys)."""
    return {**r.report.as_dict(), "transactions": r.transactions, "flagged": r.flagged, "alerts": r.alerts,
            "dead_letters": r.dead_letters, "detection": r.detection.as_dict()}  # fmt: skip


def _incidents(report: Report) -> str:
    caught = sum(c for c, _ in report.incident_recall.values())
    total = sum(t for _, t in report.incident_recall.values())
    return f"{caught}/{total}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.evaluate.quality",
                                 description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--count", type=int, default=200_000, help="transactions (default 200000)")
    ap.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    ap.add_argument("--seeds", help="several seeds, comma-separated (e.g. 7,11,13): one report each and a summary")
    ap.add_argument("--topology", type=Path, default=FRAUD_TOPOLOGY, help="topology YAML (default fraud.yaml)")
    ap.add_argument("--json", action="store_true", help="print one JSON object (with --seeds: seed -> object)")
    args = ap.parse_args(argv)
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    topology = load_topology(args.topology)
    runs: dict[int, Run] = {}
    console = Console()
    for seed in seeds:
        r = runs[seed] = run(topology, args.count, seed)
        if args.json:
            continue
        console.print(f"{r.transactions} generated transactions (seed {seed}), topology {args.topology}: "
                      f"{r.flagged} routed to fraud, {r.alerts} alerts naming {len(r.related)} earlier "
                      f"transactions, {r.dead_letters} dead letters, {r.seconds:.1f} s")  # fmt: skip
        console.print(f"[bold]seed {seed}: ROUTING[/bold] (decided when each transaction arrives)")
        print_report(r.report, console)
        console.print(f"[bold]seed {seed}: DETECTION[/bold] (routed, or named as related by a later alert)")
        print_report(r.detection, console)
    if args.json:
        if args.seeds:
            print(json.dumps({str(seed): as_json(r) for seed, r in runs.items()}))
        else:
            print(json.dumps(as_json(runs[seeds[0]])))
        return 0
    if len(runs) > 1:
        table = Table(title=f"Summary ({args.count} transactions per seed)")
        for col in ("seed", "routing P", "routing R", "detection P", "detection R", "incidents (routing)"):
            table.add_column(col, justify="right")
        for seed, r in runs.items():
            ro, de = r.report.overall, r.detection.overall
            table.add_row(str(seed), f"{ro.precision:.3f}", f"{ro.recall:.3f}", f"{de.precision:.3f}",
                          f"{de.recall:.3f}", _incidents(r.report))  # fmt: skip
        console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

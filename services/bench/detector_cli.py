"""Printing of `fraudstream bench detector`: a rich table, or ``--json``."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table

from services.bench.detector import DetectorBench, Report, machine
from services.config import KafkaSettings
from services.kafka import Unreachable
from topology.processor import H_BRANCH, H_RULES, H_VERSION

# What the detector writes on a legit record (the headers of a decision), for the (a') baseline.
DECISION_HEADERS: list[tuple[str, str | bytes | None]] = [
    (H_BRANCH, b"legit"), (H_RULES, b""), (H_VERSION, b"0.1.0+00000000"),
]


def run_detector_bench(
    *,
    count: int,
    partitions: int,
    commit_interval_ms: int,
    rate: float,
    latency_seconds: float,
    stateless: bool,
    profile: bool,
    json_output: bool,
) -> int:
    """Run every phase; print the table (or JSON); the exit code."""
    console = Console(stderr=json_output)
    kafka = KafkaSettings()
    try:
        bench = DetectorBench(
            kafka,
            count=count,
            partitions=partitions,
            commit_interval_ms=commit_interval_ms,
            log=lambda line: console.print(line, style="dim"),
        )
    except Unreachable as exc:
        console.print(f"error: {exc}", style="red")
        return 2
    report = Report(machine(), count, partitions, commit_interval_ms, 0.0)
    try:
        console.print(f"preloading {count:,} Avro transactions ({partitions} partitions) ...")
        report.preload_per_second = round(bench.preload(), 1)
        console.print("(a) raw exactly-once copy loop ...")
        raw = bench.raw_copy()
        report.results.append(raw)
        console.print("(a') raw loop with the detector's decision headers ...")
        report.results.append(bench.raw_copy(DECISION_HEADERS))
        console.print("(b) detector, fraud topology ...")
        fraud, prof = bench.detector("(b) detector runtime, fraud.yaml (stateful + repartition)", False, profile)
        report.results.append(fraud)
        report.profile = prof
        if stateless:
            console.print("(b') detector, stateless rule only ...")
            plain, plain_prof = bench.detector("(b') detector runtime, stateless amount >= 900", True, profile)
            report.results.append(plain)
            if plain_prof:
                report.profile = f"fraud.yaml pass:\n{prof}\nstateless pass:\n{plain_prof}"
        for r in report.results[1:]:
            r.ratio_to_raw = round(r.per_second / raw.per_second, 3) if raw.per_second else None
        if latency_seconds > 0:
            console.print(f"latency at {rate:,.0f} tx/s for {latency_seconds:g} s (detector subprocess) ...")
            report.latency = bench.latency(rate, latency_seconds)
    finally:
        bench.cleanup()
    if json_output:
        json.dump(report.as_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    _print(console, report)
    return 0


def _print(console: Console, report: Report) -> None:
    m = report.machine
    table = Table(
        title=(
            f"fraudstream detector benchmark: {report.count:,} tx, {report.partitions} partitions, commit every "
            f"{report.commit_interval_ms} ms; {m['cpus']} CPUs ({m['cpu']}), Python {m['python']}, "
            f"load {m['load_average_at_start']}"
        )
    )
    table.add_column("measurement")
    table.add_column("tx/s", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("transactions", justify="right")
    table.add_column("vs (a)", justify="right")
    table.add_row("preload (generate + encode + produce)", f"{report.preload_per_second:,.0f}", "", "", "")
    for r in report.results:
        ratio = "" if r.ratio_to_raw is None else f"{r.ratio_to_raw:.0%}"
        table.add_row(r.name, f"{r.per_second:,.0f}", f"{r.seconds:.1f}", f"{r.transactions:,}", ratio)
    console.print(table)
    if report.latency is not None:
        lat = report.latency
        console.print(
            f"end-to-end latency (produce -> visible to read_committed) at {lat.target_rate:,.0f} tx/s "
            f"(achieved {lat.achieved_rate:,.0f}): p50 {lat.p50_ms:.1f} ms, p99 {lat.p99_ms:.1f} ms, "
            f"max {lat.max_ms:.1f} ms over {lat.records:,} records"
        )
    if report.profile:
        console.print(report.profile, markup=False, highlight=False)

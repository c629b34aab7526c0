"""Running and printing `fraudstream bench detector`: the interleaved rounds, a rich table, or ``--json``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table

from services.bench.detector import (
    LATENCY_TARGET_MS,
    LATENCY_TARGET_RATE,
    RAW,
    ROWS,
    DetectorBench,
    Report,
    Spread,
    machine,
    schedule,
)
from services.config import KafkaSettings
from services.kafka import Unreachable


def run_detector_bench(
    *,
    count: int,
    rounds: int,
    rows: Sequence[str],
    partitions: int,
    commit_interval_ms: int,
    rate: float,
    latency_seconds: float,
    latency_row: str,
    latency_commit_interval_ms: int,
    profile: str | None,
    json_output: bool,
) -> int:
    """Preload, run every pass interleaved over ``rounds``, then the latency; print the table (or JSON)."""
    console = Console(stderr=json_output, width=None if sys.stdout.isatty() else 160)
    detectors = [r for r in ROWS if r != RAW]
    bad = [r for r in rows if r not in ROWS] + [r for r in (latency_row, profile) if r and r not in detectors]
    if bad or RAW not in rows:
        console.print(
            f"error: --rows takes {', '.join(ROWS)} ({RAW} among them); --latency-row and --profile one of "
            f"{', '.join(detectors)}" + (f"; not {', '.join(bad)}" if bad else ""),
            style="red",
        )
        return 2
    kafka = KafkaSettings()

    def log(line: str) -> None:
        console.print(line, style="dim", markup=False, highlight=False)

    try:
        bench = DetectorBench(
            kafka, count=count, partitions=partitions,
            commit_interval_ms=commit_interval_ms, log=log,
        )
    except Unreachable as exc:
        console.print(f"error: {exc}", style="red")
        return 2
    report = Report(machine(), count, partitions, commit_interval_ms, 0.0, rounds)
    try:
        _run(bench, report, rows, log)
        if profile:
            log(f"profiled extra pass (not in the table): {profile} ...")
            report.profile = bench.run_pass(profile, rounds + 1, profile=True)[1]
        if latency_seconds > 0:
            log(f"latency: {latency_row} at {rate:,.0f} tx/s for {latency_seconds:g} s (detector subprocess) ...")
            report.latency = bench.latency(rate, latency_seconds, latency_row, latency_commit_interval_ms)
    finally:
        report.deleted_topics = len(bench.cleanup())
        log(f"deleted the run's {report.deleted_topics} topics (bench-{bench.run_id}*) and its consumer groups")
    if json_output:
        json.dump(report.as_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print(console, report)
    return 0


def _run(bench: DetectorBench, report: Report, rows: Sequence[str], log: Callable[[str], None]) -> None:
    log(f"preloading {report.count:,} Avro transactions ({report.partitions} partitions) ...")
    report.preload_per_second = round(bench.preload(), 1)
    raw: dict[int, float] = {}
    for round_, row in schedule(report.rounds, rows):
        result, _ = bench.run_pass(row, round_)
        report.results.append(result)
        if row == RAW:
            raw[round_] = result.per_second
        elif raw.get(round_):
            result.ratio_to_raw = round(result.per_second / raw[round_], 3)
        log(
            f"  round {round_}/{report.rounds} {row}: {result.per_second:,.0f} tx/s, {result.seconds:.1f} s, "
            f"{result.cpu_us_per_record or 0:.1f} µs CPU/record, load average {result.load_after}"
        )


def _range(s: Spread, fmt: str) -> str:
    return f"{s.low:{fmt}} - {s.high:{fmt}}"


def _print(console: Console, report: Report) -> None:
    m = report.machine
    table = Table(
        title=(
            f"fraudstream detector benchmark: {report.count:,} tx x {report.rounds} interleaved rounds, "
            f"{report.partitions} partitions, commit every {report.commit_interval_ms} ms; {m['cpus']} CPUs "
            f"({m['cpu']}), Python {m['python']} ({m['engine']}), load {m['load_average_at_start']}"
        )
    )
    for name, justify in [
        ("row", "left"), ("median tx/s", "right"), ("tx/s min - max", "right"), ("vs raw (median)", "right"),
        ("vs raw min - max", "right"), ("CPU µs/record", "right"), ("target", "right"), ("", "left"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_row("preload (generate + encode + produce)", f"{report.preload_per_second:,.0f}", *[""] * 6)
    for s in report.rows():
        table.add_row(
            s.name,
            f"{s.rate.median:,.0f}",
            _range(s.rate, ",.0f"),
            "" if s.ratio is None else f"{s.ratio.median:.0%}",
            "" if s.ratio is None else _range(s.ratio, ".0%"),
            "" if s.cpu_us is None else f"{s.cpu_us.median:.1f}",
            "" if s.target is None else f">= {s.target:.0%}",
            s.verdict or "",
        )
    console.print(table)
    console.print(
        "rows: raw = consume -> produce -> commit on confluent_kafka; one window = count by source_account over "
        "sliding 3m (grace 30s) >= 10, plus amount >= 900; vs raw = tx/s over the raw pass of the same round",
        style="dim",
    )
    lat = report.latency
    if lat is not None:
        verdict = lat.verdict
        target = f"; target p99 <= {LATENCY_TARGET_MS:.0f} ms at {LATENCY_TARGET_RATE:,.0f} tx/s: {verdict}"
        console.print(
            f"end-to-end latency, {lat.row} (produce -> visible to read_committed; commit every "
            f"{lat.commit_interval_ms} ms) at {lat.target_rate:,.0f} tx/s "
            f"(achieved {lat.achieved_rate:,.0f}): p50 {lat.p50_ms:.1f} ms, p99 {lat.p99_ms:.1f} ms, "
            f"max {lat.max_ms:.1f} ms over {lat.records:,} records{target if verdict else ''}"
        )
        if lat.fell_behind:
            console.print(
                f"  latency grew from p50 {lat.first_p50_ms:.0f} ms (first tenth) to {lat.last_p50_ms:.0f} ms (last "
                "tenth): the detector did not sustain the rate, so this is mostly a backlog",
                style="yellow",
            )
    if report.profile:
        console.print(report.profile, markup=False, highlight=False)

"""Hot keys: fraud.yaml's per-record speed on traffic with one hot payer or one hot payee, against normal
traffic of the same size, in the same run (issue 14: "within 2x of normal traffic").

Three inputs of ``normal + hot`` records each, preloaded once on unique topics:

- ``normal``: that many records of the seeded stream every detector pass reads;
- ``hot payer``: ``normal`` records of that stream, plus ``hot`` payments from ONE source account within
  5 minutes of event time (the velocity and card-testing windows), merged by event time;
- ``hot payee``: the same ``normal`` records, plus ``hot`` payments of one amount to ONE target account
  from distinct payers within 5 minutes (the fan-in window, after the repartition stage).

Then ``rounds`` rounds, interleaved (normal, payer, payee, normal, ...), each a ``DetectorBench`` pass
of fraud.yaml with its own application id. Per row: the median tx/s, the CPU µs per record, the median
ratio of its speed to the normal pass of the same round, and the speed of its hot records alone (the
pass's time less its normal records' at the normal pass's per-record time), each with its spread. The
target applies to the hot records alone: at least half the normal per-record speed.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from services.bench.detector import DetectorBench, Log, Spread, Throughput
from topology.build import engine_label

HOT_WINDOW_MS = 5 * 60_000
SPEED_TARGET = 0.5  # hot traffic at least half as fast per record as normal traffic
KINDS = ("normal", "hot-payer", "hot-payee")


def hot_records(kind: str, base: Sequence[Mapping[str, Any]], hot: int) -> list[dict[str, Any]]:
    """``base`` with ``hot`` records of ``kind`` (see the module) inside 5 minutes in the middle of its
    event-time span, sorted by event time; ``normal``: ``base`` as it is (a caller gives it ``hot`` more)."""
    out = [dict(r) for r in base]
    if kind == "normal":
        return out
    times = sorted(int(r["event_time"]) for r in base)
    start = times[len(times) // 2] - HOT_WINDOW_MS // 2
    template = base[0]
    for j in range(hot):
        t = start + j * HOT_WINDOW_MS // hot
        if kind == "hot-payer":
            r = {
                "source_account": "acct-hot", "target_account": f"shop-{j % 97}", "amount": Decimal("12.50"),
                "merchant_category": "5411",
            }  # fmt: skip
        elif kind == "hot-payee":  # a transfer to a private account (no merchant): what fan-in aggregates
            r = {
                "source_account": f"payer-{j:07d}", "target_account": "mule-hot", "amount": Decimal("500.00"),
                "merchant_category": None,
            }  # fmt: skip
        else:
            raise ValueError(f"unknown traffic {kind!r}: one of {', '.join(KINDS)}")
        out.append({**template, **r, "transaction_id": f"{kind}-{j:09d}", "event_time": t})
    out.sort(key=lambda r: int(r["event_time"]))
    return out


@dataclass
class HotReport:
    normal: int
    hot: int
    rounds: int
    results: list[Throughput] = field(default_factory=list)

    def ratios(self, kind: str) -> list[float]:
        """``kind``'s tx/s over the normal pass's tx/s, per round."""
        base = {r.round: r.per_second for r in self.results if r.row == "normal"}
        return [r.per_second / base[r.round] for r in self.results if r.row == kind and base.get(r.round)]

    def hot_ratios(self, kind: str) -> list[float]:
        """Per round, the speed of ``kind``'s hot records alone relative to normal records: the pass's time
        less what its ``normal`` records take at the normal pass's per-record time, over ``hot``."""
        base = {r.round: r for r in self.results if r.row == "normal"}
        out = []
        for r in self.results:
            b = base.get(r.round)
            if r.row != kind or b is None or not b.records:
                continue
            per_normal = b.seconds / b.records
            hot_seconds = r.seconds - self.normal * per_normal
            if hot_seconds > 0:
                out.append(per_normal / (hot_seconds / self.hot))
        return out

    def summary(self) -> list[dict[str, Any]]:
        rows = []
        for kind in KINDS:
            mine = [r for r in self.results if r.row == kind]
            if not mine:
                continue
            ratios = self.ratios(kind) if kind != "normal" else []
            cpu = [c for c in (r.cpu_us_per_record for r in mine) if c is not None]
            rows.append(
                {
                    "row": kind,
                    "records": mine[0].records,
                    "tx_per_s": Spread.of(r.per_second for r in mine),
                    "cpu_us": statistics.median(cpu) if cpu else None,
                    "ratio": Spread.of(ratios) if ratios else None,
                    "hot_ratio": Spread.of(h) if (h := self.hot_ratios(kind)) and kind != "normal" else None,
                }
            )
        return rows


def run_hot(bench: DetectorBench, normal: int, hot: int, rounds: int, log: Log) -> HotReport:
    """Preload the three inputs, then the interleaved passes of fraud.yaml over them."""
    base = [g.record for g in bench.generated(normal + hot)]
    report = HotReport(normal, hot, rounds)
    topics = {}
    for kind in KINDS:
        records = hot_records(kind, base if kind == "normal" else base[:normal], hot)
        topics[kind] = f"bench-{bench.run_id}.{kind}"
        log(f"preloading {kind}: {len(records):,} records ...")
        bench.preload_records(topics[kind], iter(records), len(records))
    total = normal + hot
    for round_ in range(1, rounds + 1):
        for kind in KINDS:
            result, _ = bench.run_detector("fraud", round_, source=topics[kind], count=total, tag=f"-{kind}")
            result.name, result.row = kind, kind
            report.results.append(result)
            log(f"  round {round_} {kind}: {result.per_second:,.0f} tx/s")
    return report


def report_lines(report: HotReport) -> Iterator[str]:
    """The table, as text lines."""
    yield (
        f"fraud.yaml on {report.normal:,} normal records + {report.hot:,} more "
        f"(normal, or one hot payer / payee within 5 min), {report.rounds} rounds interleaved, {engine_label()}"
    )
    yield (
        f"{'traffic':<10} {'tx/s (median, range)':>28} {'CPU µs/rec':>11} {'vs normal (median, range)':>27} "
        f"{'its hot records alone':>22}  target (hot records alone)"
    )
    for row in report.summary():
        rate: Spread = row["tx_per_s"]
        ratio: Spread | None = row["ratio"]
        cpu = "" if row["cpu_us"] is None else f"{row['cpu_us']:.1f}"
        vs = "" if ratio is None else f"{ratio.median:.0%} ({ratio.low:.0%}-{ratio.high:.0%})"
        hot: Spread | None = row["hot_ratio"]
        alone = "" if hot is None else f"{hot.median:.0%} ({hot.low:.0%}-{hot.high:.0%})"
        verdict = "" if hot is None else ("met" if hot.median >= SPEED_TARGET else "NOT met")
        speed = f"{rate.median:,.0f} ({rate.low:,.0f}-{rate.high:,.0f})"
        target = "" if hot is None else f">= {SPEED_TARGET:.0%}: {verdict}"
        yield f"{row['row']:<10} {speed:>28} {cpu:>11} {vs:>27} {alone:>22}  {target}"


def run_hot_bench(*, normal: int, hot: int, rounds: int, partitions: int) -> int:
    """``fraudstream bench hot``: run, print the table; the exit code."""
    from services.config import KafkaSettings
    from services.kafka import Unreachable

    try:
        bench = DetectorBench(KafkaSettings(), count=normal + hot, partitions=partitions, log=print)
    except Unreachable as exc:
        print(f"error: {exc}")
        return 2
    try:
        report = run_hot(bench, normal, hot, rounds, print)
    finally:
        bench.cleanup()
    for line in report_lines(report):
        print(line)
    return 0

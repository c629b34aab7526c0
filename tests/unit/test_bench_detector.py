"""The detector benchmark's pure parts (no broker): the pass order, median/spread/ratio maths, targets, topologies."""

from __future__ import annotations

import json

import pytest

from services.bench.detector import (
    RAW,
    ROWS,
    Latency,
    Report,
    Spread,
    Throughput,
    ratio_verdict,
    renamed_topology,
    round_ratios,
    schedule,
    summarise,
    topology_text,
)
from services.bench.detector_cli import _run, run_detector_bench
from services.detector import FRAUD_TOPOLOGY, loads_topology


def _pass(row: str, round_: int, per_second: float, cpu_us: float = 10.0) -> Throughput:
    return Throughput(row, 1_000, 1_000 / per_second, 5, row=row, round=round_, cpu_seconds=cpu_us * 1_000 / 1e6)


def test_schedule_interleaves_every_row_in_each_round() -> None:
    assert schedule(2, ["raw", "stateless", "window"]) == [
        (1, "raw"), (1, "stateless"), (1, "window"), (2, "raw"), (2, "stateless"), (2, "window"),
    ]
    assert schedule(0, ["raw"]) == []


def test_spread_is_median_and_range() -> None:
    assert Spread.of([3.0, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0)
    assert Spread.of([4.0, 1.0, 2.0, 10.0]) == Spread(3.0, 1.0, 10.0)  # even count: mean of the middle two
    with pytest.raises(ValueError):
        Spread.of([])


def test_ratios_pair_each_pass_with_the_raw_pass_of_its_round() -> None:
    results = [
        _pass(RAW, 1, 100.0), _pass("window", 1, 50.0),
        _pass(RAW, 2, 200.0), _pass("window", 2, 50.0),
        _pass(RAW, 3, 100.0), _pass("window", 3, 30.0),
    ]
    assert round_ratios(results, "window") == pytest.approx([0.5, 0.25, 0.3])
    raw, window = summarise(results)
    assert (raw.row, raw.passes, raw.ratio, raw.target) == (RAW, 3, None, None)
    assert (raw.rate.median, raw.rate.low, raw.rate.high) == pytest.approx((100.0, 100.0, 200.0))
    assert (window.rate.median, window.rate.low, window.rate.high) == pytest.approx((50.0, 30.0, 50.0))
    assert window.ratio is not None
    assert (window.ratio.median, window.ratio.low, window.ratio.high) == pytest.approx((0.3, 0.25, 0.5))
    assert window.cpu_us is not None and window.cpu_us.median == pytest.approx(10.0)
    assert window.target == 0.40 and window.verdict == "short by 10 pts, needs 1.33x"


def test_a_round_without_a_raw_pass_gives_no_ratio() -> None:
    assert round_ratios([_pass(RAW, 1, 100.0), _pass("fraud", 2, 10.0)], "fraud") == []
    (_, fraud) = summarise([_pass(RAW, 1, 100.0), _pass("fraud", 2, 10.0)])
    assert fraud.ratio is None and fraud.verdict is None


def test_verdicts() -> None:
    assert ratio_verdict(0.45, 0.40) == "met"
    assert ratio_verdict(0.40, 0.40) == "met"
    assert ratio_verdict(0.05, 0.20) == "short by 15 pts, needs 4.00x"
    assert Latency(5_000, 4_990, 50_000, 20.0, 149.0, 300.0).verdict == "met"
    assert Latency(5_000, 4_990, 50_000, 20.0, 180.4, 300.0).verdict == "short by 30 ms"
    assert Latency(5_000, 3_000, 50_000, 20.0, 100.0, 300.0).verdict is None  # the rate was not reached
    assert Latency(5_000, 5_000, 50_000, 20.0, 100.0, 300.0, row="window").verdict is None


def test_latency_that_grows_over_the_run_is_a_backlog() -> None:
    steady = Latency(5_000, 5_000, 100, 50.0, 90.0, 120.0, first_p50_ms=50.0, last_p50_ms=60.0)
    growing = Latency(5_000, 5_000, 100, 900.0, 2_000.0, 2_100.0, first_p50_ms=80.0, last_p50_ms=1_900.0)
    assert not steady.fell_behind and growing.fell_behind
    assert not Latency(5_000, 5_000, 100, 1.0, 2.0, 3.0).fell_behind  # no tenths known


def test_report_json_has_every_pass_and_the_row_summaries() -> None:
    report = Report({"cpus": 2}, 1_000, 6, 100, 50_000.0, rounds=1)
    report.results = [_pass(RAW, 1, 100.0), _pass("fraud", 1, 25.0)]
    report.latency = Latency(5_000, 5_000, 10, 1.0, 2.0, 3.0)
    doc = json.loads(json.dumps(report.as_json()))
    assert [r["per_second"] for r in doc["results"]] == [100.0, 25.0]
    assert doc["results"][1]["cpu_us_per_record"] == 10.0
    assert doc["rows"][1]["ratio"]["median"] == 0.25 and doc["rows"][1]["verdict"] == "met"
    assert doc["latency"]["verdict"] == "met"


class _FakeBench:
    """``DetectorBench``'s surface that ``_run`` uses, recording the order of the passes."""

    def __init__(self) -> None:
        self.passes: list[tuple[int, str]] = []

    def preload(self) -> float:
        return 1.0

    def run_pass(self, row: str, round_: int = 1, profile: bool = False) -> tuple[Throughput, str | None]:
        self.passes.append((round_, row))
        return _pass(row, round_, {RAW: 100.0}.get(row, 40.0 + round_)), None


def test_the_run_interleaves_the_passes_and_sets_each_ratio_from_its_round() -> None:
    bench = _FakeBench()
    report = Report({"cpus": 2}, 10, 1, 100, 0.0, rounds=3)
    _run(bench, report, ["raw", "window", "fraud"], lambda line: None)  # type: ignore[arg-type]
    assert bench.passes == schedule(3, ["raw", "window", "fraud"])
    assert [r.ratio_to_raw for r in report.results if r.row == "window"] == [0.41, 0.42, 0.43]
    assert [s.row for s in report.rows()] == ["raw", "window", "fraud"]


@pytest.mark.parametrize("row", [r for r in ROWS if r != RAW])
def test_row_topologies_load_and_read_only_the_given_topic(row: str) -> None:
    topology = loads_topology(topology_text(row, "bench-x-r1", "bench-x.transactions"))
    assert topology.source == "bench-x.transactions"
    assert topology.name == "bench-x-r1"
    stores = {"stateless": 0, "window": 1, "fraud": 9}[row]
    assert len(topology.stores) == stores
    assert [r.id for r in topology.rules][:1] == ["large-amount"]


def test_renamed_fraud_topology_writes_no_shared_topic() -> None:
    text = renamed_topology(FRAUD_TOPOLOGY.read_text(encoding="utf-8"), "bench-y")
    assert "streaming.transactions" not in text and "queueing.transactions" not in text
    assert loads_topology(text).alerts == "bench-y.alerts"


@pytest.mark.parametrize(
    ("rows", "latency_row", "profile"),
    [
        (["stateless"], "fraud", None), (["raw", "nope"], "fraud", None),
        (["raw"], "raw", None), (["raw"], "fraud", "raw"),
    ],
)
def test_bad_rows_are_refused_before_any_broker_call(rows: list[str], latency_row: str, profile: str | None) -> None:
    code = run_detector_bench(
        count=10, rounds=1, rows=rows, partitions=1, commit_interval_ms=100, rate=1.0, latency_seconds=0,
        latency_row=latency_row, latency_commit_interval_ms=50, profile=profile, json_output=False,
    )
    assert code == 2

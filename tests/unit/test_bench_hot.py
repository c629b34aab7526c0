"""The hot-key benchmark's inputs and its ratios (the passes themselves run on Kafka: ``fraudstream bench hot``)."""

from __future__ import annotations

from services.bench.detector import DetectorBench, Throughput
from services.bench.hot import HOT_WINDOW_MS, HotReport, hot_records, report_lines


def test_hot_inputs_add_one_payer_or_payee_inside_five_minutes_mixed_by_event_time() -> None:
    base = [g.record for g in DetectorBench.generated(8_000)]
    payer = hot_records("hot-payer", base, 500)
    payee = hot_records("hot-payee", base, 500)
    assert hot_records("normal", base, 500) == base
    for records, field, hot in ((payer, "source_account", "acct-hot"), (payee, "target_account", "mule-hot")):
        assert len(records) == 8_500
        times = [r["event_time"] for r in records]
        assert times == sorted(times)
        mine = [r for r in records if r[field] == hot]
        assert len(mine) == 500 and len({r["transaction_id"] for r in records}) == 8_500
        assert mine[-1]["event_time"] - mine[0]["event_time"] < HOT_WINDOW_MS
        first = records.index(mine[0])
        assert first > 0 and records.index(mine[-1]) < len(records) - 1  # normal traffic on both sides
    to_mule = [r for r in payee if r["target_account"] == "mule-hot"]
    assert len({r["source_account"] for r in to_mule}) == 500
    assert all(r["merchant_category"] is None and r["amount"] >= 100 for r in to_mule)  # what fan-in aggregates


def test_ratios_compare_each_hot_pass_with_the_normal_pass_of_its_round() -> None:
    report = HotReport(10, 5, 2)
    for rnd, (n, p, q) in enumerate(((100.0, 90.0, 40.0), (200.0, 180.0, 40.0)), start=1):
        for kind, seconds in (("normal", 15 / n), ("hot-payer", 15 / p), ("hot-payee", 15 / q)):
            report.results.append(Throughput(kind, 15, seconds, 1, row=kind, round=rnd, cpu_seconds=1.5))
    assert [round(r, 3) for r in report.ratios("hot-payer")] == [0.9, 0.9]
    assert [round(r, 3) for r in report.ratios("hot-payee")] == [0.4, 0.2]
    # round 1: normal 15 records in 0.15 s; hot payer 1/6 s: 10 normal at 0.01 s each + 5 hot in 1/15 s
    assert [round(r, 3) for r in report.hot_ratios("hot-payer")] == [0.75, 0.75]
    assert [round(r, 3) for r in report.hot_ratios("hot-payee")] == [0.182, 0.077]
    text = "\n".join(report_lines(report))
    assert "hot-payer" in text and ">= 50%: met" in text and ">= 50%: NOT met" in text

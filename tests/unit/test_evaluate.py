"""Scoring decisions against labels."""

from __future__ import annotations

import pytest

from services.evaluate.score import Decision, Label, Scores, evaluate


def test_scores_from_confusion_matrix() -> None:
    s = Scores(tp=8, fp=2, fn=2, tn=88)
    assert s.precision == pytest.approx(0.8)
    assert s.recall == pytest.approx(0.8)
    assert s.f1 == pytest.approx(0.8)
    assert Scores().precision == 0.0 and Scores().f1 == 0.0


def test_evaluate_overall_rule_scenario_and_incidents() -> None:
    labels = [
        Label("l1", "legit", False),
        Label("l2", "legit", False),
        Label("big1", "large_amount", True, "i1"),
        Label("fan1", "fan_in", True, "i2"),
        Label("fan2", "fan_in", True, "i2"),
        Label("fan3", "fan_in", True, "i3"),
        Label("late", "legit", False),  # no decision yet
    ]
    decisions = {
        "l1": Decision("l1", False),
        "l2": Decision("l2", True, ("large_amount",)),  # false positive
        "big1": Decision("big1", True, ("large_amount",)),
        "fan1": Decision("fan1", False),
        "fan2": Decision("fan2", True, ("fan_in", "large_amount")),
        "fan3": Decision("fan3", False),
        "stranger": Decision("stranger", True, ("x",)),
    }
    report = evaluate(labels, decisions)
    o = report.overall
    assert (o.tp, o.fp, o.fn, o.tn) == (2, 1, 2, 1)
    assert report.undecided == 1 and report.unlabelled == 1

    big = report.by_rule["large_amount"]
    assert (big.tp, big.fp, big.fn, big.tn) == (2, 1, 2, 1)
    fan_rule = report.by_rule["fan_in"]
    assert (fan_rule.tp, fan_rule.fp) == (1, 0) and fan_rule.precision == 1.0

    fan = report.by_scenario["fan_in"]  # fan-in transactions against legit traffic only
    assert (fan.tp, fan.fn, fan.fp, fan.tn) == (1, 2, 1, 1)
    assert "legit" not in report.by_scenario
    assert report.incident_recall == {"large_amount": (1, 1), "fan_in": (1, 2)}

    data = report.as_dict()
    wanted = {"precision", "recall", "f1"}
    assert wanted <= set(data["overall"])  # type: ignore[call-overload]
    assert all(wanted <= set(s) for s in data["by_rule"].values())  # type: ignore[attr-defined]
    assert all(wanted <= set(s) for s in data["by_scenario"].values())  # type: ignore[attr-defined]

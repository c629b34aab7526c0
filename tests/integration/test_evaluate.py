"""`fraudstream evaluate` on real Kafka: generator labels joined with a real detector's decisions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Endpoints
from tests.integration.eos_support import Topics, stateless_topology
from tests.integration.stateful_support import Generated, generate_detect_evaluate, stateful_topology

pytestmark = pytest.mark.integration

COUNT = 3000
GENERATED = Generated(COUNT, partitions=3, seed=11)


def test_evaluate_scores_a_real_run(stack: Endpoints, unique: str, tmp_path: Path) -> None:
    t = Topics.make(unique)
    # Card testing (amounts of 2.00 or less) is fraud the `amount >= 900` rule cannot catch.
    fraud = ["large_amount=20", "card_testing=4"]
    report = generate_detect_evaluate(stack, t, stateless_topology(t), tmp_path, GENERATED, fraud)
    overall = report["overall"]
    assert overall["tp"] + overall["fp"] + overall["fn"] + overall["tn"] == COUNT
    assert report["undecided"] == 0 and report["unlabelled"] == 0
    # The stateless `amount >= 900` rule catches every injected large amount ...
    assert report["by_scenario"]["large_amount"]["recall"] == 1.0
    assert set(report["by_rule"]) == {"large-amount"}
    # ... and nothing else: other scenarios are missed by this topology.
    assert overall["fn"] > 0 and overall["tp"] > 0
    for section in ("overall", *report["by_rule"].values(), *report["by_scenario"].values()):
        scores = report["overall"] if section == "overall" else section
        assert {"precision", "recall", "f1"} <= set(scores)
    # No alerts topic in this topology (it does not exist): detection is routing.
    assert report["related"] == 0 and report["detection"]["overall"] == overall


def test_evaluate_counts_transactions_alerts_name_as_related(stack: Endpoints, unique: str, tmp_path: Path) -> None:
    """fraud.yaml's velocity rule fires only from the Nth payment of a burst; its alerts name the earlier
    ones, which the DETECTION view counts (and the ROUTING view does not)."""
    t = Topics.make(unique)
    report = generate_detect_evaluate(stack, t, stateful_topology(t), tmp_path, GENERATED, ["velocity=4"])
    routing, detection = report["by_scenario"]["velocity"], report["detection"]["by_scenario"]["velocity"]
    assert routing["tp"] > 0, report
    assert report["related"] > 0, report
    assert detection["tp"] > routing["tp"] and detection["recall"] > routing["recall"], (routing, detection)
    # Same transactions judged in both views; detection only ever adds fraud decisions.
    r, d = report["overall"], report["detection"]["overall"]
    assert r["tp"] + r["fp"] + r["fn"] + r["tn"] == d["tp"] + d["fp"] + d["fn"] + d["tn"] == COUNT
    assert d["tp"] + d["fp"] > r["tp"] + r["fp"] and d["fn"] < r["fn"]

"""`fraudstream evaluate` on real Kafka: generator labels joined with a real detector's decisions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Endpoints
from tests.integration.eos_support import Detector, Topics, stateless_topology
from tests.integration.stateful_support import OutputCounter, stateful_topology, wait_outputs

pytestmark = pytest.mark.integration

COUNT = 3000
PARTITIONS = 3


def _generate_detect_evaluate(
    stack: Endpoints, t: Topics, topology_text: str, tmp_path: Path, fraud: list[str]
) -> dict[str, Any]:
    """Generate COUNT labelled transactions, run a detector over them, return `evaluate --json`."""
    labels = f"{t.transactions}.labels"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers, "SCHEMA_REGISTRY_URL": stack.registry_url}
    gen = subprocess.run(
        [sys.executable, "-m", "services", "generate", "--count", str(COUNT), "--rate", "0", "--seed", "11",
         "--topic", t.transactions, "--labels-topic", labels, "--partitions", str(PARTITIONS),
         *(arg for f in fraud for arg in ("--fraud", f))],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert gen.returncode == 0, gen.stdout + gen.stderr

    topology = tmp_path / "topology.yaml"
    topology.write_text(topology_text)
    detector = Detector(stack.bootstrap_servers, stack.registry_url, topology, t.application_id, "eval",
                        tmp_path / "detector.log")
    counter = OutputCounter(stack.bootstrap_servers, (t.legit, t.fraud), PARTITIONS)
    try:  # every transaction decided (a repartitioned stage decides after the input offsets are committed)
        wait_outputs(counter, COUNT, [detector], timeout=120)
    finally:
        counter.close()
    detector.signal(signal.SIGTERM)
    assert detector.wait() == 0

    out = subprocess.run(
        [sys.executable, "-m", "services", "evaluate", "--json", "--labels-topic", labels,
         "--legit-topic", t.legit, "--fraud-topic", t.fraud, "--alerts-topic", t.alerts],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def test_evaluate_scores_a_real_run(stack: Endpoints, unique: str, tmp_path: Path) -> None:
    t = Topics.make(unique)
    # Card testing (amounts of 2.00 or less) is fraud the `amount >= 900` rule cannot catch.
    report = _generate_detect_evaluate(stack, t, stateless_topology(t), tmp_path, ["large_amount=20", "card_testing=4"])
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
    report = _generate_detect_evaluate(stack, t, stateful_topology(t), tmp_path, ["velocity=4"])
    routing, detection = report["by_scenario"]["velocity"], report["detection"]["by_scenario"]["velocity"]
    assert routing["tp"] > 0, report
    assert report["related"] > 0, report
    assert detection["tp"] > routing["tp"] and detection["recall"] > routing["recall"], (routing, detection)
    # Same transactions judged in both views; detection only ever adds fraud decisions.
    r, d = report["overall"], report["detection"]["overall"]
    assert r["tp"] + r["fp"] + r["fn"] + r["tn"] == d["tp"] + d["fp"] + d["fn"] + d["tn"] == COUNT
    assert d["tp"] + d["fp"] > r["tp"] + r["fp"] and d["fn"] < r["fn"]

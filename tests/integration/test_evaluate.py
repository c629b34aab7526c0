"""`fraudstream evaluate` on real Kafka: generator labels joined with a real detector's decisions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Endpoints
from tests.integration.eos_support import Detector, Topics, committed_offsets, stateless_topology

pytestmark = pytest.mark.integration

COUNT = 3000


def test_evaluate_scores_a_real_run(stack: Endpoints, unique: str, tmp_path: Path) -> None:
    t = Topics.make(unique)
    labels = f"{t.transactions}.labels"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers, "SCHEMA_REGISTRY_URL": stack.registry_url}
    gen = subprocess.run(
        [sys.executable, "-m", "services", "generate", "--count", str(COUNT), "--rate", "0", "--seed", "11",
         "--topic", t.transactions, "--labels-topic", labels, "--partitions", "3",
         "--fraud", "large_amount=20"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert gen.returncode == 0, gen.stdout + gen.stderr

    topology = tmp_path / "topology.yaml"
    topology.write_text(stateless_topology(t))
    detector = Detector(stack.bootstrap_servers, stack.registry_url, topology, t.application_id, "eval",
                        tmp_path / "detector.log")
    deadline = time.monotonic() + 120
    while committed_offsets(stack.bootstrap_servers, t.application_id, t.transactions) < COUNT:
        assert time.monotonic() < deadline, detector.output()[-3000:]
        time.sleep(0.5)
    detector.signal(signal.SIGTERM)
    assert detector.wait() == 0

    out = subprocess.run(
        [sys.executable, "-m", "services", "evaluate", "--json", "--labels-topic", labels,
         "--legit-topic", t.legit, "--fraud-topic", t.fraud],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
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

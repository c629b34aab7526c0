"""A backlog decided live exactly as the offline evaluation decides it, with fraud.yaml's own windows.

Seeded traffic (fan-in incidents included) is generated over six partitions before the detector
starts, so the detector reads it as one backlog (a first start, a catch-up after an outage, a
replay). Its fan-in stage reads a repartition topic written in the order the first stage
processed its six input partitions; read in fetch order, hours of event time apart, most of it
would be later than fan-in's 1-minute grace. The runtime reads them in event-time order
(``topology.runtime.order``), so every scenario is routed and detected as the offline run over
the same stream routes and detects it (``services.evaluate.quality``: one record at a time, in
generation order). Without the order (``FRAUDSTREAM_DETECTOR_MAX_TASK_IDLE_MS=-1``) fan-in routed
417 of the 476 payments the offline run routes 456 of (measured here, 2026-12-03), and the test fails.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from services.detector import loads_topology
from services.evaluate import quality
from services.generator.scenarios import DEFAULT_RATES
from tests.conftest import Endpoints
from tests.integration.eos_support import Topics
from tests.integration.stateful_support import Generated, generate_detect_evaluate, stateful_topology

pytestmark = pytest.mark.integration

GENERATED = Generated(40_000, partitions=6, seed=23)
FAN_IN = 0.25  # fan-in incidents per 1,000 transactions (the default mix has 0.02: none in 40,000)


def _counts(report: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    return {name: (s["tp"], s["fp"], s["fn"]) for name, s in sorted(report["by_scenario"].items())}


def test_a_backlog_is_decided_as_the_offline_evaluation_decides_it(
    stack: Endpoints, unique: str, tmp_path: Path
) -> None:
    t = Topics.make(unique)
    text = stateful_topology(t, fan_in_grace=None)  # fraud.yaml's own graces: fan-in 1 minute
    live = generate_detect_evaluate(stack, t, text, tmp_path, GENERATED, [f"fan_in={FAN_IN}"])
    g, rates = GENERATED, dataclasses.replace(DEFAULT_RATES, fan_in=FAN_IN)
    run = quality.run(loads_topology(text), g.count, g.seed, partitions=g.partitions, rates=rates)
    offline: dict[str, Any] = quality.as_json(run)
    assert live["undecided"] == 0
    assert offline["by_scenario"]["fan_in"]["tp"] > 100  # the scenario this is about is in the stream
    # Routing (the decision taken on arrival) is where reading order shows: compare it per scenario.
    assert _counts(live) == _counts(offline), (_counts(live), _counts(offline))
    assert _counts(live["detection"]) == _counts(offline["detection"])

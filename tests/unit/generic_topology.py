"""A topology that has nothing to do with payments: machine readings, their own schema and topics.

Shared by the unit test (DSL, YAML, the driver) and the integration test (the real runtime), which
prove that ``topology/`` is a generic engine.
"""

from __future__ import annotations

import json
from typing import Any

from topology.plan.dsl import sliding, stream
from topology.plan.expr import fields_from_avro
from topology.plan.loader import loads_topology
from topology.plan.model import Topology

READING = json.dumps({
    "type": "record", "name": "Reading", "namespace": "plant",
    "fields": [
        {"name": "sensor", "type": "string"},
        {"name": "site", "type": "string"},
        {"name": "celsius", "type": "double"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
})  # fmt: skip
FIELDS = fields_from_avro(READING)
SCHEMAS = {"reading": READING}  # what ``source.schema`` names

YAML = """
topology: {name}
source: {{topic: {source}, schema: reading, key: [sensor], time: at}}
dlq: {dlq}
rules:
  - id: overheat
    when: celsius > 90
  - id: flapping
    when:
      aggregate:
        function: count
        group_by: [sensor]
        window: {{kind: sliding, size: 1m}}
        filter: celsius > 70
        op: ">="
        threshold: 3
branches:
  - {{name: alarm, to: {alarm}, rules: [overheat, flapping]}}
default_branch: {{name: normal, to: {normal}}}
"""


def in_python(name: str, source: str, alarm: str, normal: str, dlq: str) -> Topology:
    """The readings topology built with the DSL."""
    readings = stream(source, fields=FIELDS, dlq=dlq, name=name, key=("sensor",), time_field="at")
    overheat = readings.rule("overheat", "celsius > 90")
    flapping = readings.rule("flapping", readings.count(by="sensor", window=sliding("1m"), where="celsius > 70") >= 3)
    return (
        readings.split()
        .branch([overheat, flapping], to=alarm, name="alarm")
        .default_branch(to=normal, name="normal")
    )


def in_yaml(name: str, source: str, alarm: str, normal: str, dlq: str) -> Topology:
    """The same topology loaded from YAML."""
    text = YAML.format(name=name, source=source, alarm=alarm, normal=normal, dlq=dlq)
    return loads_topology(text, filename="readings.yaml", schemas=SCHEMAS.__getitem__)


def readings() -> list[tuple[dict[str, Any], str]]:
    """Readings and the branch each must take (``alarm`` / ``normal``), in event-time order."""
    t0 = 1_700_000_000_000
    rows = [
        ("s1", 20.0, 0, "normal"), ("s2", 95.5, 1, "alarm"),  # overheat
        ("s3", 75.0, 2, "normal"), ("s3", 72.0, 3, "normal"), ("s3", 71.0, 4, "alarm"),  # flapping: 3rd in 1m
        ("s1", 71.0, 5, "normal"), ("s3", 20.0, 6, "normal"),
        ("s1", 75.0, 200, "normal"), ("s1", 76.0, 201, "normal"),  # the first warm s1 reading left the window
    ]  # fmt: skip
    return [({"sensor": s, "site": "north", "celsius": c, "at": t0 + sec * 1000}, want) for s, c, sec, want in rows]

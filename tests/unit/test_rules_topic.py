"""topology/plan/rules.py: rules-topic records added, replaced, removed and rejected."""

from __future__ import annotations

import pytest

from schemas import schema_text
from services.detector import transaction_fields
from topology.plan.loader import loads_topology
from topology.plan.model import Topology
from topology.plan.rules import RuleError, apply_rule, parse_rule

from .generic_topology import in_yaml

BASE = """\
topology: t
source: {topic: tx, schema: transaction, key: [source_account], time: event_time}
dlq: dlq
rules:
  - {id: big, version: 1, when: amount >= 900}
  - {id: other, version: 1, when: "currency == 'EUR'"}
branches:
  - {name: fraud, to: fraud, rules: [big, other]}
default_branch: {name: legit, to: legit}
"""


@pytest.fixture
def topology() -> Topology:
    return loads_topology(BASE, schemas=schema_text)


def refs(t: Topology) -> list[str]:
    return [r.ref for b in t.branches for r in b.rules]


def test_add_joins_the_fraud_branch(topology: Topology) -> None:
    t = apply_rule(topology, "tiny", {"id": "tiny", "version": 3, "definition": "when: amount <= 1"})
    assert refs(t) == ["big@1", "other@1", "tiny@3"]
    assert refs(topology) == ["big@1", "other@1"]


def test_replace_keeps_position_and_description(topology: Topology) -> None:
    value = {"id": "big", "version": 2, "definition": "when: amount >= 100", "description": "lower"}
    t = apply_rule(topology, "big", value)
    assert refs(t) == ["big@2", "other@1"]
    assert t.branches[0].rules[0].description == "lower"


def test_aggregate_definition() -> None:
    definition = (
        "when:\n  aggregate:\n    function: count\n    group_by: [source_account]\n"
        "    window: {kind: sliding, size: 2m}\n    op: '>='\n    threshold: 5\n"
    )
    rule = parse_rule("burst", {"id": "burst", "version": 1, "definition": definition}, transaction_fields())
    assert rule.stateful and rule.ref == "burst@1"


@pytest.mark.parametrize("value", [None, {"id": "big", "version": 2, "definition": "when: x", "enabled": False}])
def test_tombstone_or_disabled_removes(topology: Topology, value: dict[str, object] | None) -> None:
    assert refs(apply_rule(topology, "big", value)) == ["other@1"]


@pytest.mark.parametrize(
    ("rule_id", "value", "problem"),
    [
        ("big", {"id": "big", "version": 2, "definition": "when: amount >= "}, "rule big: rule.when:"),
        ("big", {"id": "big", "version": 2, "definition": "when: nope > 1"}, "unknown field 'nope'"),
        ("big", {"id": "big", "version": 2, "definition": "[1, 2]"}, "YAML mapping"),
        ("big", {"id": "big", "version": 2, "definition": "when: amount > 1\nextra: 1"}, "rule.extra: unknown key"),
        ("big", {"id": "other", "version": 2, "definition": "when: amount > 1"}, "differs from the record key"),
        ("big", {"id": "big", "version": 0, "definition": "when: amount > 1"}, "version must be >= 1"),
        ("Bad Id", {"id": "Bad Id", "version": 1, "definition": "when: amount > 1"}, "rule Bad Id:"),
        ("gone", None, "rule gone: no such rule"),
    ],
)
def test_invalid_rule_names_id_and_problem(topology: Topology, rule_id: str, value: object, problem: str) -> None:
    with pytest.raises(RuleError, match=None) as info:
        apply_rule(topology, rule_id, value)  # type: ignore[arg-type]
    assert problem in str(info.value)
    assert refs(topology) == ["big@1", "other@1"]


def test_removing_last_rule_of_branch_is_refused(topology: Topology) -> None:
    t = apply_rule(topology, "other", None)
    with pytest.raises(RuleError, match="last rule of branch 'fraud'"):
        apply_rule(t, "big", None)


HOSTILE = {
    "control character": ("when: amount >= 1\x07", "control character U+0007 is not allowed (line 1)"),
    "deep expression": ("when: " + "(" * 3000 + "amount >= 1" + ")" * 3000, "nested too deeply"),
    "deep YAML": ("when:\n" + "".join("  " * i + "- a:\n" for i in range(3000)), "nested too deeply"),
    "not YAML": ("when: [unclosed", "not valid YAML"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_definition_is_a_rule_error_naming_the_rule(name: str) -> None:
    definition, reason = HOSTILE[name]
    with pytest.raises(RuleError) as info:
        parse_rule("evil", {"id": "evil", "version": 1, "definition": definition}, transaction_fields())
    assert str(info.value).startswith("rule evil: definition: ") and reason in str(info.value)


def test_a_rule_is_checked_against_the_fields_of_the_topologys_source() -> None:
    plant = in_yaml("plant", "plant.readings", "plant.alarms", "plant.normal", "plant.dlq")
    t = apply_rule(plant, "hot", {"id": "hot", "version": 1, "definition": "when: celsius > 50"})
    assert refs(t) == ["overheat@1", "flapping@1", "hot@1"]
    with pytest.raises(RuleError, match="unknown field 'amount' \\(fields: at, celsius, sensor, site\\)"):
        apply_rule(plant, "big", {"id": "big", "version": 1, "definition": "when: amount >= 900"})
    with pytest.raises(RuleError, match="unknown field 'amount' \\(fields: none\\)"):
        parse_rule("big", {"id": "big", "version": 1, "definition": "when: amount >= 900"}, {})

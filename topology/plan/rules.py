"""Apply one record of a rules topic to a topology: add, replace or remove a rule.

Pure: no Kafka. A record's value has ``id``, ``version``, ``definition`` and optional ``description`` and
``enabled``. The ``definition`` is the YAML of a ``rules:`` entry of a topology file (at least ``when:``,
see ``topology.plan.loader``); it is read as the loader reads one (``topology.plan.reader.RuleReader``),
against the fields of the source's records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ruamel.yaml.comments import CommentedMap

from topology.plan.expr import FieldType
from topology.plan.loader import load_yaml
from topology.plan.model import PlanError, Rule, Topology, check_name
from topology.plan.reader import RuleReader, TopologyError


class RuleError(ValueError):
    """A rule record that cannot be applied; the message names the rule id and the problem."""

    def __init__(self, rule_id: str, message: str) -> None:
        super().__init__(f"rule {rule_id}: {message}")
        self.rule_id = rule_id
        self.message = message


def parse_rule(rule_id: str, value: Mapping[str, Any], fields: Mapping[str, FieldType]) -> Rule:
    """The rule of one rules-topic value (``id``, ``version``, ``definition``, optional ``description``)
    over records of ``fields``."""
    if value.get("id", rule_id) != rule_id:
        raise RuleError(rule_id, f"the value's id {value.get('id')!r} differs from the record key")
    version = value.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise RuleError(rule_id, f"version must be an int, got {version!r}")
    if version < 1:
        raise RuleError(rule_id, "version must be >= 1")
    try:
        check_name(rule_id, "rule")
    except PlanError as exc:
        raise RuleError(rule_id, str(exc)) from exc
    definition = value.get("definition")
    if not isinstance(definition, str):
        raise RuleError(rule_id, "definition must be a YAML string")
    filename = f"rule {rule_id}@{version} definition"
    try:
        node = load_yaml(definition, filename)
    except TopologyError as exc:
        where = f" (line {exc.line})" if exc.line else ""
        raise RuleError(rule_id, f"definition: {exc.message}{where}") from exc
    if not isinstance(node, CommentedMap):
        raise RuleError(rule_id, "definition must be a YAML mapping with a 'when' key")
    for key, expected in (("id", rule_id), ("version", version)):
        if key in node and node[key] != expected:
            raise RuleError(rule_id, f"definition {key} {node[key]!r} differs from the record's {expected!r}")
    node["id"] = rule_id
    node["version"] = version
    description = value.get("description")
    if description is not None and "description" not in node:
        node["description"] = description
    try:
        return RuleReader(filename, fields, standalone=True).rule(node, "rule", 1)
    except TopologyError as exc:
        raise RuleError(rule_id, f"{exc.key}: {exc.message} (line {exc.line} of the definition)") from exc
    except PlanError as exc:
        raise RuleError(rule_id, str(exc)) from exc
    except RecursionError:
        raise RuleError(rule_id, "definition: nested too deeply") from None


def apply_rule(topology: Topology, rule_id: str, value: Mapping[str, Any] | None) -> Topology:
    """``topology`` with rule ``rule_id`` set to ``value`` (None or ``enabled: false`` removes it).

    The rule is checked against the fields of the topology's source. A new rule joins the first branch;
    a known one is replaced where it is. Raises ``RuleError`` (topology unchanged) for an invalid rule,
    for removing a rule that is not there, or for removing the last rule of a branch.
    """
    if value is None or value.get("enabled", True) is False:
        return _remove(topology, rule_id)
    rule = parse_rule(rule_id, value, topology.fields)
    branches = list(topology.branches)
    for i, branch in enumerate(branches):
        rules = [rule if r.id == rule_id else r for r in branch.rules]
        if any(r.id == rule_id for r in branch.rules):
            branches[i] = dataclasses.replace(branch, rules=tuple(rules))
            return _rebuild(topology, rule_id, branches)
    if not branches:
        raise RuleError(rule_id, "the topology has no branch to add the rule to")
    branches[0] = dataclasses.replace(branches[0], rules=(*branches[0].rules, rule))
    return _rebuild(topology, rule_id, branches)


def _remove(topology: Topology, rule_id: str) -> Topology:
    branches = list(topology.branches)
    for i, branch in enumerate(branches):
        if any(r.id == rule_id for r in branch.rules):
            rules = tuple(r for r in branch.rules if r.id != rule_id)
            if not rules:
                raise RuleError(rule_id, f"cannot remove the last rule of branch {branch.name!r}")
            branches[i] = dataclasses.replace(branch, rules=rules)
            return _rebuild(topology, rule_id, branches)
    raise RuleError(rule_id, "no such rule to remove")


def _rebuild(topology: Topology, rule_id: str, branches: list[Any]) -> Topology:
    try:
        return dataclasses.replace(topology, branches=tuple(branches))
    except PlanError as exc:
        raise RuleError(rule_id, str(exc)) from exc

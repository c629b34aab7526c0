"""What the dashboard knows about rules: the topology file's, plus those the rules topic changed at run time.

Decisions name rules as ``id@version``; the catalog gives each such ref its
description and the window of each aggregate, so evidence reads as
"count 12 >= 10 in sliding 3m". A ref it has never seen is reported as unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from services.detector import transaction_fields
from topology.plan.model import Rule, Topology, aggregates_of, format_duration
from topology.plan.rules import RuleError, parse_rule

RuleRecord = tuple[str, Mapping[str, Any] | None]


def _entry(rule: Rule, source: str) -> dict[str, Any]:
    windows = {a.name: f"{a.window.kind} {format_duration(a.window.size_ms)}" for a in aggregates_of(rule.condition)}
    return {"ref": rule.ref, "id": rule.id, "version": rule.version, "description": rule.description or None,
            "source": source, "windows": windows}


class RuleCatalog:
    """Rules by ``id@version``: every version seen is kept (old decisions still name old versions)."""

    def __init__(self, topology: Topology | None = None) -> None:
        self.rules: dict[str, dict[str, Any]] = {}
        # what rules-topic rules read: the topology's records, else the detector's (Transactions)
        self.fields = topology.fields if topology is not None else transaction_fields()
        for branch in topology.branches if topology is not None else ():
            for rule in branch.rules:
                self.rules[rule.ref] = _entry(rule.named(), "topology file")

    def learn(self, records: Iterable[RuleRecord]) -> None:
        """Add the rules of rules-topic records (tombstones and rejected rules add nothing)."""
        for rule_id, value in records:
            if value is None:
                continue
            try:
                rule = parse_rule(rule_id, value, self.fields)
            except RuleError:
                continue
            self.rules[rule.ref] = _entry(rule.named(), "rules topic")

    def describe(self, ref: str) -> dict[str, Any]:
        """The catalog entry of ``ref``, or one saying it is unknown."""
        known = self.rules.get(ref)
        if known is not None:
            return known
        rule_id, _, version = ref.partition("@")
        return {"ref": ref, "id": rule_id, "version": int(version) if version.isdigit() else None,
                "description": None, "source": "unknown (neither in the topology file nor seen on the rules topic)",
                "windows": {}}

    def ids(self) -> list[str]:
        """Every rule id known, sorted."""
        return sorted({entry["id"] for entry in self.rules.values()})


OP_SIGNS = {">=": "\u2265", "<=": "\u2264", "!=": "\u2260"}


def evidence_text(item: Mapping[str, Any], windows: Mapping[str, str]) -> str:
    """One evidence item as text, e.g. "count 12 ≥ 10 in sliding 3m" (value "late" when the record missed it)."""
    value = item.get("value")
    op = str(item.get("op", "?"))
    text = f"{item.get('function', '?')} {'late' if value is None else value} {OP_SIGNS.get(op, op)} " \
           f"{item.get('threshold', '?')}"
    window = windows.get(str(item.get("aggregate", "")))
    return f"{text} in {window}" if window else text

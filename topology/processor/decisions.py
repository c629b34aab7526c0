"""Branch decisions: the first branch whose rules fire (Kafka Streams' ``split()``), the headers that name
the decision, and the evidence of the stateful rules that fired."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from topology.plan.model import DefaultBranch, Rule, aggregates_of
from topology.processor.compiled import EVALUATION_ERRORS, Aggs, CompiledBranch, deciding_value
from topology.records import H_BRANCH, H_EVIDENCE, H_RULES, Headers
from topology.serde.documents import dumps

Related = tuple[Mapping[str, list[str]], Mapping[str, int]]
"""Per related store that holds: the earlier ids of its window (the most recent), and how many there are."""
Fired = tuple[int, tuple[int, ...]]
"""(branch index, indexes of its rules that fired)."""
Evidence = dict[str, list[dict[str, Any]]]
"""Per fired rule (``id@version``): its aggregates' values, thresholds and related transactions."""


class RuleFailed(Exception):
    """A rule whose condition raised on bad data (the record is dead-lettered, naming the rule)."""

    def __init__(self, rule: Rule, cause: Exception) -> None:
        super().__init__(str(cause))
        self.rule = rule
        self.cause = cause


class Decider:
    """Decides records for one installed topology; caches the headers of each decision."""

    def __init__(
        self, branches: tuple[CompiledBranch, ...], default: DefaultBranch, store_names: tuple[str, ...],
        version_header: tuple[str, bytes],
    ) -> None:  # fmt: skip
        self.branches = branches
        self.store_names = store_names
        self.version_header = version_header
        self.default_to = default.to
        self.default_headers: Headers = ((H_BRANCH, default.name.encode()), (H_RULES, b""), version_header)
        self.default_labels = (default.name,)
        self._decisions: dict[Fired, tuple[Headers, tuple[str, ...]]] = {}
        # Per branch and rule: its aggregates with their store index, found once (``evidence`` is per decision).
        self._aggregates = [
            [tuple((a, store_names.index(a.name)) for a in aggregates_of(rule.condition)) for rule, _ in b.rules]
            for b in branches
        ]

    def route(
        self, value: Mapping[str, Any], aggs: Aggs | None, related: Related
    ) -> tuple[str, Headers, tuple[str, ...], Fired | None, Evidence | None]:
        """(topic, headers, labels, what fired, the evidence in the headers) of ``value``; raises ``RuleFailed``."""
        for bi, branch in enumerate(self.branches):
            fired: tuple[int, ...] = ()
            for ri, (rule, cond) in enumerate(branch.rules):
                try:
                    hit = cond(value, aggs)
                except EVALUATION_ERRORS as exc:
                    raise RuleFailed(rule, exc) from exc
                if hit:
                    fired += (ri,)
            if fired:
                headers, labels = self.decision(bi, fired)
                evidence = None
                if aggs is not None and any(self._aggregates[bi][i] for i in fired):  # a stateful rule fired
                    evidence = self.evidence(bi, fired, aggs, related)
                    headers = (*headers, (H_EVIDENCE, dumps(evidence)))
                return branch.to, headers, labels, (bi, fired), evidence
        return self.default_to, self.default_headers, self.default_labels, None, None

    def decision(self, bi: int, fired: tuple[int, ...]) -> tuple[Headers, tuple[str, ...]]:
        """Headers and labels of branch ``bi`` taken because rules ``fired`` fired."""
        decision = self._decisions.get((bi, fired))
        if decision is None:
            branch = self.branches[bi]
            refs = tuple(branch.rules[i][0].ref for i in fired)
            headers: Headers = (
                (H_BRANCH, branch.name.encode()), (H_RULES, ",".join(refs).encode()), self.version_header,
            )  # fmt: skip
            decision = self._decisions[(bi, fired)] = (headers, (branch.name, *refs))
        return decision

    def rules(self, fired: Fired) -> tuple[Rule, ...]:
        """The rules that fired."""
        bi, which = fired
        return tuple(self.branches[bi].rules[i][0] for i in which)

    def evidence(
        self, bi: int, fired: tuple[int, ...], aggs: Aggs, related: Related
    ) -> Evidence:
        """For each fired rule (``id@version``), its aggregates' values and thresholds."""
        doc: Evidence = {}
        for ri in fired:
            rule = self.branches[bi].rules[ri][0]
            items: list[dict[str, Any]] = []
            for a, i in self._aggregates[bi][ri]:
                best = deciding_value(aggs[i], a)
                item: dict[str, Any] = {
                    "aggregate": a.name, "function": a.function, "value": None if best is None else str(best),
                    "op": a.op, "threshold": str(a.threshold),
                }  # fmt: skip
                if a.related:
                    item["transactions"] = related[0].get(a.name, [])
                    item["transactions_total"] = related[1].get(a.name, 0)
                items.append(item)
            doc[rule.ref] = items
        return doc

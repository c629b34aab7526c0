"""Detection quality: decisions joined with the generator's ground-truth labels (pure, no Kafka).

Transaction level: each labelled transaction is a positive (fraud) or negative
(legit); the detector's decision is fraud when it went to the fraud topic.
- ``overall``: all transactions.
- ``by_rule``: a rule "predicts fraud" for the transactions it fired on; recall is
  over all fraud, so a narrow rule has a low recall by design and a high precision.
- ``by_scenario``: one fraud scenario against the legit traffic (other scenarios left
  out): recall = share of that scenario's transactions flagged, precision = flagged
  ones of that scenario over those plus every flagged legit transaction.
Incident level: a fraud incident (e.g. the 50 payments of one fan-in) is caught when
any of its transactions is flagged; windowed rules can only fire once the pattern
is complete, so this is the recall that matters for them.
Routing vs detection: the routing decision is taken when a transaction arrives, so a
windowed rule cannot flag the first payments of a pattern; an alert of a ``related``
aggregate names them afterwards. ``with_related`` turns routing decisions into
detection decisions (routed to fraud, or named by a later alert).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Label:
    """Ground truth for one transaction."""

    transaction_id: str
    scenario: str
    is_fraud: bool
    incident_id: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What the detector did with one transaction."""

    transaction_id: str
    fraud: bool
    rules: tuple[str, ...] = ()  # rule ids that fired (no version)


@dataclass(slots=True)
class Scores:
    """A confusion matrix and the figures derived from it."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, predicted: bool, actual: bool) -> None:
        if predicted and actual:
            self.tp += 1
        elif predicted:
            self.fp += 1
        elif actual:
            self.fn += 1
        else:
            self.tn += 1

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"precision": round(self.precision, 4), "recall": round(self.recall, 4), "f1": round(self.f1, 4),
                "tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn}


@dataclass
class Report:
    """Everything ``fraudstream evaluate`` prints."""

    overall: Scores = field(default_factory=Scores)
    by_rule: dict[str, Scores] = field(default_factory=dict)
    by_scenario: dict[str, Scores] = field(default_factory=dict)
    incident_recall: dict[str, tuple[int, int]] = field(default_factory=dict)  # scenario -> (caught, total)
    undecided: int = 0  # labelled, but no decision seen (not processed yet, or lost)
    unlabelled: int = 0  # decided, but no label (not from the generator)

    def as_dict(self) -> dict[str, object]:
        return {
            "overall": self.overall.as_dict(),
            "by_rule": {k: v.as_dict() for k, v in sorted(self.by_rule.items())},
            "by_scenario": {k: v.as_dict() for k, v in sorted(self.by_scenario.items())},
            "incident_recall": {k: {"caught": c, "total": t, "recall": round(c / t, 4) if t else 0.0}
                                for k, (c, t) in sorted(self.incident_recall.items())},
            "undecided": self.undecided,
            "unlabelled": self.unlabelled,
        }


def related_from_alerts(alerts: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, ...]]:
    """Transaction id -> ids of the rules whose alerts named it as related (decoded ``FraudAlert`` values)."""
    related: dict[str, tuple[str, ...]] = {}
    for alert in alerts:
        for e in alert["evidence"]:
            for earlier in e.get("transactions", ()):
                related[earlier] = (*related.get(earlier, ()), e["rule_id"])
    return related


def with_related(decisions: Mapping[str, Decision], related: Mapping[str, Iterable[str]]) -> dict[str, Decision]:
    """Detection decisions: ``decisions`` (routing time) plus the transactions a later alert named as
    related (``related``: transaction id -> ids of the rules whose alert named it) counted as fraud."""
    out = dict(decisions)
    for tx, rules in related.items():
        d = out.get(tx)
        if d is None:
            continue  # named but never decided: stays undecided
        names = tuple(dict.fromkeys((*d.rules, *rules)))
        out[tx] = Decision(tx, True, names)
    return out


def evaluate(labels: Iterable[Label], decisions: Mapping[str, Decision]) -> Report:
    """Score ``decisions`` (by transaction id) against ``labels``."""
    report = Report()
    labelled: list[tuple[Label, Decision]] = []
    seen: set[str] = set()
    for label in labels:
        seen.add(label.transaction_id)
        decision = decisions.get(label.transaction_id)
        if decision is None:
            report.undecided += 1
            continue
        labelled.append((label, decision))
    report.unlabelled = sum(1 for tx in decisions if tx not in seen)

    rules = sorted({rule for _, d in labelled for rule in d.rules})
    report.by_rule = {rule: Scores() for rule in rules}
    scenarios = sorted({label.scenario for label, _ in labelled if label.is_fraud})
    report.by_scenario = {scenario: Scores() for scenario in scenarios}
    incidents: dict[str, dict[str, bool]] = defaultdict(dict)  # scenario -> incident -> caught

    for label, decision in labelled:
        report.overall.add(decision.fraud, label.is_fraud)
        for rule in rules:
            report.by_rule[rule].add(rule in decision.rules, label.is_fraud)
        if label.is_fraud:
            report.by_scenario[label.scenario].add(decision.fraud, True)
            incident = label.incident_id or label.transaction_id
            caught = incidents[label.scenario].get(incident, False)
            incidents[label.scenario][incident] = caught or decision.fraud
        else:
            for scores in report.by_scenario.values():
                scores.add(decision.fraud, False)

    report.incident_recall = {s: (sum(found.values()), len(found)) for s, found in incidents.items()}
    return report

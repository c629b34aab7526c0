"""The detector's alert document: a ``FraudAlert`` (schemas/fraud_alert.avsc) per fraud decision."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from schemas import schema_text
from topology.alerts import AlertFacts
from topology.plan.expr import to_epoch_ms
from topology.serde.decoder import AvroEncoder

ALERT_FIELDS = frozenset({"transaction_id", "source_account", "target_account", "amount", "event_time"})
"""The transaction fields a FraudAlert copies."""


class FraudAlerts:
    """An ``AlertWriter`` of FraudAlert documents, keyed by transaction id."""

    fields = ALERT_FIELDS

    def __init__(self, encode: Callable[[Mapping[str, Any]], bytes]) -> None:
        self._encode = encode

    @classmethod
    def for_topic(cls, registry: Any, topic: str) -> FraudAlerts:
        """FraudAlerts encoded in the Confluent wire format under subject ``<topic>-value``."""
        return cls(AvroEncoder(registry, schema_text("fraud_alert"), subject=f"{topic}-value").encode)

    def write(self, facts: AlertFacts) -> tuple[bytes | None, bytes]:
        value = facts.value
        alert = {
            "transaction_id": value["transaction_id"],
            "source_account": value["source_account"],
            "target_account": value["target_account"],
            "amount": value["amount"],
            "event_time": to_epoch_ms(value["event_time"]),
            "rules": [{"id": r.id, "version": r.version} for r in facts.rules],
            "evidence": [
                # The schema has no total: it stays in the decision's evidence header.
                {"rule_id": r.id, "transactions": [], **{k: v for k, v in item.items() if k != "transactions_total"}}
                for r in facts.rules
                for item in facts.evidence.get(r.ref, ())
            ],
            "score": float(len(facts.rules)),
            "detector_version": facts.version,
        }
        tid = value["transaction_id"]
        return None if tid is None else str(tid).encode(), self._encode(alert)

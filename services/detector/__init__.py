"""The fraud detector service: the fraud topology on the exactly-once Kafka runtime (`fraudstream detect`).

The engine (``topology/``) knows no record type: this package gives it the project's schemas
(``schemas/<name>.avsc``, what ``source.schema`` names) and, for a topology file whose source names
no schema, the Transaction's fields.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from schemas import schema_text
from topology.plan import loader, rules
from topology.plan.expr import FieldType, fields_from_avro
from topology.plan.model import Rule, Topology

FRAUD_TOPOLOGY = Path(__file__).resolve().parent / "fraud.yaml"
"""The packaged fraud topology, the detector's default."""


def transaction_fields() -> dict[str, FieldType]:
    """The field types of a Transaction (``schemas/transaction.avsc``): what the fraud rules read."""
    return fields_from_avro(schema_text("transaction"))


def load_topology(path: str | Path = FRAUD_TOPOLOGY, *, known_topics: Collection[str] | None = None) -> Topology:
    """The topology file at ``path`` (``topology.plan.loader``): ``source.schema`` names a ``schemas/<name>.avsc``;
    a source that names no schema reads Transactions."""
    return loader.load_topology(path, schemas=schema_text, fields=transaction_fields(), known_topics=known_topics)


def loads_topology(
    text: str, *, filename: str = "<string>", known_topics: Collection[str] | None = None
) -> Topology:
    """The topology in YAML ``text``, as ``load_topology`` reads a file."""
    return loader.loads_topology(
        text, filename=filename, schemas=schema_text, fields=transaction_fields(), known_topics=known_topics
    )


def parse_rule(rule_id: str, value: Mapping[str, Any]) -> Rule:
    """The rule of one value of the detector's rules topic (``schemas/rule.avsc``), over Transactions."""
    return rules.parse_rule(rule_id, value, transaction_fields())

"""The YAML loader: the fraud topology loads; every error names file, line and key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from schemas import schema_text
from services.config import TOPICS
from services.detector import FRAUD_TOPOLOGY, transaction_fields
from topology.plan.expr import fields_from_avro
from topology.plan.loader import TopologyError, load_topology, loads_topology
from topology.plan.model import Aggregate, AllOf, Topology, aggregates_of

GOOD = """\
topology: test-app
source: {topic: in, schema: transaction,
  key: [source_account],
  time: event_time}
dlq: dead
rules:
  - id: big
    version: 2
    description: a big one
    when: amount >= 900
  - id: busy
    when:
      all:
        - currency == 'EUR'
        - aggregate:
            function: count
            group_by: source_account
            window: {kind: hopping, size: 10m, advance: 5m, grace: 1s}
            filter: amount < 2
            op: ">"
            threshold: 3
branches:
  - name: fraud
    to: out-fraud
    rules: [big, busy]
default_branch:
  name: legit
  to: out-legit
"""


def load(text: str, **kwargs: Any) -> Topology:
    """``loads_topology`` with the project's schemas (``source.schema`` names a ``schemas/<name>.avsc``)."""
    return loads_topology(text, schemas=schema_text, **kwargs)


def test_fraud_yaml_loads_against_the_project_topics() -> None:
    t = load_topology(FRAUD_TOPOLOGY, schemas=schema_text, known_topics=set(TOPICS.model_dump().values()))
    assert t.source == TOPICS.transactions
    assert t.dlq == TOPICS.dlq
    assert [b.to for b in t.branches] == [TOPICS.fraud]
    assert t.default.to == TOPICS.legit
    assert t.alerts == TOPICS.alerts
    rules = {r.id: r for r in t.rules}
    assert str(rules["large-amount"].condition) == "amount >= 900 and channel == 'online'"
    assert t.branches[0].rules[0].id == "large-amount"  # the tutorial's rule is the first fraud rule
    assert {"velocity", "card-testing", "fan-in", "fan-out", "structuring"} <= set(rules)


def test_good_document() -> None:
    t = load(GOOD)
    assert t.name == "test-app"
    big, busy = t.branches[0].rules
    assert (big.id, big.version, big.description) == ("big", 2, "a big one")
    assert isinstance(busy.condition, AllOf)
    agg = busy.condition.conditions[1]
    assert isinstance(agg, Aggregate)
    assert agg.name == "busy"  # store named after its rule
    assert (agg.window.kind, agg.window.size_ms, agg.window.advance_ms, agg.window.grace_ms) == (
        "hopping", 600_000, 300_000, 1000,
    )
    assert (agg.op, agg.threshold, str(agg.filter)) == (">", Decimal(3), "amount < 2")
    assert [s.name for s in t.stores] == ["busy"]


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "message"),
    [
        ("when: amount >= 900", "when: amout >= 900", 10, "rules[0].when", "unknown field 'amout'"),
        ("when: amount >= 900", "when: amount => 900", 10, "rules[0].when", "unknown operator '=>' (use '>=')"),
        ('op: ">"', 'op: "=>"', 20, "rules[1].when.all[1].aggregate.op", "unknown operator '=>'"),
        ("filter: amount < 2", "filter: amount < 'x'", 19, "rules[1].when.all[1].aggregate.filter", "cannot order"),
        ("group_by: source_account", "group_by: source", 17, "rules[1].when.all[1].aggregate.group_by",
         "unknown field 'source'"),
        ("schema: transaction", "schema: transactoin", 2, "source.schema", "unknown schema 'transactoin'"),
        ("schema: transaction", "schema: [transaction]", 2, "source.schema", "expected str, got a list"),
        ("in, schema: transaction,", "in,", 2, "source", "missing key 'schema' (the Avro schema of the source's"),
        ("time: event_time", "time: amount", 4, "source.time", "'amount' is not a timestamp field"),
        ("    version: 2", "    versoin: 2", 8, "rules[0].versoin", "unknown key"),
        ("    version: 2", "    version: two", 8, "rules[0].version", "expected int"),
        ("  - id: busy\n", "  - id: big\n", 11, "rules[1].id", "duplicate rule id 'big'"),
        ("rules: [big, busy]", "rules: [big, bussy]", 25, "branches[0].rules[1]", "unknown rule 'bussy'"),
        ("  to: out-legit", "  to: dead", 28, "default_branch.to", "duplicate topic 'dead'"),
        ("    to: out-fraud", "    to: in", 24, "branches[0].to", "duplicate topic 'in'"),
        ("    to: out-fraud", "    to: 'bad topic'", 24, "branches[0].to", "illegal topic name"),
        ("size: 10m", "size: 10 minutes", 18, "rules[1].when.all[1].aggregate.window.size", "bad duration"),
        ("kind: hopping", "kind: rolling", 18, "rules[1].when.all[1].aggregate.window.kind", "unknown window kind"),
        ("advance: 5m, ", "", 18, "rules[1].when.all[1].aggregate.window", "missing key 'advance'"),
        ("function: count", "function: avg", 16, "rules[1].when.all[1].aggregate.function",
         "unknown aggregate function"),
        ("function: count", "function: sum", 15, "rules[1].when.all[1].aggregate", "missing key 'field'"),
        ("threshold: 3", "threshold: [3]", 21, "rules[1].when.all[1].aggregate.threshold", "expected a number"),
        ("dlq: dead\n", "", 1, "(top level)", "missing key 'dlq'"),
        ("      all:", "      every:", 13, "rules[1].when.every", "unknown condition"),
        ("threshold: 3", "threshold: 3\n            related: true", 22, "rules[1].when.all[1].aggregate.related",
         "only a sliding window can name related transactions"),
        ("threshold: 3", "threshold: 3\n            related: yes please", 22,
         "rules[1].when.all[1].aggregate.related", "expected bool"),
    ],
)
def test_errors_name_file_line_and_key(old: str, new: str, line: int, key: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(TopologyError) as err:
        load(GOOD.replace(old, new, 1), filename="t.yaml")
    e = err.value
    assert (e.file, e.line, e.key) == ("t.yaml", line, key), str(e)
    assert message in e.message
    assert str(e).startswith(f"t.yaml:{line}: {key}: ")


def test_unknown_topic_when_topics_are_known() -> None:
    with pytest.raises(TopologyError) as err:
        load(GOOD, filename="t.yaml", known_topics={"in", "dead", "out-legit"})
    assert (err.value.line, err.value.key) == (24, "branches[0].to")
    assert "unknown topic 'out-fraud'" in err.value.message


def test_unused_rule_is_an_error() -> None:
    with pytest.raises(TopologyError) as err:
        load(GOOD.replace("rules: [big, busy]", "rules: [big]"))
    assert "used by no branch: busy" in err.value.message


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(TopologyError) as err:
        load(GOOD.replace("    to: out-fraud", "    to: [out-fraud"), filename="t.yaml")
    assert err.value.file == "t.yaml" and err.value.line >= 24
    assert "not valid YAML" in err.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError) as err:
        load_topology(tmp_path / "nope.yaml")
    assert "cannot read" in str(err.value)


def test_alerts_topic_is_optional_and_must_be_its_own() -> None:
    assert load(GOOD).alerts is None
    assert load(GOOD.replace("dlq: dead\n", "dlq: dead\nalerts: out-alerts\n", 1)).alerts == "out-alerts"
    with pytest.raises(TopologyError) as err:
        load(GOOD.replace("dlq: dead\n", "dlq: dead\nalerts: dead\n", 1), filename="t.yaml")
    assert err.value.key == "alerts" and "duplicate topic 'dead': it is dlq" in err.value.message
    with pytest.raises(TopologyError) as err:
        load(GOOD.replace("dlq: dead\n", "dlq: dead\nalerts: out-fraud\n", 1))
    assert "alerts topic 'out-fraud' is also" in err.value.message


def test_related_on_a_sliding_window() -> None:
    text = GOOD.replace("{kind: hopping, size: 10m, advance: 5m, grace: 1s}", "{kind: sliding, size: 10m}")
    (agg,) = aggregates_of(load(text).rules[1].condition)
    assert agg.related is False
    related = text.replace("threshold: 3", "threshold: 3\n            related: true").replace(
        "  time: event_time}", "  time: event_time, id: transaction_id}"
    )
    (agg,) = aggregates_of(load(related).rules[1].condition)
    assert agg.related is True
    with pytest.raises(TopologyError) as exc:  # it names records by their id: the source must say which field
        load(related.replace(", id: transaction_id}", "}"))
    assert exc.value.key.endswith("aggregate.related") and "source.id" in exc.value.message


def test_the_fields_come_from_the_source_schema_the_caller_resolves() -> None:
    assert load(GOOD).fields == fields_from_avro(schema_text("transaction"))
    with pytest.raises(TopologyError) as err:
        loads_topology(GOOD, filename="t.yaml")  # nothing to resolve the schema's name with
    assert str(err.value) == (
        "t.yaml:2: source.schema: unknown schema 'transaction' (no schemas were given to resolve it)"
    )
    with pytest.raises(TopologyError) as err:
        loads_topology(GOOD, filename="t.yaml", schemas=lambda name: '"string"')
    assert str(err.value) == "t.yaml:2: source.schema: schema 'transaction' is not an Avro record schema"


def test_a_source_that_names_no_schema_reads_the_fields_the_caller_gives() -> None:
    unnamed = GOOD.replace("in, schema: transaction,", "in,")
    with pytest.raises(TopologyError) as err:
        loads_topology(unnamed, filename="t.yaml", schemas=schema_text)
    assert str(err.value) == "t.yaml:2: source: missing key 'schema' (the Avro schema of the source's values)"
    assert loads_topology(unnamed, fields=transaction_fields()) == load(GOOD)
    key_and_time = {k: v for k, v in transaction_fields().items() if k in ("source_account", "event_time")}
    with pytest.raises(TopologyError) as err:
        loads_topology(unnamed, filename="t.yaml", fields=key_and_time)
    assert str(err.value).startswith("t.yaml:10: rules[0].when: unknown field 'amount' (fields: event_time, source")

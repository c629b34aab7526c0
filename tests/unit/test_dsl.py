"""The Python builder builds the same plan as the YAML loader, and checks what it is given."""

from __future__ import annotations

from typing import Any

import pytest

from services.detector import FRAUD_TOPOLOGY, load_topology
from tests.unit.topology_support import TX, stream
from topology.plan import dsl
from topology.plan.dsl import hopping, sliding, tumbling
from topology.plan.expr import ExprError, FieldType
from topology.plan.model import PlanError, Predicate, Topology, Window


def fraud_topology_in_python() -> Topology:
    day = sliding("24h", grace="1m")
    three_min = sliding("3m", grace="30s")
    under_large = "amount >= 700 and amount < 900"
    tx = stream(
        "queueing.transactions",
        dlq="streaming.transactions.dlq",
        name="fraud-detector",
        alerts="streaming.transactions.alerts",
        id_field="transaction_id",
    )
    return (
        tx.split()
        .branch(
            [
                tx.rule(
                    "large-amount",
                    "amount >= 900 and channel == 'online'",
                    version=2,
                    description="The tutorial's rule (amount >= 900), narrowed to card-not-present (online) "
                    "payments: large transfers between people are common legit traffic (v1 flagged about 1 legit "
                    "payment in 1,000).",
                ),
                tx.rule(
                    "velocity",
                    tx.any_of(
                        tx.all_of(
                            tx.count(by="source_account", window=three_min, name="velocity-count", related=True) >= 5,
                            tx.sum("amount", by="source_account", window=three_min, name="velocity-sum") >= 1200,
                        ),
                        tx.count(by="source_account", window=three_min, name="velocity-many", related=True) >= 10,
                    ),
                    version=3,
                    description="A burst of spending from one account within three minutes: five or more payments "
                    "adding up to 1,200 or more, or ten or more payments of any amount.",
                ),
                tx.rule(
                    "card-testing",
                    tx.count(
                        by="source_account", window=sliding("5m", grace="30s"), where="amount <= 2", related=True
                    )
                    >= 2,
                    version=3,
                    description="Tiny payments (2.00 or less) from one account in quick succession (a stolen card "
                    "being tested).",
                ),
                tx.rule(
                    "fan-in",
                    tx.distinct_count(
                        "source_account",
                        by=["target_account", "amount"],
                        window=day,
                        where="merchant_category == null and amount >= 100",
                        related=True,
                    )
                    >= 3,
                    version=2,
                    description="Three or more different accounts transferring the same amount (100 or more) to one "
                    "private account (no merchant) within a day: a money mule collecting.",
                ),
                tx.rule(
                    "fan-out",
                    tx.distinct_count(
                        "target_account",
                        by="source_account",
                        window=sliding("15m", grace="30s"),
                        where="merchant_category == null and amount >= 100",
                        related=True,
                    )
                    >= 5,
                    version=3,
                    description="One account transferring 100 or more to many different people (no merchant) "
                    "within 15 minutes.",
                ),
                tx.rule(
                    "structuring",
                    tx.any_of(
                        tx.count(
                            by="source_account",
                            window=day,
                            where="amount >= 7000 and amount < 10000",
                            name="structuring-reporting",
                            related=True,
                        )
                        >= 2,
                        tx.all_of(
                            tx.count(
                                by="source_account", window=day, where=under_large, name="structuring-count",
                                related=True,
                            )
                            >= 3,
                            tx.sum("amount", by="source_account", window=day, where=under_large, name="structuring-sum")
                            >= 2000,
                        ),
                    ),
                    version=3,
                    description="Several payments from one account within a day just under a limit: two or more "
                    "just under the 10,000 reporting threshold, or three or more just under the large-amount "
                    "limit adding up to more than 2,000.",
                ),
            ],
            to="streaming.transactions.fraud",
            name="fraud",
        )
        .default_branch(to="streaming.transactions.legit", name="legit")
    )


def test_dsl_and_yaml_build_the_same_plan() -> None:
    assert fraud_topology_in_python() == load_topology(FRAUD_TOPOLOGY)


def test_branch_accepts_expressions_and_python_predicates() -> None:
    def is_weekend(r: Any) -> bool:
        return bool(r["event_time"].weekday() >= 5)

    t = (
        stream("in", dlq="dlq", name="app")
        .split()
        .branch("amount >= 900", to="big")
        .branch(is_weekend, to="weekend", name="weekend")
        .default_branch(to="rest")
    )
    assert [b.name for b in t.branches] == ["branch-0", "weekend"]
    assert str(t.branches[0].rules[0].condition) == "amount >= 900"
    cond = t.branches[1].rules[0].condition
    assert isinstance(cond, Predicate) and cond.name == "is_weekend"
    assert t.default.name == "default" and t.sinks == ("big", "weekend", "rest")


def test_windows() -> None:
    assert tumbling("1h") == Window("tumbling", 3_600_000)
    assert hopping("10m", advance="1m", grace="5s") == Window("hopping", 600_000, 5000, 60_000)
    assert sliding(1500) == Window("sliding", 1500)
    with pytest.raises(PlanError, match="advance <= size"):
        hopping("1m", advance="2m")
    with pytest.raises(PlanError, match="bad duration"):
        sliding("soon")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: stream("in", dlq="dlq").split().branch("amount > 1", to="in").default_branch(to="x"),
            "both the source and a sink",
        ),
        (
            lambda: stream("in", dlq="x").split().branch("amount > 1", to="a").default_branch(to="x"),
            "dead-letter topic",
        ),
        (
            lambda: (
                stream("in", dlq="d")
                .split()
                .branch("amount > 1", to="a", name="n")
                .branch("amount > 2", to="b", name="n")
                .default_branch(to="c")
            ),
            "duplicate branch name",
        ),
        (
            lambda: (
                stream("in", dlq="d")
                .split()
                .branch(TX.rule("r", "amount > 1"), to="a")
                .branch(TX.rule("r", "amount > 2"), to="b")
                .default_branch(to="c")
            ),
            "duplicate rule id",
        ),
        (
            lambda: stream("in", dlq="d").split().branch("amount > 1", to="bad topic").default_branch(to="c"),
            "illegal topic name",
        ),
        (lambda: TX.count(by="nope", window=sliding("1m")) >= 1, "unknown field 'nope'"),
        (lambda: TX.sum("currency", by="source_account", window=sliding("1m")) >= 1, "sum needs a number field"),
    ],
)
def test_plan_errors(build: Any, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        build()


def test_stages_add_a_repartition_topic_per_foreign_grouping() -> None:
    t = (
        stream("in", dlq="d", name="app")
        .split()
        .branch(
            [
                TX.rule("a", TX.count(by="source_account", window=sliding("1m")) >= 2),
                TX.rule("b", TX.count(by=["source_account", "currency"], window=sliding("1m")) >= 2),
                TX.rule("c", TX.count(by="target_account", window=sliding("1m")) >= 2),
            ],
            to="out",
        )
        .default_branch(to="rest")
    )
    stages = t.stages
    assert [(s.input_topic, [x.name for x in s.stores]) for s in stages] == [
        ("in", ["a", "b"]),  # grouping that includes the record key stays with the input partition
        ("app-by-target_account-repartition", ["c"]),
    ]
    assert [s.changelog_topic for s in t.stores] == ["app-by-source_account-changelog"] * 2 + [
        "app-by-target_account-changelog"
    ]
    renamed = t.with_topics({"in": "in-1", "out": "out-1", "d": "d-1"})
    assert (renamed.source, renamed.dlq, renamed.branches[0].to, renamed.default.to) == ("in-1", "d-1", "out-1", "rest")


READINGS = {"sensor": FieldType("string"), "at": FieldType("timestamp"), "celsius": FieldType("number")}


def test_a_stream_needs_the_field_types_of_its_records() -> None:
    with pytest.raises(TypeError, match="fields"):
        dsl.stream("in", dlq="d", key=["sensor"], time_field="at")  # type: ignore[call-arg]


def test_conditions_are_checked_against_the_fields_of_their_stream() -> None:
    readings = dsl.stream("plant.readings", fields=READINGS, dlq="d", key=["sensor"], time_field="at")
    assert readings.expr("celsius > 90").fields == {"celsius"}
    with pytest.raises(ExprError, match="unknown field 'amount' \\(fields: at, celsius, sensor\\)"):
        readings.rule("big", "amount >= 900")
    with pytest.raises(PlanError, match="unknown field 'source_account'"):
        readings.count(by="source_account", window=sliding("1m"))
    with pytest.raises(ExprError, match="unknown field 'amount'"):
        readings.split().branch("amount >= 900", to="out")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"key": ["site"]}, "the source's key field 'site' is none of its fields \\(at, celsius, sensor\\)"),
        ({"time_field": "celsius"}, "the source's time field 'celsius' is not a timestamp"),
        ({"id_field": "reading_id"}, "the source's id field 'reading_id' is none of its fields"),
        ({"fields": {}}, "the source's key field 'sensor' is none of its fields \\(none\\)"),
    ],
)
def test_the_source_key_time_and_id_are_fields_of_its_records(source: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"fields": READINGS, "dlq": "d", "key": ["sensor"], "time_field": "at", **source}
    with pytest.raises(PlanError, match=message):
        dsl.stream("in", **args).split().default_branch(to="out")

"""The Python builder, in the spirit of Kafka Streams' ``split()/branch()/defaultBranch()``::

    topology = (
        stream("queueing.transactions", dlq="streaming.transactions.dlq", name="fraud-detector")
        .split()
        .branch(rule("large-amount", "amount >= 900"), to="streaming.transactions.fraud", name="fraud")
        .default_branch(to="streaming.transactions.legit", name="legit")
    )

Windowed aggregates read like their meaning::

    count(by="source_account", window=sliding("5m")) >= 10
    distinct_count("source_account", by="target_account", window=sliding("24h"), where="amount == 1000") >= 20

It builds the same ``Topology`` value as the YAML loader.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from topology.plan.expr import TRANSACTION_FIELDS, Expression, FieldType, parse
from topology.plan.model import (
    Aggregate,
    AggregateFunction,
    AllOf,
    AnyOf,
    Branch,
    Comparison,
    Condition,
    DefaultBranch,
    PlanError,
    Predicate,
    Rule,
    Topology,
    Window,
    parse_duration,
)

Duration = str | int
Number = int | str | Decimal
ConditionLike = Condition | str


def expr(text: str, fields: Mapping[str, FieldType] = TRANSACTION_FIELDS) -> Expression:
    """A checked expression over record fields (see ``topology.plan.expr``)."""
    return parse(text, fields)


def tumbling(size: Duration, *, grace: Duration = 0) -> Window:
    return Window("tumbling", parse_duration(size), parse_duration(grace))


def hopping(size: Duration, *, advance: Duration, grace: Duration = 0) -> Window:
    return Window("hopping", parse_duration(size), parse_duration(grace), parse_duration(advance))


def sliding(size: Duration, *, grace: Duration = 0) -> Window:
    return Window("sliding", parse_duration(size), parse_duration(grace))


@dataclass(frozen=True)
class AggregateBuilder:
    """An aggregate without its threshold; compare it (``>= 10``) to get an ``Aggregate``."""

    function: AggregateFunction
    field: str | None
    group_by: tuple[str, ...]
    window: Window
    filter: Expression | None
    name: str
    related: bool = False

    def compare(self, op: Comparison, threshold: Number) -> Aggregate:
        return Aggregate(
            self.function, self.group_by, self.window, op, Decimal(str(threshold)), self.field, self.filter,
            self.name, self.related,
        )  # fmt: skip

    def __ge__(self, threshold: Number) -> Aggregate:
        return self.compare(">=", threshold)

    def __gt__(self, threshold: Number) -> Aggregate:
        return self.compare(">", threshold)

    def __le__(self, threshold: Number) -> Aggregate:
        return self.compare("<=", threshold)

    def __lt__(self, threshold: Number) -> Aggregate:
        return self.compare("<", threshold)


def _agg(
    function: AggregateFunction,
    field: str | None,
    by: str | Sequence[str],
    window: Window,
    where: str | Expression | None,
    name: str,
    fields: Mapping[str, FieldType],
    related: bool = False,
) -> AggregateBuilder:
    group = (by,) if isinstance(by, str) else tuple(by)
    for f in (*group, *([field] if field else [])):
        if f not in fields:
            raise PlanError(f"unknown field {f!r}")
    if function == "sum" and field is not None and fields[field].type != "number":
        raise PlanError(f"sum needs a number field, {field!r} is a {fields[field].type}")
    flt = parse(where, fields) if isinstance(where, str) else where
    return AggregateBuilder(function, field, group, window, flt, name, related)


def count(
    *,
    by: str | Sequence[str],
    window: Window,
    where: str | Expression | None = None,
    name: str = "",
    fields: Mapping[str, FieldType] = TRANSACTION_FIELDS,
    related: bool = False,
) -> AggregateBuilder:
    """Number of records per group and window (``related``: alerts name the window's earlier transactions)."""
    return _agg("count", None, by, window, where, name, fields, related)


def sum_(
    field: str,
    *,
    by: str | Sequence[str],
    window: Window,
    where: str | Expression | None = None,
    name: str = "",
    fields: Mapping[str, FieldType] = TRANSACTION_FIELDS,
    related: bool = False,
) -> AggregateBuilder:
    """Sum of a number field per group and window."""
    return _agg("sum", field, by, window, where, name, fields, related)


def distinct_count(
    field: str,
    *,
    by: str | Sequence[str],
    window: Window,
    where: str | Expression | None = None,
    name: str = "",
    fields: Mapping[str, FieldType] = TRANSACTION_FIELDS,
    related: bool = False,
) -> AggregateBuilder:
    """Number of distinct values of a field per group and window."""
    return _agg("distinct_count", field, by, window, where, name, fields, related)


def _condition(c: ConditionLike) -> Condition:
    return parse(c) if isinstance(c, str) else c


def all_of(*conditions: ConditionLike) -> AllOf:
    return AllOf(tuple(_condition(c) for c in conditions))


def any_of(*conditions: ConditionLike) -> AnyOf:
    return AnyOf(tuple(_condition(c) for c in conditions))


def rule(id: str, condition: ConditionLike, *, version: int = 1, description: str = "") -> Rule:
    """A named, versioned rule; a string condition is parsed as an expression."""
    return Rule(id, _condition(condition), version, description).named()


BranchPredicate = Rule | Sequence[Rule] | str | Condition | Callable[[Mapping[str, Any]], bool]


class Stream:
    """``stream(topic)``: the source of a topology."""

    def __init__(
        self, topic: str, *, dlq: str, name: str, key: Sequence[str], time_field: str, alerts: str | None = None,
        id_field: str | None = None,
    ) -> None:
        self.topic = topic
        self.dlq = dlq
        self.alerts = alerts
        self.name = name
        self.key = tuple(key)
        self.time_field = time_field
        self.id_field = id_field

    def split(self) -> Split:
        """Start a ``split()``: branches in order, first match wins."""
        return Split(self, ())


@dataclass(frozen=True)
class Split:
    """The branches added so far; ``default_branch`` finishes the topology."""

    stream: Stream
    branches: tuple[Branch, ...]

    def branch(self, predicate: BranchPredicate, *, to: str, name: str | None = None) -> Split:
        """Records for which ``predicate`` holds go to ``to`` (unless an earlier branch took them).

        ``predicate``: a rule or rules, an expression text, a condition, or a Python callable.
        """
        bname = name or f"branch-{len(self.branches)}"
        rules: tuple[Rule, ...]
        if isinstance(predicate, Rule):
            rules = (predicate.named(),)
        elif isinstance(predicate, Sequence) and not isinstance(predicate, str):
            rules = tuple(r.named() for r in predicate)
        elif isinstance(predicate, str | Expression | Aggregate | AllOf | AnyOf | Predicate):
            rules = (rule(bname, predicate),)
        elif callable(predicate):
            fn_name = getattr(predicate, "__name__", "predicate")
            rules = (Rule(bname, Predicate(fn_name, predicate)),)
        else:
            raise PlanError(f"branch {bname}: not a predicate: {predicate!r}")
        return Split(self.stream, (*self.branches, Branch(bname, rules, to)))

    def default_branch(self, *, to: str, name: str = "default") -> Topology:
        """Where records no branch took go; returns the finished topology."""
        s = self.stream
        return Topology(
            name=s.name,
            source=s.topic,
            branches=self.branches,
            default=DefaultBranch(name, to),
            dlq=s.dlq,
            source_key=s.key,
            time_field=s.time_field,
            alerts=s.alerts,
            id_field=s.id_field,
        )


def stream(
    topic: str,
    *,
    dlq: str,
    key: Sequence[str],
    time_field: str,
    name: str = "topology",
    alerts: str | None = None,
    id_field: str | None = None,
) -> Stream:
    """The source topic; ``key`` names the fields the record key is made of, ``name`` is the application id,
    ``alerts`` the topic of an alert per decision of a (non-default) branch, ``id_field`` the field that
    identifies a record (what ``related`` aggregates keep)."""
    return Stream(topic, dlq=dlq, name=name, key=key, time_field=time_field, alerts=alerts, id_field=id_field)

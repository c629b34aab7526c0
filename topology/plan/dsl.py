"""The Python builder, in the spirit of Kafka Streams' ``split()/branch()/defaultBranch()``::

    readings = stream("plant.readings", fields=fields_from_avro(reading_schema), key=["sensor"], time_field="at",
                      dlq="plant.readings.dlq", name="plant-monitor")
    topology = (
        readings.split()
        .branch(readings.rule("overheat", "celsius > 90"), to="plant.alarms", name="alarm")
        .default_branch(to="plant.normal", name="normal")
    )

The stream knows the field types of its records (``fields``): its expressions, rules and windowed
aggregates are checked against them, and aggregates read like their meaning::

    readings.count(by="sensor", window=sliding("5m")) >= 10
    readings.distinct_count("sensor", by="site", window=sliding("1h"), where="celsius > 70") >= 3

It builds the same ``Topology`` value as the YAML loader.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypedDict, Unpack

from topology.plan.expr import Expression, FieldType, parse
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
Group = str | Sequence[str]


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


class AggregateOptions(TypedDict, total=False):
    """What every aggregate may add: a filter, a store name, and ``related`` (the alert names the window's
    earlier records; sliding windows only)."""

    where: str | Expression | None
    name: str
    related: bool


BranchPredicate = Rule | Sequence[Rule] | str | Condition | Callable[[Mapping[str, Any]], bool]


class Stream:
    """``stream(topic, fields=...)``: the source of a topology, and the builder of conditions over its records."""

    def __init__(
        self, topic: str, *, fields: Mapping[str, FieldType], dlq: str, name: str, key: Sequence[str],
        time_field: str, alerts: str | None = None, id_field: str | None = None,
    ) -> None:  # fmt: skip
        self.topic = topic
        self.fields = fields
        self.dlq = dlq
        self.alerts = alerts
        self.name = name
        self.key = tuple(key)
        self.time_field = time_field
        self.id_field = id_field

    # ------------------------------------------------------------ conditions over this stream's records

    def expr(self, text: str) -> Expression:
        """A checked expression over the record's fields (see ``topology.plan.expr``)."""
        return parse(text, self.fields)

    def condition(self, c: ConditionLike) -> Condition:
        """``c``, an expression text parsed if it is one."""
        return self.expr(c) if isinstance(c, str) else c

    def all_of(self, *conditions: ConditionLike) -> AllOf:
        return AllOf(tuple(self.condition(c) for c in conditions))

    def any_of(self, *conditions: ConditionLike) -> AnyOf:
        return AnyOf(tuple(self.condition(c) for c in conditions))

    def rule(self, id: str, condition: ConditionLike, *, version: int = 1, description: str = "") -> Rule:
        """A named, versioned rule; a string condition is parsed as an expression."""
        return Rule(id, self.condition(condition), version, description).named()

    def aggregate(
        self, function: AggregateFunction, field: str | None, *, by: Group, window: Window,
        where: str | Expression | None = None, name: str = "", related: bool = False,
    ) -> AggregateBuilder:  # fmt: skip
        """``function`` of ``field`` (none for ``count``) per group (``by``) and window."""
        group = (by,) if isinstance(by, str) else tuple(by)
        for f in (*group, *([field] if field else [])):
            if f not in self.fields:
                raise PlanError(f"unknown field {f!r} (fields: {', '.join(sorted(self.fields)) or 'none'})")
        if function == "sum" and field is not None and self.fields[field].type != "number":
            raise PlanError(f"sum needs a number field, {field!r} is a {self.fields[field].type}")
        flt = self.expr(where) if isinstance(where, str) else where
        return AggregateBuilder(function, field, group, window, flt, name, related)

    def count(self, *, by: Group, window: Window, **options: Unpack[AggregateOptions]) -> AggregateBuilder:
        """Number of records per group and window."""
        return self.aggregate("count", None, by=by, window=window, **options)

    def sum(self, field: str, *, by: Group, window: Window, **options: Unpack[AggregateOptions]) -> AggregateBuilder:
        """Sum of a number field per group and window."""
        return self.aggregate("sum", field, by=by, window=window, **options)

    def distinct_count(
        self, field: str, *, by: Group, window: Window, **options: Unpack[AggregateOptions]
    ) -> AggregateBuilder:
        """Number of distinct values of a field per group and window."""
        return self.aggregate("distinct_count", field, by=by, window=window, **options)

    # ------------------------------------------------------------ the topology

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
            rules = (self.stream.rule(bname, predicate),)
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
            fields=s.fields,
        )


def stream(
    topic: str,
    *,
    fields: Mapping[str, FieldType],
    dlq: str,
    key: Sequence[str],
    time_field: str,
    name: str = "topology",
    alerts: str | None = None,
    id_field: str | None = None,
) -> Stream:
    """The source topic; ``fields`` are the field types of its records (``fields_from_avro`` of their Avro
    schema), ``key`` names the fields the record key is made of, ``name`` is the application id,
    ``alerts`` the topic of an alert per decision of a (non-default) branch, ``id_field`` the field that
    identifies a record (what ``related`` aggregates keep)."""
    return Stream(
        topic, fields=fields, dlq=dlq, name=name, key=key, time_field=time_field, alerts=alerts, id_field=id_field
    )

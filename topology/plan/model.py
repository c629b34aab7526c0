"""The topology plan: immutable values, no I/O.

A ``Topology`` reads one source topic, decodes each record, lets the first
``Branch`` whose rules fire take it (Kafka Streams' ``split()``: first match
wins, each branch's rules evaluated once) and otherwise sends it to the default
branch; records that cannot be decoded or evaluated go to the dead-letter topic.

A ``Rule`` has an id, a version and a ``Condition``: a stateless ``Expression``,
a Python ``Predicate``, a windowed ``Aggregate`` (stateful), or ``AllOf``/``AnyOf``
of those. The processor evaluates every rule against (record, state), so adding
stateful or run-time rules changes only values of this module, not the runtime.

Aggregates whose ``group_by`` contains the source key fields keep their state
next to the input partition (stage 0). Other groupings get a repartition topic
and a later stage, as Kafka Streams does; the decision is taken in the last stage.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal

from topology.plan.expr import Expression, FieldType

AggregateFunction = Literal["count", "sum", "distinct_count"]
WindowKind = Literal["tumbling", "hopping", "sliding"]
Comparison = Literal[">=", ">", "<=", "<", "==", "!="]
COMPARISONS: tuple[Comparison, ...] = (">=", ">", "<=", "<", "==", "!=")
AGGREGATE_FUNCTIONS: tuple[AggregateFunction, ...] = ("count", "sum", "distinct_count")
WINDOW_KINDS: tuple[WindowKind, ...] = ("tumbling", "hopping", "sliding")

_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


class PlanError(ValueError):
    """A topology that is not well formed (duplicate name, bad topic, ...)."""


def check_topic(name: str) -> str:
    """``name`` if it is a legal Kafka topic name, else ``PlanError``."""
    if not _TOPIC.match(name) or name in (".", ".."):
        raise PlanError(f"illegal topic name {name!r} (1-249 of letters, digits, '.', '_', '-')")
    return name


def check_name(name: str, what: str) -> str:
    """``name`` if it is a legal branch/rule/store name (letters, digits, '_', '-')."""
    if not _NAME.match(name):
        raise PlanError(f"illegal {what} name {name!r} (1-100 of letters, digits, '_', '-')")
    return name


@dataclass(frozen=True)
class Predicate:
    """A Python predicate (DSL only): ``fn(record) -> bool``; ``name`` is what ``describe`` shows."""

    name: str
    fn: Callable[[Mapping[str, Any]], bool] = field(compare=False)

    def __str__(self) -> str:
        return f"<python {self.name}>"


@dataclass(frozen=True)
class Window:
    """An event-time window. ``hopping`` needs ``advance_ms``; records later than ``grace_ms`` are dropped.

    ``sliding`` covers, for each record at time t, the records of the same key in (t - size, t].
    """

    kind: WindowKind
    size_ms: int
    grace_ms: int = 0
    advance_ms: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in WINDOW_KINDS:
            raise PlanError(f"unknown window kind {self.kind!r} (one of {', '.join(WINDOW_KINDS)})")
        if self.size_ms <= 0 or self.grace_ms < 0:
            raise PlanError("window size must be > 0 and grace >= 0")
        if self.kind == "hopping":
            if self.advance_ms is None or not 0 < self.advance_ms <= self.size_ms:
                raise PlanError("a hopping window needs 0 < advance <= size")
        elif self.advance_ms is not None:
            raise PlanError(f"only hopping windows take an advance, not {self.kind}")

    def __str__(self) -> str:
        s = f"{self.kind} {format_duration(self.size_ms)}"
        if self.advance_ms is not None:
            s += f" advance {format_duration(self.advance_ms)}"
        return s + f" grace {format_duration(self.grace_ms)}"


@dataclass(frozen=True)
class Aggregate:
    """A windowed aggregate over records with the same ``group_by`` values, compared with a threshold.

    It holds for a record when the record passes ``filter`` and the aggregate of its
    window (after adding the record) satisfies ``op threshold``. ``name`` names its
    state store; builders default it to the rule id. ``related`` (sliding windows only): the
    store also keeps each record's id (the topology's ``id_field``), and when the aggregate holds,
    the alert names the earlier records of the window (they make up the value that fired).
    """

    function: AggregateFunction
    group_by: tuple[str, ...]
    window: Window
    op: Comparison
    threshold: Decimal
    field: str | None = None
    filter: Expression | None = None
    name: str = ""
    related: bool = False

    def __post_init__(self) -> None:
        if self.related and self.window.kind != "sliding":
            raise PlanError(f"only a sliding window can name related transactions, not {self.window.kind}")
        if self.function not in AGGREGATE_FUNCTIONS:
            raise PlanError(f"unknown aggregate function {self.function!r}")
        if self.op not in COMPARISONS:
            raise PlanError(f"unknown comparison {self.op!r} (one of {' '.join(COMPARISONS)})")
        if not self.group_by:
            raise PlanError("an aggregate needs at least one group_by field")
        if (self.function == "count") != (self.field is None):
            raise PlanError("count takes no field; sum and distinct_count need one")

    def __str__(self) -> str:
        fn = f"{self.function}({self.field or '*'})"
        s = f"{fn} by {','.join(self.group_by)} over {self.window}"
        if self.filter is not None:
            s += f" where {self.filter}"
        s += f" {self.op} {self.threshold}"
        return s + " (naming related transactions)" if self.related else s


@dataclass(frozen=True)
class AllOf:
    """Holds when every condition holds (each evaluated; aggregates always updated)."""

    conditions: tuple[Condition, ...]

    def __str__(self) -> str:
        return "(" + " AND ".join(str(c) for c in self.conditions) + ")"


@dataclass(frozen=True)
class AnyOf:
    """Holds when at least one condition holds."""

    conditions: tuple[Condition, ...]

    def __str__(self) -> str:
        return "(" + " OR ".join(str(c) for c in self.conditions) + ")"


Condition = Expression | Predicate | Aggregate | AllOf | AnyOf


def aggregates_of(condition: Condition) -> Iterator[Aggregate]:
    """The aggregates of a condition, depth first."""
    if isinstance(condition, Aggregate):
        yield condition
    elif isinstance(condition, AllOf | AnyOf):
        for c in condition.conditions:
            yield from aggregates_of(c)


@dataclass(frozen=True)
class Rule:
    """A named, versioned condition; decisions name it as ``id@version``."""

    id: str
    condition: Condition
    version: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        check_name(self.id, "rule")
        if self.version < 1:
            raise PlanError(f"rule {self.id}: version must be >= 1")

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    @property
    def stateful(self) -> bool:
        return next(aggregates_of(self.condition), None) is not None

    def named(self) -> Rule:
        """This rule with every unnamed aggregate named ``<id>`` (or ``<id>-<n>`` when it has several)."""
        aggs = list(aggregates_of(self.condition))
        if all(a.name for a in aggs):
            return self
        counter = iter(range(len(aggs)))

        def name(c: Condition) -> Condition:
            if isinstance(c, Aggregate):
                n = next(counter)
                return c if c.name else replace(c, name=self.id if len(aggs) == 1 else f"{self.id}-{n}")
            if isinstance(c, AllOf):
                return AllOf(tuple(name(x) for x in c.conditions))
            if isinstance(c, AnyOf):
                return AnyOf(tuple(name(x) for x in c.conditions))
            return c

        return replace(self, condition=name(self.condition))


@dataclass(frozen=True)
class Branch:
    """Records for which any of ``rules`` fires go to ``to`` (all its rules are evaluated, once each)."""

    name: str
    rules: tuple[Rule, ...]
    to: str

    def __post_init__(self) -> None:
        check_name(self.name, "branch")
        check_topic(self.to)
        if not self.rules:
            raise PlanError(f"branch {self.name}: needs at least one rule")


@dataclass(frozen=True)
class DefaultBranch:
    """Where records go that no branch took."""

    name: str
    to: str

    def __post_init__(self) -> None:
        check_name(self.name, "branch")
        check_topic(self.to)


@dataclass(frozen=True)
class Store:
    """A windowed state store: one aggregate, partitioned like its stage's input topic.

    ``changelog_topic`` is its stage's: the stores of a stage share one changelog, keyed by group key.
    """

    name: str
    aggregate: Aggregate
    rule: Rule
    stage: int
    changelog_topic: str


@dataclass(frozen=True)
class Stage:
    """A sub-topology: reads ``input_topic`` (keyed by ``key_fields``) and updates ``stores``.

    Every stage but the last writes to the next stage's input (a repartition topic);
    the last one decides the branch.
    """

    index: int
    input_topic: str
    key_fields: tuple[str, ...]
    stores: tuple[Store, ...]
    changelog_topic: str = ""


@dataclass(frozen=True)
class Topology:
    """A whole topology. ``name`` is the application id (prefix of changelog/repartition topics).

    ``fields`` are the field types of the source's records (its value schema's): key, time and id fields
    must be among them, and rules added at run time are checked against them.
    ``alerts``, when set, is the topic of the alert written with every decision of a (non-default) branch.
    ``id_field`` names the field that identifies a record: what a ``related`` aggregate keeps and names.
    """

    name: str
    source: str
    branches: tuple[Branch, ...]
    default: DefaultBranch
    dlq: str
    source_key: tuple[str, ...]  # the fields the source record's key is made of
    time_field: str  # the event-time field windows use
    alerts: str | None = None
    id_field: str | None = None
    fields: Mapping[str, FieldType] = field(kw_only=True, hash=False)

    def __post_init__(self) -> None:
        check_name(self.name, "topology")
        self._check_source_fields()
        check_topic(self.source)
        check_topic(self.dlq)
        if self.alerts is not None:
            check_topic(self.alerts)
            if self.alerts in (self.source, self.dlq, *(b.to for b in self.branches), self.default.to):
                raise PlanError(f"the alerts topic {self.alerts!r} is also the source, dead-letter or a branch topic")
        names = [b.name for b in self.branches] + [self.default.name]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise PlanError(f"duplicate branch name(s): {', '.join(sorted(dup))}")
        sinks = [b.to for b in self.branches] + [self.default.to]
        for t in (*sinks, self.dlq):
            if t == self.source:
                raise PlanError(f"topic {t!r} is both the source and a sink")
        if self.dlq in sinks:
            raise PlanError(f"the dead-letter topic {self.dlq!r} is also a branch topic")
        ids: dict[str, Rule] = {}
        stores: set[str] = set()
        for b in self.branches:
            for r in b.rules:
                if r.id in ids:
                    raise PlanError(f"duplicate rule id {r.id!r}")
                ids[r.id] = r
                for a in aggregates_of(r.condition):
                    if not a.name:
                        raise PlanError(f"rule {r.id}: unnamed aggregate (use Rule.named())")
                    if a.name in stores:
                        raise PlanError(f"duplicate state store name {a.name!r}")
                    stores.add(a.name)
                    if a.related and self.id_field is None:
                        raise PlanError(
                            f"rule {r.id}: a related aggregate names records by their id: declare the source's id field"
                        )

    def _check_source_fields(self) -> None:
        named = {"key": self.source_key, "time": (self.time_field,), "id": (self.id_field,) if self.id_field else ()}
        for what, names in named.items():
            for name in names:
                if name not in self.fields:
                    known = ", ".join(sorted(self.fields)) or "none"
                    raise PlanError(f"the source's {what} field {name!r} is none of its fields ({known})")
        if self.fields[self.time_field].type != "timestamp":
            raise PlanError(f"the source's time field {self.time_field!r} is not a timestamp")

    # ------------------------------------------------------------ derived

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(r for b in self.branches for r in b.rules)

    @property
    def sinks(self) -> tuple[str, ...]:
        """Branch topics in branch order, then the default branch's (duplicates removed)."""
        return tuple(dict.fromkeys([b.to for b in self.branches] + [self.default.to]))

    def changelog_topic(self, key_fields: tuple[str, ...]) -> str:
        """The changelog of the stage keyed by ``key_fields`` (all its stores, one record per group key)."""
        return f"{self.name}-by-{'-'.join(key_fields)}-changelog"

    def repartition_topic(self, key_fields: tuple[str, ...]) -> str:
        return f"{self.name}-by-{'-'.join(key_fields)}-repartition"

    @property
    def stages(self) -> tuple[Stage, ...]:
        """Stage 0 reads the source; each other grouping of aggregates adds a repartition stage."""
        groups: dict[tuple[str, ...], list[Store]] = {self.source_key: []}
        for rule in self.rules:
            for a in aggregates_of(rule.condition):
                key = self.source_key if set(self.source_key) <= set(a.group_by) else a.group_by
                groups.setdefault(key, []).append(Store(a.name, a, rule, 0, self.changelog_topic(key)))
        stages = []
        for i, (key, stores) in enumerate(groups.items()):
            topic = self.source if i == 0 else self.repartition_topic(key)
            changelog = self.changelog_topic(key) if stores else ""
            stages.append(Stage(i, topic, key, tuple(replace(s, stage=i) for s in stores), changelog))
        return tuple(stages)

    @property
    def stores(self) -> tuple[Store, ...]:
        return tuple(s for st in self.stages for s in st.stores)

    def with_topics(self, mapping: Mapping[str, str]) -> Topology:
        """This topology with topics renamed (``{old: new}``), e.g. to unique names in tests."""

        def m(t: str) -> str:
            return mapping.get(t, t)

        return replace(
            self,
            source=m(self.source),
            dlq=m(self.dlq),
            alerts=None if self.alerts is None else m(self.alerts),
            branches=tuple(replace(b, to=m(b.to)) for b in self.branches),
            default=replace(self.default, to=m(self.default.to)),
        )


_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")


def parse_duration(text: str | int) -> int:
    """Milliseconds of ``"500ms"``, ``"30s"``, ``"5m"``, ``"24h"``, ``"7d"`` (an int is milliseconds)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise PlanError(f"negative duration {text}")
        return text
    m = _DURATION.match(str(text))
    if not m:
        raise PlanError(f"bad duration {text!r} (e.g. 500ms, 30s, 5m, 24h, 7d)")
    return int(m.group(1)) * _UNITS[m.group(2)]


def format_duration(ms: int) -> str:
    """The shortest exact text for ``ms`` (inverse of ``parse_duration``)."""
    for unit in ("d", "h", "m", "s"):
        if ms and ms % _UNITS[unit] == 0:
            return f"{ms // _UNITS[unit]}{unit}"
    return f"{ms}ms"

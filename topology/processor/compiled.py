"""A topology compiled for the processor: stores as slots, stages, and branches whose conditions are closures."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from topology.plan.expr import to_epoch_ms
from topology.plan.model import Aggregate, AllOf, AnyOf, Condition, Predicate, Rule, Topology
from topology.plan.model import Store as PlanStore
from topology.state import AggValue, WindowStore, encode_group_key
from topology.state.bounds import check_number
from topology.state.group import document_bytes

# Per record: store index -> values of its open windows; None = not aggregated (filter/null key).
Aggs = list[tuple[AggValue, ...] | None]
Cond = Callable[[Mapping[str, Any], Aggs | None], bool]  # None: a stateless topology
KeyOf = Callable[[Mapping[str, Any]], bytes | None]

# What bad data raises while evaluating compiled expressions (null in arithmetic,
# division by zero, a missing field); anything else is a bug and propagates.
EVALUATION_ERRORS: tuple[type[Exception], ...] = (TypeError, ArithmeticError, KeyError, ValueError)

# An aggregate comparison (``Aggregate.op``) as a function of (window value, threshold).
COMPARE: Mapping[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True, slots=True)
class StoreSlot:
    """One store as a stage feeds it: its key, value and filter read from a record."""

    index: int
    store: WindowStore
    key: Callable[[Mapping[str, Any]], bytes | None]
    value: Callable[[Mapping[str, Any]], Any]
    filter: Callable[[Mapping[str, Any]], Any] | None
    by_stage_key: bool  # grouped by exactly its stage's key fields (a later stage: the record key)
    name: str  # the aggregate's (a shared store is named by its first aggregate)
    aggregate: Aggregate  # the slot's own: its comparison (op, threshold)
    same_as: int  # index of an earlier slot of the stage feeding the same store (-1: none): add once


@dataclass(frozen=True, slots=True)
class CompiledBranch:
    """A branch with its rules' conditions compiled."""

    name: str
    to: str
    rules: tuple[tuple[Rule, Cond], ...]


@dataclass(frozen=True, slots=True)
class CompiledStage:
    """One stage (the source, or a repartition topic) and what it passes on."""

    index: int
    slots: tuple[StoreSlot, ...]
    next_topic: str | None
    next_key: Callable[[Mapping[str, Any]], bytes | None] | None
    prior: tuple[tuple[int, str], ...]  # (store index, store name) decided in earlier stages
    needs: frozenset[str] | None  # fields this and later stages read (None: unknown, decode the value)
    exact: frozenset[str]  # of those, the ones read as values (group keys, sums, distinct counts)
    later: tuple[StoreSlot, ...]  # the stores of the later stages
    fed: tuple[StoreSlot, ...] = ()  # the slots that add records to their store (``same_as`` -1)
    sharing: tuple[StoreSlot, ...] = ()  # the slots that read an earlier slot's values (``same_as``)


def compile_condition(condition: Condition, index: Mapping[str, int]) -> Cond:
    if isinstance(condition, Aggregate):
        i, op, threshold = index[condition.name], COMPARE[condition.op], condition.threshold

        def agg(r: Mapping[str, Any], a: Aggs | None) -> bool:
            if a is None:
                raise TypeError(f"aggregate {condition.name} read without state")
            vals = a[i]
            if not vals:
                return False
            if len(vals) == 1:
                return bool(op(vals[0], threshold))
            return any(op(v, threshold) for v in vals)

        return agg
    if isinstance(condition, AllOf | AnyOf):
        parts = tuple(compile_condition(c, index) for c in condition.conditions)
        if len(parts) == 2:
            p0, p1 = parts
            if isinstance(condition, AllOf):
                return lambda r, a: p0(r, a) and p1(r, a)
            return lambda r, a: p0(r, a) or p1(r, a)
        if isinstance(condition, AllOf):
            return lambda r, a: all(p(r, a) for p in parts)
        return lambda r, a: any(p(r, a) for p in parts)
    if isinstance(condition, Predicate):
        pfn = condition.fn
        return lambda r, a: bool(pfn(r))
    efn = condition.evaluate
    return lambda r, a: bool(efn(r))


def deciding_value(vals: tuple[AggValue, ...] | None, a: Aggregate) -> AggValue | None:
    """The window value that satisfies the comparison (else the last one)."""
    if not vals:
        return None
    if len(vals) == 1:
        return vals[0]
    op = COMPARE[a.op]
    for v in vals:
        if op(v, a.threshold):
            return v
    return vals[-1]


def fields_read(topology: Topology) -> frozenset[str] | None:
    """Fields the rules' expressions read (None: a Python predicate reads unknown fields)."""
    out: set[str] = set()

    def walk(c: Condition) -> bool:
        if isinstance(c, Predicate):
            return False
        if isinstance(c, AllOf | AnyOf):
            return all(walk(x) for x in c.conditions)
        if isinstance(c, Aggregate):
            return True  # its fields are counted with its stage
        out.update(c.fields)
        return True

    if not all(walk(r.condition) for r in topology.rules):
        return None
    return frozenset(out)


def _const_true(r: Mapping[str, Any]) -> bool:
    return True


def _checked_number(get: Callable[[Mapping[str, Any]], Any]) -> Callable[[Mapping[str, Any]], Any]:
    """``get``, raising ``ValueError`` for an amount too long to keep in bounded state."""

    def checked(r: Mapping[str, Any]) -> Any:
        v = get(r)
        if v is not None:
            check_number(v)
        return v

    return checked


def key_getter(fields: tuple[str, ...]) -> Callable[[Mapping[str, Any]], bytes | None]:
    if len(fields) == 1:
        (f,) = fields

        def one(r: Mapping[str, Any]) -> bytes | None:
            v = r[f]
            return None if v is None else (v if isinstance(v, str) else str(v)).encode()

        return one

    def many(r: Mapping[str, Any]) -> bytes | None:
        vals = [r[f] for f in fields]
        return None if any(v is None for v in vals) else encode_group_key(vals)

    return many


def time_getter(name: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda r: to_epoch_ms(r[name])


def stage_slots(
    stores: Sequence[PlanStore], index: Mapping[str, int], built: Mapping[str, WindowStore], key: tuple[str, ...]
) -> tuple[StoreSlot, ...]:
    """The slots of a stage's ``stores`` (keyed by ``key``); a store shared by several aggregates
    (``kept_stores``) is fed by the first of its slots, the others read that slot's values."""
    slots: list[StoreSlot] = []
    for s in stores:
        store = built[s.name]
        same_as = next((x.index for x in slots if x.store is store), -1)
        slots.append(store_slot(index[s.name], store, key, s.name, s.aggregate, same_as))
    return tuple(slots)


def store_slot(
    i: int, store: WindowStore, stage_key: tuple[str, ...], name: str, aggregate: Aggregate, same_as: int
) -> StoreSlot:
    """Slot ``i`` of ``store`` in a stage keyed by ``stage_key``."""
    a = store.aggregate
    value: Callable[[Mapping[str, Any]], Any] = _const_true
    if a.field is not None:
        value = operator.itemgetter(a.field)
        if a.function == "sum":
            value = _checked_number(value)
    flt = None if a.filter is None else a.filter.evaluate
    return StoreSlot(i, store, key_getter(a.group_by), value, flt, a.group_by == stage_key, name, aggregate, same_as)


def compile_stages(
    topology: Topology, stores: Mapping[str, WindowStore], alert_fields: frozenset[str] | None
) -> dict[str, CompiledStage]:
    """Every stage by its input topic. ``needs`` is what a stage and the later ones read (rules, group keys,
    aggregated fields, filters, the time field, ``alert_fields``, the id field of related aggregates)."""
    stages = topology.stages
    index = {s.name: i for i, s in enumerate(topology.stores)}
    rule_fields = fields_read(topology)
    compiled: dict[str, CompiledStage] = {}
    for stage in stages:
        nxt = stages[stage.index + 1] if stage.index + 1 < len(stages) else None
        slots = stage_slots(stage.stores, index, stores, stage.key_fields)
        prior = tuple((index[s.name], s.name) for st in stages[: stage.index] for s in st.stores)
        later = [a.aggregate for st in stages[stage.index :] for a in st.stores]
        exact = frozenset(f for a in later for f in (*a.group_by, *((a.field,) if a.field else ())))
        exact |= frozenset(f for st in stages[stage.index + 1 :] for f in st.key_fields)
        needs: frozenset[str] | None = None
        if rule_fields is not None:
            needs = rule_fields | exact | {topology.time_field} | (alert_fields or frozenset())
            needs |= frozenset(f for a in later if a.filter is not None for f in a.filter.fields)
            if any(a.related for a in later) and topology.id_field is not None:
                needs |= {topology.id_field}
        later_slots = tuple(
            slot for st in stages[stage.index + 1 :] for slot in stage_slots(st.stores, index, stores, st.key_fields)
        )
        compiled[stage.input_topic] = CompiledStage(
            stage.index, slots, None if nxt is None else nxt.input_topic,
            None if nxt is None else key_getter(nxt.key_fields), prior, needs, exact, later_slots,
            tuple(x for x in slots if x.same_as < 0), tuple(x for x in slots if x.same_as >= 0),
        )  # fmt: skip
    return compiled


def compile_branches(topology: Topology) -> tuple[CompiledBranch, ...]:
    """The branches in order, each rule with its compiled condition."""
    index = {s.name: i for i, s in enumerate(topology.stores)}
    return tuple(
        CompiledBranch(b.name, b.to, tuple((r, compile_condition(r.condition, index)) for r in b.rules))
        for b in topology.branches
    )


def check_sizes(topology: Topology, max_record_bytes: int, key_allowance: int = 1024) -> None:
    """Raise ``ValueError`` if a stage's changelog document could exceed ``max_record_bytes`` (with a group
    key and record overhead of up to ``key_allowance`` bytes)."""
    for stage in topology.stages:
        if not stage.stores:
            continue
        size = document_bytes([(s.name, s.aggregate) for s in stage.stores]) + key_allowance
        if size > max_record_bytes:
            names = ", ".join(s.name for s in stage.stores)
            raise ValueError(
                f"stage {stage.index} ({stage.input_topic}): a changelog record of its stores ({names}) "
                f"may reach {size:,} bytes (group key of up to {key_allowance} bytes included), "
                f"over max_record_bytes={max_record_bytes:,}: lower a threshold or a window's size/advance"
            )


def check_update(topology: Topology, source_topics: tuple[str, ...], changelog_topics: tuple[str, ...]) -> None:
    """Raise ``ValueError`` if a run-time change to ``topology`` needs a restart (other stages, a new changelog)."""
    if tuple(s.input_topic for s in topology.stages) != source_topics:
        raise ValueError("a run-time rule change cannot add or remove a repartition stage")
    missing = {s.changelog_topic for s in topology.stages if s.stores} - set(changelog_topics)
    if missing:
        raise ValueError(
            f"a run-time rule change cannot add a changelog topic ({', '.join(sorted(missing))}): "
            "the first stateful rule of a stage needs a restart"
        )

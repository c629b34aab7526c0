"""The pure processor: one ``RawRecord`` in, the ``OutRecord``s it causes out. No I/O.

Both runtimes (the exactly-once Kafka loop and the in-memory test driver) feed
records to ``TopologyProcessor.process`` and write every record it returns in
one transaction: the branch (or dead-letter) record, changelog records of the
state it changed, and repartition records for the next stage.

Contract:
- a record that cannot be decoded or evaluated becomes ONE record to the DLQ
  with the original key/value bytes, the original headers plus ``error.class``,
  ``error.reason``, ``error.message``, ``source.topic``, ``source.partition``,
  ``source.offset``; its state is left unchanged;
- a routed record is ONE record to its branch topic with the original key and
  value bytes and headers plus ``fraudstream.branch``, ``fraudstream.rules``
  (``id@version`` of every rule of the branch that fired; empty for the default
  branch) and ``fraudstream.detector.version``;
- each state change adds one changelog record (partition = input partition).
Exceptions other than bad input (bugs) propagate.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from topology.expr import to_epoch_ms
from topology.plan import (
    Aggregate,
    AllOf,
    AnyOf,
    Condition,
    Predicate,
    Rule,
    Topology,
    aggregates_of,
)
from topology.records import Headers, OutRecord, RawRecord
from topology.serde import DecodeError
from topology.state import AggValue, WindowStore, encode_group_key

Decode = Callable[[bytes | None], Mapping[str, Any]]
# Per record: store index -> values of its open windows; None = not aggregated (filter/null key).
Aggs = list[tuple[AggValue, ...] | None]
Cond = Callable[[Mapping[str, Any], Aggs], bool]

H_BRANCH = "fraudstream.branch"
H_RULES = "fraudstream.rules"
H_VERSION = "fraudstream.detector.version"
H_EVIDENCE = "fraudstream.evidence"
# Internal headers of repartition records (stripped before the branch output).
H_KEY = "fraudstream.key"
H_AGGS = "fraudstream.aggs"
H_ORIGIN = "fraudstream.origin"
_INTERNAL = frozenset({H_KEY, H_AGGS, H_ORIGIN})

# What bad data raises while evaluating compiled expressions (null in arithmetic,
# division by zero, a missing field); anything else is a bug and propagates.
EVALUATION_ERRORS: tuple[type[Exception], ...] = (TypeError, ArithmeticError, KeyError, ValueError)

_OPS: Mapping[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


class EvaluationError(Exception):
    """A record whose rules cannot be evaluated (dead-lettered)."""


@dataclass(frozen=True, slots=True)
class _StoreSlot:
    index: int
    store: WindowStore
    key: Callable[[Mapping[str, Any]], bytes | None]
    value: Callable[[Mapping[str, Any]], Any]
    filter: Callable[[Mapping[str, Any]], Any] | None


@dataclass(frozen=True, slots=True)
class _Branch:
    name: str
    to: str
    rules: tuple[tuple[Rule, Cond], ...]


@dataclass(frozen=True, slots=True)
class _Stage:
    index: int
    slots: tuple[_StoreSlot, ...]
    next_topic: str | None
    next_key: Callable[[Mapping[str, Any]], bytes | None] | None
    prior: tuple[tuple[int, str], ...]  # (store index, store name) decided in earlier stages


class TopologyProcessor:
    """Runs a ``Topology`` on single records; holds the state stores of the partitions it owns."""

    def __init__(
        self,
        topology: Topology,
        decode: Decode,
        *,
        version: str,
        decode_errors: tuple[type[Exception], ...] = (DecodeError,),
    ) -> None:
        self.version = version
        self._decode = decode
        self._decode_errors = decode_errors
        self._version_header = (H_VERSION, version.encode())
        self._stores: dict[str, WindowStore] = {}
        self.late_records = 0  # records too late for some window (not aggregated there)
        self._install(topology)

    # ------------------------------------------------------------ compile

    def _install(self, topology: Topology) -> None:
        stages = topology.stages
        stores: dict[str, WindowStore] = {}
        for s in topology.stores:
            old = self._stores.get(s.name)
            if old is not None and old.aggregate == s.aggregate and old.changelog_topic == s.changelog_topic:
                stores[s.name] = old  # unchanged aggregate: keep its state
            else:
                stores[s.name] = WindowStore(s.name, s.aggregate, s.changelog_topic)
        order = [s.name for s in topology.stores]
        index = {name: i for i, name in enumerate(order)}
        self.topology = topology
        self._stores = stores
        self._store_names = tuple(order)
        self._by_changelog = {st.changelog_topic: st for st in stores.values()}
        self._stage_stores = {stage.input_topic: tuple(s.name for s in stage.stores) for stage in stages}
        compiled: dict[str, _Stage] = {}
        for stage in stages:
            nxt = stages[stage.index + 1] if stage.index + 1 < len(stages) else None
            slots = tuple(self._slot(index[s.name], stores[s.name]) for s in stage.stores)
            prior = tuple((index[s.name], s.name) for st in stages[: stage.index] for s in st.stores)
            compiled[stage.input_topic] = _Stage(
                stage.index,
                slots,
                None if nxt is None else nxt.input_topic,
                None if nxt is None else _key_getter(nxt.key_fields),
                prior,
            )
        self._stages = compiled
        self._n_stores = len(order)
        self._branches = tuple(
            _Branch(b.name, b.to, tuple((r, _compile(r.condition, index)) for r in b.rules))
            for b in topology.branches
        )
        self._default = topology.default
        self._dlq = topology.dlq
        self._time = _time_getter(topology.time_field)
        self._decisions: dict[tuple[int, tuple[int, ...]], tuple[Headers, tuple[str, ...]]] = {}
        self._default_headers: Headers = (
            (H_BRANCH, topology.default.name.encode()),
            (H_RULES, b""),
            self._version_header,
        )
        self._default_tags = (topology.default.name,)
        self.source_topics: tuple[str, ...] = tuple(st.input_topic for st in stages)
        self.repartition_topics: tuple[str, ...] = self.source_topics[1:]
        self.changelog_topics: tuple[str, ...] = tuple(stores[n].changelog_topic for n in order)
        self.sink_topics: tuple[str, ...] = tuple(
            dict.fromkeys((*topology.sinks, topology.dlq, *self.repartition_topics, *self.changelog_topics))
        )

    def _slot(self, i: int, store: WindowStore) -> _StoreSlot:
        a = store.aggregate
        key = _key_getter(a.group_by)
        value: Callable[[Mapping[str, Any]], Any] = _const_true
        if a.field is not None:
            value = operator.itemgetter(a.field)
        flt = None if a.filter is None else a.filter.evaluate
        return _StoreSlot(i, store, key, value, flt)

    def update(self, topology: Topology) -> None:
        """Switch to ``topology`` (rules added, changed or removed at run time).

        Stores whose aggregate is unchanged keep their state; new ones start empty.
        The stages (repartition topics) must stay the same.
        """
        if tuple(s.input_topic for s in topology.stages) != self.source_topics:
            raise ValueError("a run-time rule change cannot add or remove a repartition stage")
        self._install(topology)

    # ------------------------------------------------------------ process

    def process(self, record: RawRecord) -> list[OutRecord]:
        """The records ``record`` causes (branch or DLQ, changelog, repartition); never raises for bad input."""
        stage = self._stages[record.topic]
        try:
            value = self._decode(record.value)
        except self._decode_errors as exc:
            return [self._dead(record, exc, getattr(exc, "reason", "decode"))]
        out: list[OutRecord] = []
        aggs: Aggs | None = None
        headers = record.headers
        key = record.key
        if stage.index:
            aggs, key, headers = self._unwrap(record)
        elif self._n_stores:
            aggs = [None] * self._n_stores
        if stage.slots:
            assert aggs is not None
            try:
                self._aggregate(stage, record, value, aggs, out)
            except EVALUATION_ERRORS as exc:
                return [self._dead(record, exc, "evaluation")]
        if stage.next_topic is not None:
            assert aggs is not None and stage.next_key is not None
            out.append(self._forward(stage, record, value, aggs))
            return out
        try:
            decided = self._route(value, aggs)
        except _RuleFailed as exc:
            return [self._dead(record, exc.cause, "evaluation", exc.rule)]
        topic, extra, tags = decided
        out.append(OutRecord(topic, key, record.value, headers + extra, None, record.timestamp_ms, tags))
        return out

    def _route(self, value: Mapping[str, Any], aggs: Aggs | None) -> tuple[str, Headers, tuple[str, ...]]:
        for bi, branch in enumerate(self._branches):
            fired: tuple[int, ...] = ()
            for ri, (rule, cond) in enumerate(branch.rules):
                try:
                    hit = cond(value, aggs)  # type: ignore[arg-type]
                except EVALUATION_ERRORS as exc:
                    raise _RuleFailed(rule, exc) from exc
                if hit:
                    fired += (ri,)
            if fired:
                decision = self._decisions.get((bi, fired))
                if decision is None:
                    decision = self._decision(bi, fired)
                headers, tags = decision
                if aggs is not None and any(self._branches[bi].rules[i][0].stateful for i in fired):
                    headers = (*headers, (H_EVIDENCE, self._evidence(bi, fired, aggs)))
                return branch.to, headers, tags
        return self._default.to, self._default_headers, self._default_tags

    def _decision(self, bi: int, fired: tuple[int, ...]) -> tuple[Headers, tuple[str, ...]]:
        branch = self._branches[bi]
        refs = tuple(branch.rules[i][0].ref for i in fired)
        headers: Headers = ((H_BRANCH, branch.name.encode()), (H_RULES, ",".join(refs).encode()), self._version_header)
        decision = (headers, (branch.name, *refs))
        self._decisions[(bi, fired)] = decision
        return decision

    def _evidence(self, bi: int, fired: tuple[int, ...], aggs: Aggs) -> bytes:
        """JSON: for each fired rule, its aggregates' values and thresholds."""
        doc: dict[str, list[dict[str, str | None]]] = {}
        names = self._store_names
        for ri in fired:
            rule = self._branches[bi].rules[ri][0]
            items = []
            for a in aggregates_of(rule.condition):
                vals = aggs[names.index(a.name)]
                best = _best(vals, a)
                items.append(
                    {
                        "aggregate": a.name,
                        "function": a.function,
                        "value": None if best is None else str(best),
                        "op": a.op,
                        "threshold": str(a.threshold),
                    }
                )
            doc[rule.ref] = items
        return json.dumps(doc, separators=(",", ":")).encode()

    def _aggregate(
        self, stage: _Stage, record: RawRecord, value: Mapping[str, Any], aggs: Aggs, out: list[OutRecord]
    ) -> None:
        # Read everything first, so a bad record changes no state.
        todo = []
        for slot in stage.slots:
            if slot.filter is not None and not slot.filter(value):
                continue
            k = slot.key(value)
            v = slot.value(value)
            if k is None or v is None:
                continue
            todo.append((slot, k, v))
        if not todo:
            return
        t = self._time(value)
        if not isinstance(t, int):
            raise TypeError(f"event time {t!r} is not a timestamp")
        partition, ts = record.partition, record.timestamp_ms
        for slot, k, v in todo:
            vals, changes = slot.store.add(partition, k, t, v)
            if not vals:
                self.late_records += 1
            aggs[slot.index] = vals
            topic = slot.store.changelog_topic
            for ck, cv in changes:
                out.append(OutRecord(topic, ck, cv, (), partition, ts, ("changelog",)))

    def _forward(self, stage: _Stage, record: RawRecord, value: Mapping[str, Any], aggs: Aggs) -> OutRecord:
        """The repartition record for the next stage: same value bytes, re-keyed, with the state so far."""
        assert stage.next_topic is not None and stage.next_key is not None
        key = stage.next_key(value)
        carried = {self._store_names[s.index]: _enc_vals(aggs[s.index]) for s in stage.slots}
        headers: list[tuple[str, bytes]] = list(record.headers)
        if stage.index == 0:
            if record.key is not None:
                headers.append((H_KEY, record.key))
            headers.append((H_ORIGIN, f"{record.topic}:{record.partition}:{record.offset}".encode()))
        else:
            headers = [h for h in headers if h[0] != H_AGGS]
            for name, raw in json.loads(_header(record.headers, H_AGGS) or b"{}").items():
                carried.setdefault(name, raw)
        headers.append((H_AGGS, json.dumps(carried, separators=(",", ":")).encode()))
        return OutRecord(
            stage.next_topic, key if key is not None else b"", record.value, tuple(headers), None,
            record.timestamp_ms, ("repartition",),
        )

    def _unwrap(self, record: RawRecord) -> tuple[Aggs, bytes | None, Headers]:
        """Aggregates, original key and original headers carried by a repartition record."""
        aggs: Aggs = [None] * self._n_stores
        carried = json.loads(_header(record.headers, H_AGGS) or b"{}")
        for i, name in enumerate(self._store_names):
            raw = carried.get(name)
            if raw is not None:
                aggs[i] = tuple(Decimal(v) for v in raw)
        key = _header(record.headers, H_KEY)
        headers = tuple(h for h in record.headers if h[0] not in _INTERNAL)
        return aggs, key, headers

    def _dead(
        self,
        record: RawRecord,
        exc: BaseException,
        reason: str,
        rule: Rule | None = None,
    ) -> OutRecord:
        topic, partition, offset = record.topic, str(record.partition), str(record.offset)
        key, headers = record.key, record.headers
        origin = _header(record.headers, H_ORIGIN) if record.topic in self.repartition_topics else None
        if origin is not None:  # from a repartition topic: name the original record
            topic, partition, offset = origin.decode().rsplit(":", 2)
            key = _header(record.headers, H_KEY)
            headers = tuple(h for h in record.headers if h[0] not in _INTERNAL)
        message = str(exc) or type(exc).__name__
        if rule is not None:
            message = f"rule {rule.ref}: {type(exc).__name__}: {message}"
        cls = type(exc).__name__ if isinstance(exc, self._decode_errors) else EvaluationError.__name__
        return OutRecord(
            self._dlq,
            key,
            record.value,
            (
                *headers,
                ("error.class", cls.encode()),
                ("error.reason", reason.encode()),
                ("error.message", message.encode()),
                ("source.topic", topic.encode()),
                ("source.partition", partition.encode()),
                ("source.offset", offset.encode()),
                self._version_header,
            ),
            None,
            record.timestamp_ms,
            ("dlq", reason),
        )

    # ------------------------------------------------------------ state

    @property
    def stores(self) -> Mapping[str, WindowStore]:
        return self._stores

    def changelog_partitions(self, topic: str, partition: int) -> tuple[tuple[str, int], ...]:
        """The changelog topic-partitions to restore before processing ``topic``/``partition``."""
        names = self._stage_stores.get(topic, ())
        return tuple((self._stores[n].changelog_topic, partition) for n in names)

    def assigned(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Input partitions now owned: their stores start empty; then ``restore`` their changelogs."""
        for topic, p in partitions:
            for name in self._stage_stores.get(topic, ()):
                self._stores[name].clear(p)

    def revoked(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Input partitions given up: their state is dropped (it lives on in the changelog)."""
        for topic, p in partitions:
            for name in self._stage_stores.get(topic, ()):
                self._stores[name].drop(p)

    def restore(self, record: RawRecord) -> None:
        """Apply one changelog record (key = group key, value = key state or ``None``)."""
        store = self._by_changelog[record.topic]
        if record.key is not None:
            store.restore(record.partition, record.key, record.value)


class _RuleFailed(Exception):
    def __init__(self, rule: Rule, cause: Exception) -> None:
        super().__init__(str(cause))
        self.rule = rule
        self.cause = cause


def _compile(condition: Condition, index: Mapping[str, int]) -> Cond:
    if isinstance(condition, Aggregate):
        i, op, threshold = index[condition.name], _OPS[condition.op], condition.threshold

        def agg(r: Mapping[str, Any], a: Aggs) -> bool:
            vals = a[i]
            if not vals:
                return False
            return any(op(v, threshold) for v in vals)

        return agg
    if isinstance(condition, AllOf | AnyOf):
        parts = tuple(_compile(c, index) for c in condition.conditions)
        if isinstance(condition, AllOf):
            return lambda r, a: all(p(r, a) for p in parts)
        return lambda r, a: any(p(r, a) for p in parts)
    if isinstance(condition, Predicate):
        pfn = condition.fn
        return lambda r, a: bool(pfn(r))
    efn = condition.evaluate
    return lambda r, a: bool(efn(r))


def _best(vals: tuple[AggValue, ...] | None, a: Aggregate) -> AggValue | None:
    """The window value that satisfies the comparison (else the last one)."""
    if not vals:
        return None
    op = _OPS[a.op]
    for v in vals:
        if op(v, a.threshold):
            return v
    return vals[-1]


def _enc_vals(vals: tuple[AggValue, ...] | None) -> list[str] | None:
    return None if vals is None else [str(v) for v in vals]


def _header(headers: Sequence[tuple[str, bytes]], name: str) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


def _const_true(r: Mapping[str, Any]) -> bool:
    return True


def _key_getter(fields: tuple[str, ...]) -> Callable[[Mapping[str, Any]], bytes | None]:
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


def _time_getter(name: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda r: to_epoch_ms(r[name])

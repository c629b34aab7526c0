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
- when the topology has an ``alerts`` topic and an ``AlertWriter`` is given (topology/alerts.py), a
  record routed to a (non-default) branch also yields ONE record to the alerts topic, with the key
  and value the writer builds from the fired rules and their evidence (the ``fraudstream.evidence``
  header), and headers ``fraudstream.rules`` and ``fraudstream.detector.version``; a record whose
  alert cannot be built is dead-lettered; the evidence of a ``related`` aggregate that holds also
  names the earlier records of its window, so an alert can flag inputs routed before a pattern showed;
- state changes are kept in memory (a write-back cache) and leave as changelog records only
  through ``flush()``: the latest state per (stage, group key) since the last flush, with the
  input partition as partition; the runtime calls it right before each commit and writes what
  it returns in the same transaction. Each such record is bounded (``max_record_bytes``; see
  topology/state/bounds.py);
- transactions: ``committed()`` after the commit of the transaction holding every flush since
  the last ``committed()``/``aborted()``; ``aborted()`` when it aborted (or the runtime rewinds):
  the state is then exactly the state at the last ``committed()`` (or the end of the restore).
  Rebalances: ``assigned``, then per changelog partition ``restore_from`` (the offset to replay
  from) and ``restore`` for each record; ``checkpoint`` after a commit; ``revoked``;
- a record of a stage with a next stage goes on as ONE repartition record, unless no store of a
  later stage would aggregate it (all their filters false, or a null group key or field): then its
  decision cannot depend on their state, and this stage decides it as the last stage would;
Exceptions other than bad input (bugs) propagate.

Batches: with a ``columnar`` decoder, a stateless topology also routes whole batches of source
values at once (``route_batch``: polars decode + vectorised rules, see topology/batch/decode.py and
topology/batch/routing.py); rows that path cannot judge exactly take ``process``. ``process_batch``
gives for each record exactly what ``process`` gives. A ``decode`` with a ``project(topology)``
method (``ProjectionDecoder``) is told every new topology, so rules changed at run time keep the
fast projection.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from topology.alerts import AlertFacts, AlertWriter
from topology.batch.decode import ColumnarDecoder
from topology.batch.routing import BatchRouter, BatchRouting
from topology.deadletter import Failure, Source, dead_letter
from topology.plan.expr import to_epoch_ms
from topology.plan.model import (
    Aggregate,
    AllOf,
    AnyOf,
    Condition,
    Predicate,
    Rule,
    Topology,
    aggregates_of,
)
from topology.records import (
    H_AGGS,
    H_BRANCH,
    H_EVIDENCE,
    H_KEY,
    H_ORIGIN,
    H_RULES,
    H_VERSION,
    Headers,
    Kind,
    OutRecord,
    RawRecord,
)
from topology.serde.decoder import DecodeError, EncodeError
from topology.state import AggValue, InMemoryState, StateBackend, WindowStore, encode_group_key, state_id
from topology.state.bounds import RELATED_IDS, check_number
from topology.state.group import document_bytes

Decode = Callable[[bytes | None], Mapping[str, Any]]
# Per record: store index -> values of its open windows; None = not aggregated (filter/null key).
Aggs = list[tuple[AggValue, ...] | None]
Cond = Callable[[Mapping[str, Any], Aggs], bool]

# H_AGGS of a repartition record is JSON {"a": {store: [deciding value] | [] (late); absent: not
# aggregated}, "f": {fields later stages read, see _pack_fields}, "n": true if the group key is null,
# "r": {store: [earlier transaction ids]} of the related aggregates that hold (the most recent
# RELATED_IDS), "rn": {store: how many earlier transactions its window holds}}.
_INTERNAL = frozenset({H_KEY, H_AGGS, H_ORIGIN})
_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)
_ZERO = timedelta(0)

# What bad data raises while evaluating compiled expressions (null in arithmetic,
# division by zero, a missing field); anything else is a bug and propagates.
EVALUATION_ERRORS: tuple[type[Exception], ...] = (TypeError, ArithmeticError, KeyError, ValueError)
_ALERT_ERRORS: tuple[type[Exception], ...] = (EncodeError, *EVALUATION_ERRORS)
_KEY_ALLOWANCE = 1024  # bytes of a changelog record's group key (and record overhead) assumed in size checks

# An aggregate comparison (``Aggregate.op``) as a function of (window value, threshold).
COMPARE: Mapping[str, Callable[[Any, Any], bool]] = {
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
    by_stage_key: bool  # grouped by exactly its stage's key fields (a later stage: the record key)


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
    needs: frozenset[str] | None  # fields this and later stages read (None: unknown, decode the value)
    exact: frozenset[str]  # of those, the ones read as values (group keys, sums, distinct counts)
    later: tuple[_StoreSlot, ...]  # the stores of the later stages


class TopologyProcessor:
    """Runs a ``Topology`` on single records; holds the state stores of the partitions it owns."""

    def __init__(
        self,
        topology: Topology,
        decode: Decode,
        *,
        version: str,
        decode_errors: tuple[type[Exception], ...] = (DecodeError,),
        alerts: AlertWriter | None = None,
        columnar: ColumnarDecoder | None = None,
        state: StateBackend | None = None,
        max_record_bytes: int = 1_000_000,
    ) -> None:
        self.version = version
        self.max_record_bytes = max_record_bytes  # no changelog record may exceed it (checked per topology)
        self._state: StateBackend = state or InMemoryState()  # where the window stores live
        self._alert_writer = alerts
        self._columnar = columnar
        self._decode = decode
        self._decode_errors = decode_errors
        self._version_header = (H_VERSION, version.encode())
        self._stores: dict[str, WindowStore] = {}
        self._pending: list[OutRecord] = []  # changelog records of stores replaced by update()
        self.late_records = 0  # records too late for some window (not aggregated there)
        self._related: dict[str, list[str]] = {}  # this record's related aggregates that hold: store -> earlier ids
        self._related_total: dict[str, int] = {}  # store -> number of earlier ids in its window
        self._runtime_resolves = False  # the runtime has called committed()/aborted()
        self._unresolved_flushes = 0
        self._check_sizes(topology)
        self._install(topology)

    def _check_sizes(self, topology: Topology) -> None:
        """Raise ``ValueError`` if a stage's changelog document could exceed ``max_record_bytes``."""
        for stage in topology.stages:
            if not stage.stores:
                continue
            size = document_bytes((s.name, s.aggregate) for s in stage.stores) + _KEY_ALLOWANCE
            if size > self.max_record_bytes:
                names = ", ".join(s.name for s in stage.stores)
                raise ValueError(
                    f"stage {stage.index} ({stage.input_topic}): a changelog record of its stores ({names}) "
                    f"may reach {size:,} bytes (group key of up to {_KEY_ALLOWANCE} bytes included), "
                    f"over max_record_bytes={self.max_record_bytes:,}: lower a threshold or a window's size/advance"
                )

    # ------------------------------------------------------------ compile

    def _install(self, topology: Topology) -> None:
        stages = topology.stages
        stores: dict[str, WindowStore] = {}
        for s in topology.stores:
            old = self._stores.get(s.name)
            if (
                old is not None
                and old.changelog_topic == s.changelog_topic
                and old.state_id == state_id(s.name, s.aggregate)
            ):
                # the same state (the threshold or grace may differ): keep it
                stores[s.name] = old if old.aggregate == s.aggregate else old.with_aggregate(s.aggregate)
            else:
                stores[s.name] = self._state.store(s.name, s.aggregate, s.changelog_topic)
        order = [s.name for s in topology.stores]
        index = {name: i for i, name in enumerate(order)}
        self.topology = topology
        self._stores = stores
        self._store_names = tuple(order)
        self._groups = {
            stage.input_topic: self._state.group(stage.changelog_topic, [stores[s.name] for s in stage.stores])
            for stage in stages
            if stage.stores
        }
        self._by_changelog = {g.changelog_topic: g for g in self._groups.values()}
        rule_fields = _fields_read(topology)
        compiled: dict[str, _Stage] = {}
        for stage in stages:
            nxt = stages[stage.index + 1] if stage.index + 1 < len(stages) else None
            slots = tuple(self._slot(index[s.name], stores[s.name], stage.key_fields) for s in stage.stores)
            prior = tuple((index[s.name], s.name) for st in stages[: stage.index] for s in st.stores)
            later = [a.aggregate for st in stages[stage.index :] for a in st.stores]
            exact = frozenset(f for a in later for f in (*a.group_by, *((a.field,) if a.field else ())))
            exact |= frozenset(f for st in stages[stage.index + 1 :] for f in st.key_fields)
            needs: frozenset[str] | None = None
            if rule_fields is not None:
                needs = rule_fields | exact | {topology.time_field}
                if topology.alerts is not None and self._alert_writer is not None:
                    needs |= self._alert_writer.fields
                needs |= frozenset(f for a in later if a.filter is not None for f in a.filter.fields)
                if any(a.related for a in later):
                    needs |= {"transaction_id"}
            later_slots = tuple(
                self._slot(index[s.name], stores[s.name], st.key_fields)
                for st in stages[stage.index + 1 :]
                for s in st.stores
            )
            compiled[stage.input_topic] = _Stage(
                stage.index,
                slots,
                None if nxt is None else nxt.input_topic,
                None if nxt is None else _key_getter(nxt.key_fields),
                prior,
                needs,
                exact,
                later_slots,
            )
        self._stages = compiled
        self._n_stores = len(order)
        self._branches = tuple(
            _Branch(b.name, b.to, tuple((r, _compile(r.condition, index)) for r in b.rules)) for b in topology.branches
        )
        self._default = topology.default
        self._dlq = topology.dlq
        self._alerts = topology.alerts if self._alert_writer is not None else None
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
        self.changelog_topics: tuple[str, ...] = tuple(g.changelog_topic for g in self._groups.values())
        self.sink_topics: tuple[str, ...] = tuple(
            dict.fromkeys(
                (
                    *topology.sinks,
                    *(() if self._alerts is None else (self._alerts,)),
                    topology.dlq,
                    *self.repartition_topics,
                    *self.changelog_topics,
                )
            )
        )
        self._router: BatchRouter | None = None
        if self._columnar is not None and len(stages) == 1 and not self._n_stores:
            self._router = BatchRouter.build(
                topology,
                self._decision,
                (self._default.to, self._default_headers, self._default_tags),
                alerts=self._alerts is not None,
            )
        project = getattr(self._decode, "project", None)
        if project is not None:
            project(topology)

    def _slot(self, i: int, store: WindowStore, stage_key: tuple[str, ...]) -> _StoreSlot:
        a = store.aggregate
        key = _key_getter(a.group_by)
        value: Callable[[Mapping[str, Any]], Any] = _const_true
        if a.field is not None:
            value = operator.itemgetter(a.field)
            if a.function == "sum":
                value = _checked_number(value)
        flt = None if a.filter is None else a.filter.evaluate
        return _StoreSlot(i, store, key, value, flt, a.group_by == stage_key)

    def update(self, topology: Topology, *, version: str | None = None) -> None:
        """Switch to ``topology`` (rules added, changed or removed at run time); ``version``, when
        given, is the detector version its decisions name from now on.

        Stores that keep the same state (same name, function, field, grouping, window kind and
        size, filter) keep it; new ones start empty. Changes not yet flushed are kept for the next
        ``flush``. The stages (repartition topics) must stay the same, and no stage may need a
        changelog topic it did not have (the runtime creates and restores those at start).
        """
        if tuple(s.input_topic for s in topology.stages) != self.source_topics:
            raise ValueError("a run-time rule change cannot add or remove a repartition stage")
        new_changelogs = {s.changelog_topic for s in topology.stages if s.stores}
        missing = new_changelogs - set(self.changelog_topics)
        if missing:
            raise ValueError(
                f"a run-time rule change cannot add a changelog topic ({', '.join(sorted(missing))}): "
                "the first stateful rule of a stage needs a restart"
            )
        self._check_sizes(topology)
        self._pending.extend(self.flush())
        if version is not None:
            self.version = version
            self._version_header = (H_VERSION, version.encode())
        self._install(topology)

    # ------------------------------------------------------------ process

    def route_batch(self, values: Sequence[bytes | None]) -> BatchRouting | None:
        """Decisions for a batch of source-topic values (``None``: call ``process`` for each record).

        A decided value ``i`` becomes ONE record to ``decisions[codes[i]]``'s topic with the original
        key, value, timestamp and headers plus the decision's headers; ``codes[i] == -1``: ``process`` it.
        """
        router, columnar = self._router, self._columnar
        if router is None or columnar is None or not values:
            return None
        codes = columnar.evaluate(values, router.expression)
        return None if codes is None else BatchRouting(codes, router.decisions)

    def process_batch(self, records: Sequence[RawRecord]) -> list[list[OutRecord]]:
        """``[self.process(r) for r in records]``, through ``route_batch`` where it applies."""
        source = self.source_topics[0]
        routing = None
        if all(r.topic == source for r in records):
            routing = self.route_batch([r.value for r in records])
        if routing is None:
            return [self.process(r) for r in records]
        out: list[list[OutRecord]] = []
        decisions = routing.decisions
        for r, code in zip(records, routing.codes, strict=True):
            if code < 0:
                out.append(self.process(r))
            else:
                topic, extra, tags = decisions[code]
                out.append([OutRecord(topic, r.key, r.value, r.headers + extra, None, r.timestamp_ms, labels=tags)])
        return out

    def process(self, record: RawRecord) -> list[OutRecord]:
        """The record ``record`` causes (branch, DLQ or repartition); never raises for bad input.

        State changes stay in the stores until ``flush()``.
        """
        stage = self._stages[record.topic]
        self._related = {}
        self._related_total = {}
        if stage.index:
            return self._process_repartitioned(stage, record)
        try:
            value = self._decode(record.value)
        except self._decode_errors as exc:
            return [self._dead(record, exc, getattr(exc, "reason", "decode"))]
        aggs: Aggs | None = None
        if self._n_stores:
            aggs = [None] * self._n_stores
            if stage.slots:
                try:
                    self._aggregate(stage, record, value, aggs, None)
                except EVALUATION_ERRORS as exc:
                    return [self._dead(record, exc, "evaluation")]
            if stage.next_topic is not None and not _ignored_later(stage, value):
                return [self._forward(stage, record, value, aggs, None)]
        return self._decide(record, value, aggs, record.key, record.headers)

    def _process_repartitioned(self, stage: _Stage, record: RawRecord) -> list[OutRecord]:
        """A record of a later stage: aggregates and fields carried in its headers, original key and headers."""
        carried: dict[str, Any] = {}
        key: bytes | None = None
        headers: list[tuple[str, bytes]] = []
        for h in record.headers:
            name = h[0]
            if name == H_AGGS:
                carried = json.loads(h[1])
            elif name == H_KEY:
                key = h[1]
            elif name not in _INTERNAL:
                headers.append(h)
        aggs: Aggs = [None] * self._n_stores
        self._related = dict(carried.get("r") or {})
        self._related_total = dict(carried.get("rn") or {})
        prior = carried.get("a") or {}
        for i, name in stage.prior:
            raw = prior.get(name)
            if raw is not None:
                aggs[i] = tuple(Decimal(v) for v in raw)
        value: Mapping[str, Any] | None = _unpack_fields(carried.get("f"), stage.needs)
        if value is None:
            try:
                value = self._decode(record.value)
            except self._decode_errors as exc:
                return [self._dead(record, exc, getattr(exc, "reason", "decode"))]
        try:
            self._aggregate(stage, record, value, aggs, None if carried.get("n") else record.key)
        except EVALUATION_ERRORS as exc:
            return [self._dead(record, exc, "evaluation")]
        if stage.next_topic is not None and not _ignored_later(stage, value):
            return [self._forward(stage, record, value, aggs, prior)]
        return self._decide(record, value, aggs, key, tuple(headers))

    def _decide(
        self, record: RawRecord, value: Mapping[str, Any], aggs: Aggs | None, key: bytes | None, headers: Headers
    ) -> list[OutRecord]:
        try:
            topic, extra, tags, fired = self._route(value, aggs)
        except _RuleFailed as exc:
            return [self._dead(record, exc.cause, "evaluation", exc.rule)]
        out = OutRecord(topic, key, record.value, headers + extra, None, record.timestamp_ms, labels=tags)
        if fired is None or self._alerts is None:
            return [out]
        try:
            alert = self._alert(record, value, aggs, *fired)
        except _ALERT_ERRORS as exc:
            return [self._dead(record, exc, "alert")]
        return [out, alert]

    def _alert(
        self, record: RawRecord, value: Mapping[str, Any], aggs: Aggs | None, bi: int, fired: tuple[int, ...]
    ) -> OutRecord:
        """The alerts record of a decision of branch ``bi`` by its rules ``fired``."""
        assert self._alerts is not None and self._alert_writer is not None
        rules = tuple(self._branches[bi].rules[i][0] for i in fired)
        evidence = self._evidence_doc(bi, fired, aggs) if aggs is not None else {}
        key, doc = self._alert_writer.write(AlertFacts(value, rules, evidence, self.version))
        headers: Headers = (self._decisions[(bi, fired)][0][1], self._version_header)
        return OutRecord(self._alerts, key, doc, headers, None, record.timestamp_ms, kind=Kind.ALERT)

    def _route(
        self, value: Mapping[str, Any], aggs: Aggs | None
    ) -> tuple[str, Headers, tuple[str, ...], tuple[int, tuple[int, ...]] | None]:
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
                    headers = (*headers, (H_EVIDENCE, _DUMPS(self._evidence_doc(bi, fired, aggs)).encode()))
                return branch.to, headers, tags, (bi, fired)
        return self._default.to, self._default_headers, self._default_tags, None

    def _decision(self, bi: int, fired: tuple[int, ...]) -> tuple[Headers, tuple[str, ...]]:
        branch = self._branches[bi]
        refs = tuple(branch.rules[i][0].ref for i in fired)
        headers: Headers = ((H_BRANCH, branch.name.encode()), (H_RULES, ",".join(refs).encode()), self._version_header)
        decision = (headers, (branch.name, *refs))
        self._decisions[(bi, fired)] = decision
        return decision

    def _evidence_doc(self, bi: int, fired: tuple[int, ...], aggs: Aggs) -> dict[str, list[dict[str, Any]]]:
        """For each fired rule (``id@version``), its aggregates' values and thresholds."""
        doc: dict[str, list[dict[str, Any]]] = {}
        names = self._store_names
        for ri in fired:
            rule = self._branches[bi].rules[ri][0]
            items: list[dict[str, Any]] = []
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
                if a.related:
                    items[-1]["transactions"] = self._related.get(a.name, [])
                    items[-1]["transactions_total"] = self._related_total.get(a.name, 0)
            doc[rule.ref] = items
        return doc

    def _aggregate(
        self, stage: _Stage, record: RawRecord, value: Mapping[str, Any], aggs: Aggs, stage_key: bytes | None
    ) -> None:
        """Add the record to the stage's stores (``stage_key``: the record key, when it is the group key)."""
        # Read everything first, so a record that cannot be evaluated changes no state.
        todo = []
        for slot in stage.slots:
            if slot.filter is not None and not slot.filter(value):
                continue
            k = stage_key if slot.by_stage_key and stage_key is not None else slot.key(value)
            v = slot.value(value)
            if k is None or v is None:
                continue
            todo.append((slot, k, v))
        if not todo:
            return
        t = self._time(value)
        if not isinstance(t, int):
            raise TypeError(f"event time {t!r} is not a timestamp")
        partition = record.partition
        for slot, k, v in todo:
            store = slot.store
            if store.related:
                vals = self._add_related(store, partition, k, t, v, value)
            else:
                vals = store.add(partition, k, t, v)
            if not vals:
                self.late_records += 1
            aggs[slot.index] = vals

    def _add_related(
        self, store: WindowStore, partition: int, k: bytes, t: int, v: Any, value: Mapping[str, Any]
    ) -> tuple[AggValue, ...]:
        """``store.add`` keeping the transaction id; when the aggregate holds, note the window's earlier ids."""
        tid = value["transaction_id"]
        ident = "" if tid is None else str(tid)
        vals = store.add(partition, k, t, v, ident)
        a = store.aggregate
        if vals and COMPARE[a.op](vals[0], a.threshold):
            ids = store.related_ids(partition, k, t)
            if ident in ids:
                ids.remove(ident)  # the record itself (the alert's own transaction)
            self._related[store.name] = ids[-RELATED_IDS:]
            self._related_total[store.name] = len(ids)
        return vals

    def _forward(
        self, stage: _Stage, record: RawRecord, value: Mapping[str, Any], aggs: Aggs, prior: Mapping[str, Any] | None
    ) -> OutRecord:
        """The repartition record for the next stage: the same value bytes, re-keyed, with the state
        so far (each aggregate's deciding value) and the fields later stages read."""
        assert stage.next_topic is not None and stage.next_key is not None
        key = stage.next_key(value)
        names = self._store_names
        done: dict[str, Any] = dict(prior) if prior else {}
        for slot in stage.slots:
            vals = aggs[slot.index]
            if vals is not None:  # not aggregated (filtered out): left out
                best = _best(vals, slot.store.aggregate)
                done[names[slot.index]] = [] if best is None else [str(best)]
        doc: dict[str, Any] = {"a": done}
        if self._related:
            doc["r"] = self._related
            doc["rn"] = self._related_total
        nxt = self._stages[stage.next_topic]
        if nxt.needs is not None:
            fields = _pack_fields(value, nxt.needs, nxt.exact)
            if fields is not None:
                doc["f"] = fields
        if key is None:
            doc["n"] = True
        if stage.index == 0:
            headers = [
                *record.headers,
                *(() if record.key is None else ((H_KEY, record.key),)),
                (H_ORIGIN, f"{record.topic}:{record.partition}:{record.offset}".encode()),
                (H_AGGS, _DUMPS(doc).encode()),
            ]
        else:
            headers = [h for h in record.headers if h[0] != H_AGGS]
            headers.append((H_AGGS, _DUMPS(doc).encode()))
        return OutRecord(
            stage.next_topic, b"" if key is None else key, record.value, tuple(headers), None,
            record.timestamp_ms, kind=Kind.REPARTITION,
        )  # fmt: skip

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
        return dead_letter(
            self._dlq, key, record.value, headers, Source(topic, int(partition), int(offset)),
            Failure(cls, reason, message), extra=(self._version_header,), timestamp_ms=record.timestamp_ms,
        )  # fmt: skip

    # ------------------------------------------------------------ state

    @property
    def dlq_topic(self) -> str:
        """Where records that cannot be decoded or evaluated go."""
        return self._dlq

    @property
    def stores(self) -> Mapping[str, WindowStore]:
        return self._stores

    def flush(self) -> list[OutRecord]:
        """Changelog records of every state change since the last flush: the latest state per
        (changelog partition, group key), ``None`` value when a key is gone. The runtime calls it
        right before it sends the offsets and commits, and produces these in the same transaction."""
        out, self._pending = self._pending, []
        for group in self._groups.values():
            topic = group.changelog_topic
            for partition, key, value in group.flush():
                out.append(OutRecord(topic, key, value, (), partition, None, kind=Kind.CHANGELOG))
        if not self._runtime_resolves:
            # A runtime that never tells outcomes (it rebuilds state from the changelogs after an
            # abort): from its second flush on, each flush also commits the state so far, so the undo
            # copies do not pile up.
            self._unresolved_flushes += 1
            if self._unresolved_flushes >= 2:
                for group in self._groups.values():
                    group.committed(confirmed=False)
        return out

    def committed(self) -> None:
        """The transaction holding every flush since the last ``committed``/``aborted`` committed:
        the state is permanent (undo copies dropped; an embedded store writes its batch now)."""
        self._runtime_resolves = True
        for group in self._groups.values():
            group.committed()

    def aborted(self) -> None:
        """That transaction aborted (or its outcome is unknown and the runtime rewinds): the state
        becomes exactly the state at the last ``committed`` (or at the end of assignment and
        restore). Changelog records of stores replaced by ``update`` are dropped too: they hold
        state of the aborted transaction, which the rewound records rebuild."""
        self._runtime_resolves = True
        self._pending = []
        for group in self._groups.values():
            group.aborted()

    def restore_from(self, changelog: tuple[str, int]) -> int:
        """The first offset of changelog partition ``changelog`` to replay after ``assigned``: 0 in
        memory; an embedded store with a valid checkpoint keeps its local state and returns the
        checkpoint's offset (else it wipes the partition's local state and returns 0)."""
        group = self._by_changelog.get(changelog[0])
        return 0 if group is None else group.restore_from(changelog[1])

    def checkpoint(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Committed state now covers these changelog partitions up to (excluding) these offsets
        (call it after ``committed``): an embedded store makes its state durable and records them."""
        for (topic, partition), offset in offsets.items():
            group = self._by_changelog.get(topic)
            if group is not None:
                group.checkpoint(partition, offset)

    def changelog_partitions(self, topic: str, partition: int) -> tuple[tuple[str, int], ...]:
        """The changelog topic-partitions to restore before processing ``topic``/``partition``."""
        group = self._groups.get(topic)
        return () if group is None else ((group.changelog_topic, partition),)

    def assigned(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Input partitions now owned: their stores start empty; then ``restore`` their changelogs."""
        for topic, p in partitions:
            group = self._groups.get(topic)
            if group is not None:
                group.clear(p)

    def revoked(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Input partitions given up: their state (and unflushed changes) are dropped; the
        changelog holds everything committed."""
        for topic, p in partitions:
            group = self._groups.get(topic)
            if group is not None:
                group.drop(p)
        if self._pending:
            gone = {(self._groups[t].changelog_topic, p) for t, p in partitions if t in self._groups}
            self._pending = [o for o in self._pending if (o.topic, o.partition) not in gone]

    def restore(self, record: RawRecord) -> None:
        """Apply one changelog record (key = group key, value = its state in every store of the stage, or ``None``)."""
        group = self._by_changelog.get(record.topic)
        if group is not None and record.key is not None:
            group.restore(record.partition, record.key, record.value)


class _RuleFailed(Exception):
    def __init__(self, rule: Rule, cause: Exception) -> None:
        super().__init__(str(cause))
        self.rule = rule
        self.cause = cause


def _compile(condition: Condition, index: Mapping[str, int]) -> Cond:
    if isinstance(condition, Aggregate):
        i, op, threshold = index[condition.name], COMPARE[condition.op], condition.threshold

        def agg(r: Mapping[str, Any], a: Aggs) -> bool:
            vals = a[i]
            if not vals:
                return False
            if len(vals) == 1:
                return bool(op(vals[0], threshold))
            return any(op(v, threshold) for v in vals)

        return agg
    if isinstance(condition, AllOf | AnyOf):
        parts = tuple(_compile(c, index) for c in condition.conditions)
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


def _ignored_later(stage: _Stage, value: Mapping[str, Any]) -> bool:
    """Whether no store of a later stage would aggregate this record (every filter false, or a null
    group key or field): then those aggregates are "not aggregated" for it whatever their state, so
    this stage decides it exactly as the last stage would, without the repartition hop. A filter
    that cannot be evaluated sends the record on as before (the later stage dead-letters it)."""
    try:
        for slot in stage.later:
            if slot.filter is not None and not slot.filter(value):
                continue
            if slot.key(value) is not None and slot.value(value) is not None:
                return False
    except EVALUATION_ERRORS:
        return False
    return True


def _best(vals: tuple[AggValue, ...] | None, a: Aggregate) -> AggValue | None:
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


def _fields_read(topology: Topology) -> frozenset[str] | None:
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


def _pack_fields(value: Mapping[str, Any], names: frozenset[str], exact: frozenset[str]) -> dict[str, Any] | None:
    """The fields ``names`` for JSON, each key prefixed with its type (s text, i integer, f float,
    b boolean, n null, d decimal, t aware UTC / u naive datetime in microseconds); None if a value
    has another type (the next stage decodes the value instead). A timestamp that is not in
    ``exact`` is only read as time (expressions, windows): it travels as epoch milliseconds."""
    doc: dict[str, Any] = {}
    for name in names:
        v = value[name]
        if isinstance(v, str):
            doc["s" + name] = v
        elif isinstance(v, Decimal):
            doc["d" + name] = str(v)
        elif isinstance(v, datetime):
            if name not in exact:
                doc["i" + name] = to_epoch_ms(v)
            elif v.tzinfo is None:
                doc["u" + name] = (v - _NAIVE_EPOCH) // _US
            elif v.utcoffset() == _ZERO:
                doc["t" + name] = (v - _EPOCH) // _US
            else:
                return None
        elif isinstance(v, bool):
            doc["b" + name] = v
        elif isinstance(v, int):
            doc["i" + name] = v
        elif v is None:
            doc["n" + name] = None
        elif isinstance(v, float):
            doc["f" + name] = v
        else:
            return None
    return doc


def _unpack_fields(doc: Mapping[str, Any] | None, needs: frozenset[str] | None) -> dict[str, Any] | None:
    """The fields ``_pack_fields`` packed, if they include ``needs``; else None (decode the value)."""
    if doc is None or needs is None:
        return None
    out: dict[str, Any] = {}
    for k, v in doc.items():
        t = k[0]
        if t == "d":
            out[k[1:]] = Decimal(v)
        elif t == "t":
            out[k[1:]] = _EPOCH + v * _US
        elif t == "u":
            out[k[1:]] = _NAIVE_EPOCH + v * _US
        else:
            out[k[1:]] = v
    return out if needs <= out.keys() else None


def _header(headers: Sequence[tuple[str, bytes]], name: str) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


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

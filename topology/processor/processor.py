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

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from topology.alerts import AlertFacts, AlertWriter
from topology.batch.decode import ColumnarDecoder
from topology.batch.routing import BatchRouter, BatchRouting
from topology.plan.model import Topology
from topology.processor.compiled import (
    COMPARE,
    EVALUATION_ERRORS,
    Aggs,
    CompiledStage,
    StoreSlot,
    check_sizes,
    check_update,
    compile_branches,
    compile_stages,
    time_getter,
)
from topology.processor.decisions import Decider, Evidence, Fired, Related, RuleFailed
from topology.processor.lookahead import Lookahead
from topology.processor.rejects import DeadLetters
from topology.processor.stages import carried, forward, ignored_later, prior_values, unpack_fields
from topology.processor.stores import StageStores, StateHooks, kept_stores
from topology.processor.timeguard import EventTimeGuard, EventTimeSkew
from topology.records import H_VERSION, Headers, Kind, OutRecord, RawRecord
from topology.serde.decoder import DecodeError, EncodeError
from topology.state import AggValue, InMemoryState, StateBackend, WindowStore
from topology.state.bounds import RELATED_IDS

Decode = Callable[[bytes | None], Mapping[str, Any]]
_ALERT_ERRORS: tuple[type[Exception], ...] = (EncodeError, *EVALUATION_ERRORS)


class TopologyProcessor(StateHooks):
    """Runs a ``Topology`` on single records; holds the state stores of the partitions it owns (the state
    hooks: ``StateHooks``)."""

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
        time_guard: EventTimeGuard | None = None,
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
        self._groups = StageStores()
        self.late_records = 0  # records too late for some window (not aggregated there)
        self.late_by_store: dict[str, int] = {}  # the same, per store
        self._guard = time_guard  # dead-letters source records dated too far ahead (stateful topologies)
        self._related: dict[str, list[str]] = {}  # this record's related aggregates that hold: store -> earlier ids
        self._related_total: dict[str, int] = {}  # store -> number of earlier ids in its window
        check_sizes(topology, max_record_bytes)
        self._install(topology)

    # ------------------------------------------------------------ compile

    def _install(self, topology: Topology) -> None:
        stores = kept_stores(self._stores, self._state, topology)
        self.topology = topology
        self._stores = stores
        self._store_names = tuple(s.name for s in topology.stores)
        self._n_stores = len(self._store_names)
        stages = topology.stages
        self._groups.install(self._state, {
            st.input_topic: (st.changelog_topic, list(dict.fromkeys([stores[s.name] for s in st.stores])))
            for st in stages if st.stores
        })  # fmt: skip
        alerting = topology.alerts is not None and self._alert_writer is not None
        self._alerts = topology.alerts if self._alert_writer is not None else None
        self._stages: dict[str, CompiledStage] = compile_stages(
            topology, stores, self._alert_writer.fields if alerting and self._alert_writer else None
        )
        self._decider = Decider(compile_branches(topology), topology.default, self._store_names, self._version_header)
        self._dlq = topology.dlq
        self._time = time_getter(topology.time_field)
        self._id_field = topology.id_field or ""  # read by related aggregates only (the plan requires it then)
        self.source_topics: tuple[str, ...] = tuple(st.input_topic for st in stages)
        self.repartition_topics: tuple[str, ...] = self.source_topics[1:]
        # A later stage's stream time is only as good as the order its input is written in.
        self.ordered_topics: tuple[str, ...] = self.source_topics[:1] if self.repartition_topics else ()
        self._dead = DeadLetters(self._dlq, self.repartition_topics, self._decode_errors, self._version_header).of
        self._ahead = Lookahead(self._decode, self._decode_errors, self._time)
        self.changelog_topics: tuple[str, ...] = self._groups.changelog_topics
        self.sink_topics: tuple[str, ...] = tuple(dict.fromkeys((
            *topology.sinks, *(() if self._alerts is None else (self._alerts,)), topology.dlq,
            *self.repartition_topics, *self.changelog_topics,
        )))  # fmt: skip
        self._router: BatchRouter | None = None
        if self._columnar is not None and len(stages) == 1 and not self._n_stores:
            d = self._decider
            default = (d.default_to, d.default_headers, d.default_labels)
            self._router = BatchRouter.build(topology, d.decision, default, alerts=self._alerts is not None)
        project = getattr(self._decode, "project", None)
        if project is not None:
            project(topology)

    def update(self, topology: Topology, *, version: str | None = None) -> None:
        """Switch to ``topology`` (rules added, changed or removed at run time); ``version``, when
        given, is the detector version its decisions name from now on.

        Stores that keep the same state (same name, function, field, grouping, window kind and
        size, filter) keep it; new ones start empty. Changes not yet flushed are kept for the next
        ``flush``. The stages (repartition topics) must stay the same, and no stage may need a
        changelog topic it did not have (the runtime creates and restores those at start).
        """
        check_update(topology, self.source_topics, self.changelog_topics)
        check_sizes(topology, self.max_record_bytes)
        self._groups.pending.extend(self.flush())
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

    def event_time(self, value: bytes | None) -> int | None:
        """The event time of a source value, for the runtime's event-time order (decoded once: ``process``
        takes the value decoded here)."""
        return self._ahead.event_time(value)

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
            value = self._ahead.decode(record.value)
        except self._decode_errors as exc:
            return [self._dead(record, exc, getattr(exc, "reason", "decode"))]
        aggs: Aggs | None = None
        if self._n_stores:
            if self._guard is not None:
                try:
                    self._guard.check_record(self._time(value), stage.slots, record.partition)
                except EventTimeSkew as exc:
                    return [self._dead(record, exc, exc.reason)]
            aggs = [None] * self._n_stores
            if stage.slots:
                try:
                    self._aggregate(stage, record, value, aggs, None)
                except EVALUATION_ERRORS as exc:
                    return [self._dead(record, exc, "evaluation")]
            if stage.next_topic is not None and not ignored_later(stage, value):
                return [self._forward(stage, record, value, aggs, None)]
        return self._decide(record, value, aggs, record.key, record.headers)

    def _process_repartitioned(self, stage: CompiledStage, record: RawRecord) -> list[OutRecord]:
        """A record of a later stage: aggregates and fields carried in its headers, original key and headers."""
        doc, key, headers = carried(record)
        aggs: Aggs = [None] * self._n_stores
        self._related = dict(doc.get("r") or {})
        self._related_total = dict(doc.get("rn") or {})
        prior = prior_values(doc, stage, aggs)
        value: Mapping[str, Any] | None = unpack_fields(doc.get("f"), stage.needs)
        if value is None:
            try:
                value = self._decode(record.value)
            except self._decode_errors as exc:
                return [self._dead(record, exc, getattr(exc, "reason", "decode"))]
        try:
            self._aggregate(stage, record, value, aggs, None if doc.get("n") else record.key)
        except EVALUATION_ERRORS as exc:
            return [self._dead(record, exc, "evaluation")]
        if stage.next_topic is not None and not ignored_later(stage, value):
            return [self._forward(stage, record, value, aggs, prior)]
        return self._decide(record, value, aggs, key, headers)

    def _decide(
        self, record: RawRecord, value: Mapping[str, Any], aggs: Aggs | None, key: bytes | None, headers: Headers
    ) -> list[OutRecord]:
        try:
            topic, extra, tags, fired, evidence = self._decider.route(value, aggs, self._related_now())
        except RuleFailed as exc:
            return [self._dead(record, exc.cause, "evaluation", exc.rule)]
        out = OutRecord(topic, key, record.value, headers + extra, None, record.timestamp_ms, labels=tags)
        if fired is None or self._alerts is None:
            return [out]
        try:
            alert = self._alert(record, value, aggs, fired, evidence)
        except _ALERT_ERRORS as err:  # not ``exc``: compiled, a name keeps the type it is first given
            return [self._dead(record, err, "alert")]
        return [out, alert]

    def _alert(
        self, record: RawRecord, value: Mapping[str, Any], aggs: Aggs | None, what: Fired, evidence: Evidence | None
    ) -> OutRecord:
        """The alerts record of a decision of branch ``bi`` by its rules ``fired`` (``what``); ``evidence``: as
        the decision's headers carry it (None: no stateful rule fired)."""
        assert self._alerts is not None and self._alert_writer is not None
        d = self._decider
        bi, fired = what
        if evidence is None:
            evidence = d.evidence(bi, fired, aggs, self._related_now()) if aggs is not None else {}
        key, doc = self._alert_writer.write(AlertFacts(value, d.rules((bi, fired)), evidence, self.version))
        headers: Headers = (d.decision(bi, fired)[0][1], self._version_header)
        return OutRecord(self._alerts, key, doc, headers, None, record.timestamp_ms, kind=Kind.ALERT)

    def _related_now(self) -> Related:
        return self._related, self._related_total

    def _aggregate(
        self, stage: CompiledStage, record: RawRecord, value: Mapping[str, Any], aggs: Aggs, stage_key: bytes | None
    ) -> None:
        """Add the record to the stage's stores (``stage_key``: the record key, when it is the group key)."""
        # Read everything first, so a record that cannot be evaluated changes no state.
        todo = []
        for slot in stage.fed:
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
                tid = value[self._id_field]
                vals = store.add(partition, k, t, v, "" if tid is None else str(tid))
            else:
                vals = store.add(partition, k, t, v)
            aggs[slot.index] = vals
            self._added(slot, partition, k, t, value, vals)
        for slot in stage.sharing:  # a store shared with an earlier slot: the record is in it already
            shared = aggs[slot.same_as]
            if shared is not None:
                aggs[slot.index] = shared
                k = next(key for fed, key, _ in todo if fed.index == slot.same_as)
                self._added(slot, partition, k, t, value, shared)

    def _added(
        self, slot: StoreSlot, partition: int, k: bytes, t: int, value: Mapping[str, Any], vals: tuple[AggValue, ...]
    ) -> None:
        """Count a late record, or note the related ids of an aggregate that holds."""
        if not vals:
            self.late_records += 1
            self.late_by_store[slot.name] = self.late_by_store.get(slot.name, 0) + 1
        elif slot.store.related and COMPARE[slot.aggregate.op](vals[0], slot.aggregate.threshold):
            self._note_related(slot, partition, k, t, value)

    def _note_related(self, slot: StoreSlot, partition: int, k: bytes, t: int, value: Mapping[str, Any]) -> None:
        """The aggregate of ``slot`` holds for this record: note its window's earlier transaction ids."""
        tid = value[self._id_field]
        ident = "" if tid is None else str(tid)  # the record itself (the alert's own transaction) is left out
        ids, total = slot.store.earlier_ids(partition, k, t, ident, RELATED_IDS)
        self._related[slot.name], self._related_total[slot.name] = ids, total

    def _forward(
        self, stage: CompiledStage, record: RawRecord, value: Mapping[str, Any], aggs: Aggs,
        prior: Mapping[str, Any] | None,
    ) -> OutRecord:  # fmt: skip
        assert stage.next_topic is not None
        nxt = self._stages[stage.next_topic]
        return forward(stage, nxt, record, value, aggs, prior, self._store_names, (self._related, self._related_total))

    # ------------------------------------------------------------ state

    @property
    def dlq_topic(self) -> str:
        """Where records that cannot be decoded or evaluated go."""
        return self._dlq

    @property
    def stores(self) -> Mapping[str, WindowStore]:
        return self._stores

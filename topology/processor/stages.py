"""Records between stages: the repartition record a stage hands the next one, and what it carries.

A repartition record keeps the original value bytes and headers, is keyed by the next stage's key,
and adds internal headers (stripped before the branch output): ``H_KEY`` the original key,
``H_ORIGIN`` the original coordinates, and ``H_AGGS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from math import isfinite
from typing import Any

from topology.plan.expr import to_epoch_ms
from topology.processor.compiled import EVALUATION_ERRORS, Aggs, CompiledStage, deciding_value
from topology.records import H_AGGS, H_KEY, H_ORIGIN, Headers, Kind, OutRecord, RawRecord
from topology.serde.documents import dumps, loads

# H_AGGS of a repartition record is JSON {"a": {store: [deciding value] | [] (late); absent: not
# aggregated}, "f": {fields later stages read, see pack_fields}, "n": true if the group key is null,
# "r": {store: [earlier transaction ids]} of the related aggregates that hold (the most recent
# RELATED_IDS), "rn": {store: how many earlier transactions its window holds}}.
INTERNAL = frozenset({H_KEY, H_AGGS, H_ORIGIN})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)
_ZERO = timedelta(0)


def forward(
    stage: CompiledStage, nxt: CompiledStage, record: RawRecord, value: Mapping[str, Any], aggs: Aggs,
    prior: Mapping[str, Any] | None, store_names: tuple[str, ...],
    related: tuple[dict[str, list[str]], dict[str, int]],
) -> OutRecord:  # fmt: skip
    """The repartition record for the next stage ``nxt``: the same value bytes, re-keyed, with the state
    so far (each aggregate's deciding value), the related ids so far, and the fields later stages read."""
    assert stage.next_topic is not None and stage.next_key is not None
    key = stage.next_key(value)
    done: dict[str, Any] = dict(prior) if prior else {}
    for slot in stage.slots:
        vals = aggs[slot.index]
        if vals is not None:  # not aggregated (filtered out): left out
            best = deciding_value(vals, slot.store.aggregate)
            done[store_names[slot.index]] = [] if best is None else [str(best)]
    doc: dict[str, Any] = {"a": done}
    if related[0]:
        doc["r"], doc["rn"] = related
    if nxt.needs is not None:
        fields = pack_fields(value, nxt.needs, nxt.exact)
        if fields is not None:
            doc["f"] = fields
    if key is None:
        doc["n"] = True
    if stage.index == 0:
        headers = [
            *record.headers,
            *(() if record.key is None else ((H_KEY, record.key),)),
            (H_ORIGIN, f"{record.topic}:{record.partition}:{record.offset}".encode()),
            (H_AGGS, dumps(doc)),
        ]
    else:
        headers = [h for h in record.headers if h[0] != H_AGGS]
        headers.append((H_AGGS, dumps(doc)))
    return OutRecord(
        stage.next_topic, b"" if key is None else key, record.value, tuple(headers), None,
        record.timestamp_ms, kind=Kind.REPARTITION,
    )  # fmt: skip


def carried(record: RawRecord) -> tuple[dict[str, Any], bytes | None, Headers]:
    """What a repartition record carries (the ``H_AGGS`` document), its original key, its other headers."""
    doc: dict[str, Any] = {}
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = []
    for h in record.headers:
        name = h[0]
        if name == H_AGGS:
            doc = loads(h[1])
        elif name == H_KEY:
            key = h[1]
        elif name not in INTERNAL:
            headers.append(h)
    return doc, key, tuple(headers)


def prior_values(doc: Mapping[str, Any], stage: CompiledStage, aggs: Aggs) -> Mapping[str, Any]:
    """Fill ``aggs`` with the deciding values of the earlier stages' stores; returns them as carried."""
    prior = doc.get("a") or {}
    for i, name in stage.prior:
        raw = prior.get(name)
        if raw is not None:
            aggs[i] = tuple(Decimal(v) for v in raw)
    return prior


def ignored_later(stage: CompiledStage, value: Mapping[str, Any]) -> bool:
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


def pack_fields(value: Mapping[str, Any], names: frozenset[str], exact: frozenset[str]) -> dict[str, Any] | None:
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
            if not isfinite(v):  # JSON has no NaN or infinity (topology.serde.documents)
                return None
            doc["f" + name] = v
        else:
            return None
    return doc


def unpack_fields(doc: Mapping[str, Any] | None, needs: frozenset[str] | None) -> dict[str, Any] | None:
    """The fields ``pack_fields`` packed, if they include ``needs``; else None (decode the value)."""
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

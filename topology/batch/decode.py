"""Batch Avro decoding: a batch of Confluent wire-format values decoded by polars, one expression evaluated.

``ColumnarDecoder.evaluate(values, compile)`` concatenates the values, untouched, into the data
block of an in-memory Avro Object Container File whose schema is the writer schema with a leading
``fixed(5)`` field ``__wire`` (each value's wire header) and a trailing ``fixed(16)`` field ``__end``
(a marker written after each value); ``polars.read_avro`` decodes the block in Rust, and the caller's
expression (``compile(frame schema)``, e.g. the branch decision of ``topology.batch.routing``) is
evaluated on the rows in the same pass as the checks. Row ``i`` is value ``i``; ``-1`` marks the
values the per-record decoder must judge.

Validation (the per-record decoders stay the reference; this path must never accept what they reject):

- every column is read, so polars validates every string (UTF-8), union index and length;
- **alignment**: each value is followed in the block by a 16-byte marker, read as one more
  ``fixed(16)`` field ``__end``; polars reads records one after the other, so a value with trailing
  bytes, a truncated one or one read across a boundary moves some ``__end`` off its marker. The
  marker is random per decoder and border-free (no proper prefix equals a suffix), so a misread
  ``__end`` that overlaps a marker can never equal it; one that lies inside the data equals it only
  if a value contains this process's 16 random bytes;
- rows that decoded in line but need the per-record decoder's judgement get ``-1``:
  another wire header (magic byte, schema id) than the block's, a decimal with more digits than its
  precision (fastavro rounds it), a timestamp outside Python's datetime range (fastavro rejects it).

Known gap: polars reads any union index but the null branch's as the value branch, so a value
whose ``[null, T]`` index byte alone is corrupt (say index 2: fastavro rejects it) decodes here as
``T``. Checking those bytes from polars expressions cost 5-10 us per record (expression planning),
more than the whole batch path saves; a corrupt index that shifts what follows is still caught.

A batch that fails any of this (polars error or panic, a ``None`` value, a marker out of place,
an unknown schema id at its start) is split in halves and retried, down to ``min_chunk`` values;
what still fails gets ``-1``, so one poison record costs a few small decodes, never a wrong answer. Writer schemas
with types outside strings, bytes, long, boolean, float, double, decimal (bytes), timestamp-millis
(precision up to 18) and ``[null, T]`` unions, or that differ from the reader schema in more than
added defaulted fields, are not decoded here (their values get ``-1``).
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro

# polars' thread pool on small batches costs more than it gains (measured: 1.4 vs 0.9 us per record
# on 2 cores); one thread unless the environment says otherwise. Read when polars is first imported.
os.environ.setdefault("POLARS_MAX_THREADS", "1")
import polars as pl
from confluent_kafka.schema_registry import SchemaRegistryClient
from polars.exceptions import PanicException

from topology.serde.decoder import HEADER_SIZE, MAGIC_BYTE, schema_fullname
from topology.serde.writer import encode_long

WIRE = "__wire"  # the leading fixed(5) column: each value's wire header
END = "__end"  # the trailing fixed(16) column: the marker after each value
_MARK_SIZE = 16
_ALIGNED = "fraudstream.aligned"  # result names no Avro field can have
_CODES = "fraudstream.codes"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_MS = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)
_MAX_MS = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)
_SIMPLE = {"string", "bytes", "long", "boolean", "float", "double"}


log = logging.getLogger("fraudstream.batch")

Compile = Callable[[Mapping[str, pl.DataType]], pl.Expr | None]
"""Gives the expression to evaluate on the rows of a frame with this schema (``None``: cannot)."""


@dataclass(frozen=True)
class _Plan:
    header: bytes  # the OCF header (magic, metadata with the extended schema, sync marker)
    defaults: tuple[tuple[str, Any, pl.DataType], ...]  # reader fields the writer lacks
    aligned: pl.Expr  # every row ends on its marker
    suspect: pl.Expr  # rows the per-record decoder must judge


class ColumnarDecoder:
    """Decodes batches of wire-format values with polars and evaluates an expression on them."""

    def __init__(
        self, registry: SchemaRegistryClient, reader_schema: str | None = None, *, min_chunk: int = 16
    ) -> None:
        self._registry = registry
        self._reader: dict[str, Any] | None = None if reader_schema is None else json.loads(reader_schema)
        self._min_chunk = max(1, min_chunk)
        self._sync = os.urandom(16)  # the OCF sync marker
        self._mark = border_free_marker()
        self._plans: dict[bytes, _Plan | None] = {}  # wire header -> plan (None: not for this path)
        self.batches = 0  # evaluate calls
        self.refused_chunks = 0  # chunks polars or the checks refused (split, or their rows per record)
        self.failed_batches = 0  # batches given to the per-record path whole: polars failed past read_avro

    def evaluate(self, values: Sequence[bytes | None], compile: Compile) -> list[int] | None:
        """Per value, the Int64 expression ``compile(schema)`` on its decoded row, or ``-1`` where the
        per-record decoder must judge the value; ``None`` when ``compile`` cannot take the schema."""
        self.batches += 1
        out: list[int] = []
        try:
            if not self._evaluate(values, compile, out, set()):
                return None
        except (Exception, PanicException) as exc:  # a polars panic is a BaseException: never let it out
            self.failed_batches += 1
            if self.failed_batches == 1 or self.failed_batches % 1000 == 0:
                log.warning(
                    "batch decoding failed (%s: %s; %d batches so far): these records go through the "
                    "per-record path", type(exc).__name__, exc, self.failed_batches,
                )  # fmt: skip
            return None
        return out

    def _evaluate(self, values: Sequence[bytes | None], compile: Compile, out: list[int], unknown: set[bytes]) -> bool:
        if not values:
            return True
        codes = self._try(values, compile, unknown)
        if codes is None:
            return False
        if codes:
            out.extend(codes)
            return True
        self.refused_chunks += 1
        if len(values) <= self._min_chunk:
            out.extend([-1] * len(values))
            return True
        mid = len(values) // 2
        return self._evaluate(values[:mid], compile, out, unknown) and self._evaluate(
            values[mid:], compile, out, unknown
        )

    def _try(self, values: Sequence[bytes | None], compile: Compile, unknown: set[bytes]) -> list[int] | None:
        """The codes of a chunk, ``[]`` if the chunk is refused, ``None`` if ``compile`` refuses its schema."""
        if None in values:
            return []
        first: bytes = values[0]  # type: ignore[assignment]
        plan = self._plan(first[:HEADER_SIZE], unknown)
        if plan is None:
            return []
        mark = self._mark
        try:
            data = mark.join(values) + mark  # type: ignore[arg-type]
        except TypeError:  # a value that is not bytes (an error message's)
            return []
        ocf = b"".join((plan.header, encode_long(len(values)), encode_long(len(data)), data, self._sync))
        try:
            frame = pl.read_avro(io.BytesIO(ocf))
        except (Exception, PanicException):  # any refusal of these bytes: split and retry
            return []
        if frame.height != len(values):
            return []
        if plan.defaults:
            frame = frame.with_columns(pl.lit(v, dtype=t).alias(n) for n, v, t in plan.defaults)
        expr = compile(frame.schema)
        if expr is None:
            return None
        result = frame.select(
            plan.aligned.alias(_ALIGNED),
            pl.when(plan.suspect).then(-1).otherwise(expr).fill_null(-1).cast(pl.Int64).alias(_CODES),
        )
        if result.get_column(_ALIGNED)[0] is not True:
            return []
        codes: list[int] = result.get_column(_CODES).to_list()
        return codes

    # ------------------------------------------------------------ plans

    def _plan(self, wire: bytes, unknown: set[bytes]) -> _Plan | None:
        if wire in self._plans:
            return self._plans[wire]
        if wire in unknown or len(wire) < HEADER_SIZE or wire[0] != MAGIC_BYTE:
            return None
        try:
            registered = self._registry.get_schema(int.from_bytes(wire[1:], "big"))
            writer = json.loads(registered.schema_str or "")
            ok = (registered.schema_type or "AVRO") == "AVRO"
        except Exception:  # unknown id, registry down, bad JSON: the per-record path reports it
            unknown.add(wire)  # not remembered beyond this batch: the registry may be back
            return None
        made = _make_plan(writer, self._reader, self._sync, self._mark, wire) if ok else None
        self._plans[wire] = made
        return made


_ABSENT: Any = object()


def _make_plan(writer: Any, reader: dict[str, Any] | None, sync: bytes, mark: bytes, wire: bytes) -> _Plan | None:
    """The plan of one writer schema, or ``None`` when it needs the per-record decoder."""
    if not isinstance(writer, dict) or writer.get("type") != "record" or not isinstance(writer.get("fields"), list):
        return None
    reader_fields: dict[str, dict[str, Any]] | None = None
    if reader is not None:
        if schema_fullname(writer) != schema_fullname(reader):
            return None
        reader_fields = {f["name"]: f for f in reader.get("fields", [])}
    suspect: list[pl.Expr] = []
    names: set[str] = set()
    for f in writer["fields"]:
        name, ftype = f.get("name"), f.get("type")
        if not isinstance(name, str) or name in (WIRE, END) or name in names:
            return None
        names.add(name)
        if reader_fields is not None:
            r = reader_fields.get(name)
            if r is None or _normal(r.get("type")) != _normal(ftype):
                return None  # removed or changed: fastavro's resolution rules apply
        col = pl.col(name)
        branches = ftype if isinstance(ftype, list) else None
        if branches is not None:
            if len(branches) != 2 or "null" not in branches or branches[0] == branches[1]:
                return None
            ftype = branches[1] if branches[0] == "null" else branches[0]
        kind = _kind(ftype)
        if kind is None:
            return None
        check = _check(col, kind, ftype)
        if check is not None:
            suspect.append(check.fill_null(False))
    defaults = _defaults(reader_fields or {}, names)
    header = None if defaults is None else _container_header(writer, sync)
    if defaults is None or header is None:
        return None
    suspect.append(pl.col(WIRE) != pl.lit(wire, dtype=pl.Binary))

    return _Plan(
        header=header,
        defaults=defaults,
        aligned=(pl.col(END) == pl.lit(mark, dtype=pl.Binary)).fill_null(False).all(),
        suspect=pl.any_horizontal(suspect),
    )


def _defaults(
    reader_fields: dict[str, dict[str, Any]], written: set[str]
) -> tuple[tuple[str, Any, pl.DataType], ...] | None:
    """(name, default, dtype) of each reader field the writer lacks; ``None`` when one has no plain default."""
    defaults: list[tuple[str, Any, pl.DataType]] = []
    for name, r in reader_fields.items():
        if name in written:
            continue
        default = _plain_default(r.get("type"), r.get("default", _ABSENT))
        if default is None:
            return None
        defaults.append((name, *default))
    return tuple(defaults)


def _container_header(writer: dict[str, Any], sync: bytes) -> bytes | None:
    """The header of an Avro container file of ``writer``'s records between the wire header and the end mark
    (``None``: a schema fastavro cannot take)."""
    extended = dict(writer)
    extended["fields"] = [
        {"name": WIRE, "type": {"type": "fixed", "name": "Wire__", "size": HEADER_SIZE}},
        *writer["fields"],
        {"name": END, "type": {"type": "fixed", "name": "End__", "size": _MARK_SIZE}},
    ]
    try:
        parsed = fastavro.parse_schema(extended)
        buf = io.BytesIO()
        fastavro.writer(buf, parsed, [], codec="null", sync_marker=sync)
    except Exception:  # a schema fastavro cannot take: per record
        return None
    return buf.getvalue()


def _kind(schema: Any) -> str | None:
    """``string``, ``bytes``, ``long``, ``boolean``, ``float``, ``double``, ``decimal`` or ``timestamp``."""
    if isinstance(schema, str):
        return schema if schema in _SIMPLE else None
    if not isinstance(schema, dict):
        return None
    base, logical = schema.get("type"), schema.get("logicalType")
    if logical is None:
        return _kind(base) if isinstance(base, str) and set(schema) <= {"type", "doc"} else None
    if logical == "decimal" and base == "bytes":
        precision, scale = schema.get("precision"), schema.get("scale", 0)
        if isinstance(precision, int) and isinstance(scale, int) and 0 < precision <= 18 and 0 <= scale <= precision:
            return "decimal"
        return None
    if logical == "timestamp-millis" and base == "long":
        return "timestamp"
    return None


def _check(col: pl.Expr, kind: str, schema: Any) -> pl.Expr | None:
    """Rows of the column whose value the per-record decoder must judge, or None."""
    if kind == "timestamp":
        ms = col.to_physical()  # Datetime("ms"): epoch milliseconds
        out_of_range: pl.Expr = (ms < _MIN_MS) | (ms > _MAX_MS)
        return out_of_range
    if kind == "decimal":
        unscaled = col.to_physical()  # Int128
        limit = 10 ** int(schema["precision"])  # fastavro rounds a value with more digits
        outside: pl.Expr = (unscaled >= limit) | (unscaled <= -limit)
        return outside
    return None


def _plain_default(schema: Any, default: Any) -> tuple[Any, pl.DataType] | None:
    """(value, polars type) of a reader default this path can add as a constant column, else ``None``."""
    first = schema[0] if isinstance(schema, list) and schema else schema
    types: dict[str, pl.DataType] = {
        "string": pl.String(), "long": pl.Int64(), "boolean": pl.Boolean(), "double": pl.Float64(),
    }  # fmt: skip
    if first == "null" and default is None and isinstance(schema, list) and len(schema) == 2:
        other = _kind(schema[1])
        if other in types:
            return None, types[other]
        return None
    if isinstance(first, str) and first in types and default is not _ABSENT and not isinstance(default, dict | list):
        return default, types[first]
    return None


def _normal(schema: Any) -> Any:
    if isinstance(schema, dict) and set(schema) <= {"type", "doc"} and isinstance(schema.get("type"), str):
        return schema["type"]
    if isinstance(schema, str):
        return schema
    return json.dumps(schema, sort_keys=True)


def border_free_marker() -> bytes:
    """16 random bytes of which no proper prefix is also a suffix (a shifted read never equals it)."""
    while True:
        mark = os.urandom(_MARK_SIZE)
        if all(mark[t:] != mark[: _MARK_SIZE - t] for t in range(1, _MARK_SIZE)):
            return mark

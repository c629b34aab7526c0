"""Avro values in the Confluent wire format, through a Schema Registry.

Wire format: byte 0 is the magic byte ``0``, bytes 1-4 the big-endian schema
id in the registry, then the Avro binary encoding of one datum (no container
header). Parsed schemas are cached by id, so the registry is asked once per
schema id; the per-record path is fastavro's compiled schemaless reader/writer.

Errors that are the record's fault raise ``DecodeError`` / ``EncodeError``
(a runtime dead-letters the record). A registry that cannot be reached raises
``RegistryError``: not the record's fault, so the caller retries.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Literal, cast, get_args

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form

from topology.serde.writer import compile_writer

DecodeReason = Literal["not-wire-format", "unknown-schema", "truncated", "invalid-avro", "null-value"]
DECODE_REASONS: tuple[DecodeReason, ...] = get_args(DecodeReason)

MAGIC_BYTE = 0
HEADER_SIZE = 5  # magic byte + 4-byte schema id
_MAX_UNKNOWN_IDS = 1024  # bound on remembered "no such schema id" answers
_FAILED_WAIT_S, _FAILED_WAIT_MAX_S = 1.0, 8.0  # a registry that failed is asked again after 1, 2, 4, 8, 8... s


class DecodeError(Exception):
    """A value that cannot be decoded; ``reason`` is one of ``DECODE_REASONS``."""

    def __init__(self, reason: DecodeReason, message: str) -> None:
        super().__init__(message)
        self.reason: DecodeReason = reason


class EncodeError(Exception):
    """A record that does not fit the schema; the message names the field and the value."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class RegistryError(Exception):
    """The Schema Registry could not be reached or refused a request (not the record's fault)."""


def wire_header(schema_id: int) -> bytes:
    """The 5-byte Confluent wire-format header for ``schema_id``."""
    return bytes([MAGIC_BYTE]) + schema_id.to_bytes(4, "big")


def _registry_call_failed(what: str, exc: Exception) -> RegistryError:
    return RegistryError(f"Schema Registry {what} failed: {exc}")


class AvroDecoder:
    """Decodes Confluent wire-format Avro values; one registry lookup per schema id.

    With ``reader_schema`` every value is resolved to that schema (Avro schema
    resolution: added fields get their defaults, removed ones are skipped);
    without it values decode as written.
    """

    def __init__(
        self, registry: SchemaRegistryClient, reader_schema: str | None = None, *, unknown_ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._registry = registry
        # An id the registry does not know is asked again after ``unknown_ttl_s`` (a schema registered a
        # moment after its first record, or a registry replica lagging); until then its records are
        # dead-lettered at once ("unknown-schema"), without a lookup per record.
        self._unknown_ttl_s = unknown_ttl_s
        self._clock = clock
        self._reader: dict[str, Any] | None = None
        self._reader_canonical: str | None = None
        if reader_schema is not None:
            self._reader = _parse(json.loads(reader_schema))
            self._reader_canonical = _canonical(self._reader)
        # schema id -> (parsed writer schema, parsed reader schema or None)
        self._by_id: dict[int, tuple[dict[str, Any], dict[str, Any] | None]] = {}
        self._unknown: dict[int, tuple[str, float]] = {}  # id -> (why, when to ask again)
        # A registry that failed to answer is not asked again before ``_failed_until`` (the wait doubles
        # per failure, up to _FAILED_WAIT_MAX_S): each failed lookup takes the client seconds of its own
        # retries, and a batch of records with a new schema id would otherwise pay them once per record.
        self._failed: RegistryError | None = None
        self._failed_until = 0.0
        self._failed_wait_s = _FAILED_WAIT_S

    def decode(self, value: bytes | None) -> dict[str, Any]:
        """The record in ``value``; raises ``DecodeError`` naming what is wrong."""
        if value is None:
            raise DecodeError("null-value", "value is null (a tombstone), expected an Avro record")
        size = len(value)
        if size < HEADER_SIZE or value[0] != MAGIC_BYTE:
            raise DecodeError("not-wire-format", _not_wire_format(value))
        schema_id = int.from_bytes(value[1:HEADER_SIZE], "big")
        schemas = self._by_id.get(schema_id)
        if schemas is None:
            schemas = self._load(schema_id)
        buf = io.BytesIO(value)
        buf.seek(HEADER_SIZE)
        try:
            record = cast(dict[str, Any], schemaless_reader(buf, schemas[0], schemas[1]))
        except Exception as exc:  # any failure on these bytes is the record's fault
            raise _classify(exc, buf.tell(), size, schema_id) from exc
        if buf.tell() != size:
            raise DecodeError(
                "invalid-avro",
                f"{size - buf.tell()} trailing bytes after the record (schema id {schema_id}, {size} bytes)",
            )
        return record

    def _load(self, schema_id: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
        known_missing = self._unknown.get(schema_id)
        if known_missing is not None:
            message, until = known_missing
            if self._clock() < until:
                raise DecodeError("unknown-schema", message)
            del self._unknown[schema_id]
        if self._failed is not None and self._clock() < self._failed_until:
            raise RegistryError(f"{self._failed} (not asked again for {self._failed_until - self._clock():.1f} s)")
        try:
            registered = self._registry.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return self._remember_unknown(schema_id, f"schema id {schema_id} is not in the registry")
            raise self._registry_failed(schema_id, exc) from exc
        except Exception as exc:  # transport errors (httpx/OS) after the client's own retries
            raise self._registry_failed(schema_id, exc) from exc
        self._failed, self._failed_wait_s = None, _FAILED_WAIT_S
        if (registered.schema_type or "AVRO") != "AVRO":
            return self._remember_unknown(
                schema_id, f"schema id {schema_id} is a {registered.schema_type} schema, not Avro"
            )
        try:
            writer = _parse(json.loads(registered.schema_str or ""))
        except Exception as exc:  # a registered schema fastavro cannot parse
            return self._remember_unknown(schema_id, f"schema id {schema_id} cannot be parsed: {exc}")
        reader = self._reader
        if reader is not None and _canonical(writer) == self._reader_canonical:
            reader = None  # same schema: skip resolution on the hot path
        entry = (writer, reader)
        self._by_id[schema_id] = entry
        return entry

    def _registry_failed(self, schema_id: int, exc: Exception) -> RegistryError:
        self._failed = _registry_call_failed(f"lookup of schema id {schema_id}", exc)
        self._failed_until = self._clock() + self._failed_wait_s
        self._failed_wait_s = min(self._failed_wait_s * 2, _FAILED_WAIT_MAX_S)
        return self._failed

    def _remember_unknown(self, schema_id: int, message: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        if len(self._unknown) < _MAX_UNKNOWN_IDS:
            self._unknown[schema_id] = (message, self._clock() + self._unknown_ttl_s)
        raise DecodeError("unknown-schema", message)


class AvroEncoder:
    """Encodes records with one schema into the Confluent wire format.

    The schema is registered under ``subject`` (or only looked up, with
    ``auto_register=False``) once, at construction. Records that
    ``topology.serde.writer`` vouches for are written by it (same bytes, about
    twice as fast); every other record goes through fastavro.
    """

    def __init__(
        self,
        registry: SchemaRegistryClient,
        schema_text: str,
        subject: str,
        *,
        auto_register: bool = True,
    ) -> None:
        self.subject = subject
        self._parsed = _parse(json.loads(schema_text))
        if self._parsed.get("type") != "record":
            raise ValueError("AvroEncoder needs a record schema")
        self._fields: dict[str, dict[str, Any]] = {f["name"]: f for f in self._parsed["fields"]}
        self._field_names = frozenset(self._fields)
        # fastavro checks a decimal's scale but not its precision: (name, max integer digits)
        self._decimals = tuple(
            (name, int(t["precision"]) - int(t.get("scale", 0)))
            for name, f in self._fields.items()
            if isinstance(t := f["type"], dict) and t.get("logicalType") == "decimal"
        )
        schema = Schema(schema_text, "AVRO")
        try:
            if auto_register:
                self.schema_id: int = registry.register_schema(subject, schema)
            else:
                self.schema_id = registry.lookup_schema(subject, schema).schema_id or 0
        except SchemaRegistryError as exc:
            action = "registration" if auto_register else "lookup"
            raise RegistryError(f"Schema Registry refused {action} under subject {subject!r}: {exc}") from exc
        except Exception as exc:  # transport errors (httpx/OS) after the client's own retries
            raise _registry_call_failed(f"registration under subject {subject!r}", exc) from exc
        self._header = wire_header(self.schema_id)
        self._fast = compile_writer(self._parsed, self._header)
        self._probes: dict[str, dict[str, Any]] = {}

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """``record`` in the wire format; raises ``EncodeError`` naming the field and value that do not fit."""
        if self._fast is not None:
            value = self._fast(record)
            if value is not None:
                return value
        if not self._field_names.issuperset(record.keys()):
            extra = sorted(set(record.keys()) - self._field_names)
            raise EncodeError(
                f"field {extra[0]!r} (value {record[extra[0]]!r}) is not in schema {self._parsed['name']}",
                extra[0],
            )
        for name, int_digits in self._decimals:
            amount = record.get(name)
            if isinstance(amount, Decimal) and amount.is_finite() and amount and amount.adjusted() >= int_digits:
                kind = describe_type(self._fields[name]["type"])
                raise EncodeError(f"field {name!r} = {amount!r} has too many digits for {kind}", name)
        buf = io.BytesIO()
        buf.write(self._header)
        try:
            schemaless_writer(buf, self._parsed, record)
        except Exception as exc:  # fastavro raises many types; find the field to name it
            raise self._explain(record, exc) from exc
        return buf.getvalue()

    def _explain(self, record: Mapping[str, Any], exc: Exception) -> EncodeError:
        for name, field in self._fields.items():
            probe = self._probe(name)
            missing = name not in record
            value = record.get(name, field.get("default"))
            try:
                schemaless_writer(io.BytesIO(), probe, {name: value})
            except Exception as field_exc:
                kind = describe_type(field["type"])
                if missing:
                    return EncodeError(f"field {name!r} ({kind}) is missing and has no default", name)
                return EncodeError(
                    f"field {name!r} = {value!r} ({type(value).__name__}) does not fit {kind}: {field_exc}",
                    name,
                )
        return EncodeError(f"record does not fit schema {self._parsed['name']}: {exc}")

    def _probe(self, name: str) -> dict[str, Any]:
        probe = self._probes.get(name)
        if probe is None:
            field = {k: v for k, v in self._fields[name].items() if not k.startswith("__")}
            named = dict(self._parsed.get("__named_schemas", {}))
            probe = _parse({"type": "record", "name": "_Probe", "fields": [field]}, named)
            self._probes[name] = probe
        return probe


def describe_type(schema: Any) -> str:
    """A short human name of an Avro type: ``string``, ``decimal(18,2)``, ``null|string``."""
    if isinstance(schema, list):
        return "|".join(describe_type(s) for s in schema)
    if isinstance(schema, dict):
        logical = schema.get("logicalType")
        if logical == "decimal":
            return f"decimal({schema.get('precision')},{schema.get('scale', 0)})"
        if logical:
            return str(logical)
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            return f"{kind} {schema.get('name')}"
        return describe_type(kind)
    return str(schema)


def schema_fullname(schema: Mapping[str, Any]) -> str:
    """A named schema's full name: ``namespace.name`` unless the name is already dotted."""
    name = str(schema.get("name", ""))
    ns = schema.get("namespace")
    return name if "." in name or not ns else f"{ns}.{name}"


def _parse(schema: Any, named_schemas: dict[str, Any] | None = None) -> dict[str, Any]:
    parsed = parse_schema(schema, named_schemas=named_schemas)
    if not isinstance(parsed, dict):
        raise ValueError("expected an Avro record schema (a JSON object)")
    return cast(dict[str, Any], parsed)


def _canonical(parsed: dict[str, Any]) -> str:
    return str(to_parsing_canonical_form(parsed))


def _not_wire_format(value: bytes) -> str:
    if len(value) == 0:
        return "value is empty, expected the 5-byte Confluent wire-format header"
    if value[0] != MAGIC_BYTE:
        return f"first byte is 0x{value[0]:02x}, not the Confluent wire-format magic byte 0x00"
    return f"value has {len(value)} bytes, fewer than the 5-byte Confluent wire-format header"


class CutShort(IndexError):
    """The data ended inside a varint (the reader's position is then the end)."""


class EndsInside(EOFError):
    """The data ended inside a value (the reader's position is then the end); reported as an ``EOFError``.

    These two live here, not in the compiled ``topology.serde.scan`` that raises them: compiled classes
    cannot inherit from built-in exceptions."""


def _classify(exc: Exception, position: int, size: int, schema_id: int) -> DecodeError:
    text = str(exc) or type(exc).__name__
    ran_off_end = position >= size and isinstance(exc, EOFError | IndexError)
    if ran_off_end and not text.startswith("Expected -"):
        return DecodeError("truncated", f"value ends early ({size} bytes) for schema id {schema_id}: {text}")
    return DecodeError(
        "invalid-avro", f"bytes are not a valid Avro record of schema id {schema_id}: {type(exc).__name__}: {text}"
    )

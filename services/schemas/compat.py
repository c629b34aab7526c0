"""Offline Avro schema evolution checks: can a reader schema read a writer's data?

The verdict comes from Apache Avro's own ``ReaderWriterCompatibilityChecker``
(the ``avro`` package, a dependency of ``confluent-kafka[avro]``), which
implements the specification's schema resolution rules. This module adds what
it lacks: the compatibility *modes* of a Schema Registry (which direction,
which earlier versions), readable reasons naming the field, and one rule the
resolution rules leave out: a changed logical type (for example
``decimal(18,2)`` to ``decimal(18,3)``) reads the same bytes with a different
meaning, so it is reported too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import avro.schema
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityType,
    lookup_writer_field,
    schema_name_equals,
)

from services.config import CompatibilityLevel


@dataclass(frozen=True)
class Version:
    """One schema text with a name for messages (``local``, ``v1``, ``registry version 3``)."""

    label: str
    text: str


@dataclass(frozen=True)
class Problem:
    """One reason a schema pair is incompatible."""

    schema: str  # schema or subject name
    reader: str
    writer: str
    field: str  # dotted path, "" for the whole record
    reason: str

    def __str__(self) -> str:
        where = f"field '{self.field}'" if self.field else "record"
        return f"{self.schema}: {self.reader} cannot read data written with {self.writer}: {where}: {self.reason}"


def directions(level: CompatibilityLevel) -> tuple[bool, bool]:
    """(the new schema must read old data, old schemas must read new data) for ``level``."""
    base = level.removesuffix("_TRANSITIVE")
    return base in ("BACKWARD", "FULL"), base in ("FORWARD", "FULL")


def parse(text: str) -> avro.schema.Schema:
    """Parse an Avro schema (raises ``avro.errors.SchemaParseException`` with the reason)."""
    return avro.schema.parse(text)


def can_read(reader: Version, writer: Version, schema: str = "") -> list[Problem]:
    """Why ``reader`` cannot read data written with ``writer`` (empty when it can)."""
    found = _explain(parse(reader.text), parse(writer.text), "", reader.label, writer.label)
    return [Problem(schema, reader.label, writer.label, path, reason) for path, reason in found]


def check(new: Version, earlier: list[Version], level: CompatibilityLevel, schema: str = "") -> list[Problem]:
    """Problems of ``new`` against ``earlier`` (oldest first) under ``level``, as a registry judges them.

    Non-transitive levels compare with the latest earlier version only, like the registry.
    """
    if level == "NONE" or not earlier:
        return []
    against = earlier if level.endswith("_TRANSITIVE") else earlier[-1:]
    new_reads_old, old_reads_new = directions(level)
    problems: list[Problem] = []
    for old in against:
        if new_reads_old:
            problems += can_read(new, old, schema)
        if old_reads_new:
            problems += can_read(old, new, schema)
    return problems


def missing_docs(text: str) -> list[str]:
    """Names of record fields without a ``doc`` (dotted paths)."""
    missing: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch, path)
        elif isinstance(node, dict):
            if node.get("type") == "record":
                for field in node.get("fields", []):
                    field_path = f"{path}.{field['name']}" if path else field["name"]
                    if not field.get("doc"):
                        missing.append(field_path)
                    walk(field.get("type"), field_path)
            elif node.get("type") in ("array", "map"):
                walk(node.get("items", node.get("values")), path)

    walk(json.loads(text), "")
    return missing


def _explain(
    reader: avro.schema.Schema, writer: avro.schema.Schema, path: str, rname: str, wname: str
) -> list[tuple[str, str]]:
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    verdict = checker.get_compatibility(reader, writer)
    if verdict.compatibility is not SchemaCompatibilityType.incompatible:
        return _logical_changes(reader, writer, path, rname, wname)
    if isinstance(reader, avro.schema.RecordSchema) and isinstance(writer, avro.schema.RecordSchema):
        found: list[tuple[str, str]] = []
        if not schema_name_equals(reader, writer):
            found.append((path, f"record name {reader.fullname} differs from {writer.fullname} (add an alias)"))
        reader_names = {f.name for f in reader.fields} | {
            a for f in reader.fields for a in (f.props.get("aliases") or [])
        }
        for field in reader.fields:
            field_path = f"{path}.{field.name}" if path else field.name
            old = lookup_writer_field(writer_schema=writer, reader_field=field)
            if old is None:
                if not field.has_default:
                    orphans = [f.name for f in writer.fields if f.name not in reader_names]
                    hint = (
                        f' (renamed? {wname} has {", ".join(repr(o) for o in orphans)}: add "aliases")'
                        if orphans
                        else " (add a default)"
                    )
                    found.append((field_path, f"{wname} has no such field and {rname} gives it no default{hint}"))
                continue
            found += _explain(field.type, old.type, field_path, rname, wname)
        if found:
            return found
    messages = "; ".join(sorted(verdict.messages))
    return [
        (path, f"{rname} has type {_describe(reader)}, which cannot read {wname}'s {_describe(writer)} ({messages})")
    ]


def _logical_changes(
    reader: avro.schema.Schema, writer: avro.schema.Schema, path: str, rname: str, wname: str
) -> list[tuple[str, str]]:
    """Same Avro type, different logical type: readable bytes, changed meaning."""
    if isinstance(reader, avro.schema.RecordSchema) and isinstance(writer, avro.schema.RecordSchema):
        found: list[tuple[str, str]] = []
        for field in reader.fields:
            old = lookup_writer_field(writer_schema=writer, reader_field=field)
            if old is not None:
                field_path = f"{path}.{field.name}" if path else field.name
                found += _logical_changes(field.type, old.type, field_path, rname, wname)
        return found
    if isinstance(reader, avro.schema.UnionSchema) and isinstance(writer, avro.schema.UnionSchema):
        found = []
        for branch in reader.schemas:
            for old in writer.schemas:
                if old.type == branch.type and old.type not in ("record", "enum", "fixed"):
                    found += _logical_changes(branch, old, path, rname, wname)
        return found
    logical_reader, logical_writer = _logical(reader), _logical(writer)
    if logical_reader != logical_writer and (reader.type == writer.type or logical_reader[0] or logical_writer[0]):
        return [
            (
                path,
                f"{rname} has {_describe(reader)} but {wname} has {_describe(writer)}: "
                "the same bytes would be read with a different meaning",
            )
        ]
    return []


def _logical(schema: avro.schema.Schema) -> tuple[Any, ...]:
    props = cast(dict[str, Any], schema.props)
    return (props.get("logicalType"), props.get("precision"), props.get("scale", 0))


def _describe(schema: avro.schema.Schema) -> str:
    if isinstance(schema, avro.schema.UnionSchema):
        return "|".join(_describe(s) for s in schema.schemas)
    logical, precision, scale = _logical(schema)
    if logical == "decimal":
        return f"decimal({precision},{scale})"
    if isinstance(schema, avro.schema.NamedSchema):
        return f"{schema.type} {schema.fullname}"
    return str(logical or schema.type)

"""Register the project's Avro schemas and check their evolution (`fraudstream schemas ...`).

Subjects follow TopicNameStrategy (``<topic>-value``). The Transaction schema
is the value of the input topic and of the two branch topics (the detector
passes the original bytes through); the alerts topic holds ``FraudAlert`` values. Keys are plain UTF-8 strings
(StringSerializer), so they have no subject.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import cast, get_args

import fastavro
from confluent_kafka.schema_registry import RegisteredSchema, Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

import schemas
from services.config import TOPICS, CompatibilityLevel, SchemaSettings, Topics
from services.schemas.compat import Problem, Version, check, missing_docs, parse


def subjects(topics: Topics = TOPICS) -> dict[str, str]:
    """Registry subject -> schema name (``schemas/<name>.avsc``)."""
    return {
        f"{topics.transactions}-value": "transaction",
        f"{topics.legit}-value": "transaction",
        f"{topics.fraud}-value": "transaction",
        f"{topics.labels}-value": "transaction_label",
        f"{topics.alerts}-value": "fraud_alert",
        f"{topics.rules}-value": "rule",
    }


@dataclass(frozen=True)
class Finding:
    """One line of a check: an error (fails the check) or a note."""

    text: str
    error: bool = True


def check_offline(
    settings: SchemaSettings,
    subject_map: dict[str, str] | None = None,
    schema_dir: Path = schemas.SCHEMA_DIR,
) -> list[Finding]:
    """Every local schema: parses, documents every field, and is compatible with its history.

    A schema used by several subjects is checked under each distinct level of those subjects.
    """
    subject_map = subjects() if subject_map is None else subject_map
    findings: list[Finding] = []
    for name in schemas.schema_names(schema_dir):
        text = (schema_dir / f"{name}.avsc").read_text(encoding="utf-8")
        try:
            fastavro.parse_schema(json.loads(text))
            parse(text)
        except Exception as exc:  # json, fastavro and avro each raise their own parse errors
            findings.append(Finding(f"{name}.avsc does not parse: {exc}"))
            continue
        findings += [Finding(f"{name}.avsc: field '{f}' has no doc") for f in missing_docs(text)]
        earlier = [Version(f"history v{n}", t) for n, t in schemas.history(name, schema_dir)]
        if not earlier:
            findings.append(Finding(f"{name}.avsc has no history yet (add history/{name}/v1.avsc)", False))
            continue
        levels = sorted({settings.level(s) for s, n in subject_map.items() if n == name}) or [settings.compatibility]
        for level in levels:
            problems = check(Version(f"{name}.avsc", text), earlier, level, name)
            findings += [Finding(f"{p} [{level}]") for p in problems]
            if not problems:
                findings.append(Finding(f"{name}.avsc is {level} compatible with {_span(earlier, level)}", False))
        if parse(text) != parse(earlier[-1].text):
            findings.append(
                Finding(
                    f"{name}.avsc differs from history v{len(earlier)}: "
                    f"copy it to history/{name}/v{len(earlier) + 1}.avsc when it is released",
                    False,
                )
            )
    return findings


def check_online(
    registry: SchemaRegistryClient,
    subject_map: dict[str, str] | None = None,
    schema_dir: Path = schemas.SCHEMA_DIR,
) -> list[Finding]:
    """Every subject's local schema against the latest version in the registry, by the registry's verdict.

    When the registry says no, the reasons (naming the fields) come from the offline checker
    run on the registry's latest schema under the subject's level.
    """
    subject_map = subjects() if subject_map is None else subject_map
    findings: list[Finding] = []
    existing = set(registry.get_subjects())
    for subject, name in subject_map.items():
        text = (schema_dir / f"{name}.avsc").read_text(encoding="utf-8")
        if subject not in existing:
            findings.append(Finding(f"{subject}: not registered yet (nothing to check)", False))
            continue
        latest = _latest(registry, subject)
        level = _level(registry, subject)
        if registry.test_compatibility(subject, Schema(text, "AVRO")):
            findings.append(
                Finding(f"{subject}: {name}.avsc is {level} compatible with version {latest.version}", False)
            )
            continue
        registered = Version(f"registry version {latest.version}", latest.schema.schema_str or "")
        problems = check(Version(f"{name}.avsc", text), [registered], level, subject)
        if not problems:
            rejected = f"{subject}: the registry rejects {name}.avsc ({level}) against {registered.label}"
            findings.append(Finding(rejected))
        findings += [Finding(f"{p} [{level}]") for p in problems]
    return findings


@dataclass(frozen=True)
class Registered:
    """The outcome of registering one subject."""

    subject: str
    schema: str
    schema_id: int
    version: int
    compatibility: str


def register(
    registry: SchemaRegistryClient,
    settings: SchemaSettings,
    subject_map: dict[str, str] | None = None,
    schema_dir: Path = schemas.SCHEMA_DIR,
) -> tuple[list[Registered], list[Finding]]:
    """Set each subject's compatibility level and register its local schema.

    A schema the registry rejects as incompatible is not registered and yields findings naming the field.
    """
    subject_map = subjects() if subject_map is None else subject_map
    done: list[Registered] = []
    findings: list[Finding] = []
    for subject, name in subject_map.items():
        text = (schema_dir / f"{name}.avsc").read_text(encoding="utf-8")
        level = settings.level(subject)
        registry.set_compatibility(subject, level)
        try:
            registered = registry.register_schema_full_response(subject, Schema(text, "AVRO"))
        except SchemaRegistryError as exc:
            if exc.http_status_code != 409:
                raise
            latest = _latest(registry, subject)
            older = Version(f"registry version {latest.version}", latest.schema.schema_str or "")
            problems = check(Version(f"{name}.avsc", text), [older], level, subject)
            findings.append(Finding(f"{subject}: the registry refused {name}.avsc: {exc.error_message}"))
            findings += [Finding(f"{p} [{level}]") for p in problems]
            continue
        version = registry.lookup_schema(subject, Schema(text, "AVRO")).version or 0
        done.append(Registered(subject, name, registered.schema_id or 0, version, level))
    return done, findings


def _latest(registry: SchemaRegistryClient, subject: str) -> RegisteredSchema:
    """The latest version, asked fresh (the client caches "latest" forever without a TTL)."""
    registry.clear_latest_caches()  # type: ignore[no-untyped-call]
    return registry.get_latest_version(subject)


def _level(registry: SchemaRegistryClient, subject: str) -> CompatibilityLevel:
    try:
        level = registry.get_compatibility(subject)
    except SchemaRegistryError:
        level = registry.get_compatibility()
    if level not in get_args(CompatibilityLevel):
        raise ValueError(f"the registry reports an unknown compatibility level {level!r} for {subject}")
    return cast(CompatibilityLevel, level)


def _span(earlier: list[Version], level: str) -> str:
    if level == "NONE":
        return "anything (NONE)"
    if level.endswith("_TRANSITIVE"):
        return ", ".join(v.label for v in earlier)
    return earlier[-1].label


__all__ = ["Finding", "Problem", "Registered", "check_offline", "check_online", "register", "subjects"]

"""Schemas, generator and console consumer on the real broker and registry (unique names per test)."""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from typer.testing import CliRunner

import schemas
from services.cli import app
from services.config import GeneratorSettings, SchemaSettings
from services.consumer import consume, to_json
from services.generator.produce import Progress, Sender, stream_config
from services.generator.scenarios import TransactionStream
from services.kafka import check_broker, check_registry, ensure_topics, producer_config
from services.schemas import check_online, register
from tests.conftest import Endpoints
from topology.serde.decoder import AvroEncoder

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(stack: Endpoints) -> SchemaRegistryClient:
    return check_registry(stack.kafka)


@pytest.fixture
def admin(stack: Endpoints) -> AdminClient:
    return check_broker(stack.kafka)


def _schema_dir(tmp_path: Path, change: dict[str, Any] | None = None, retype: str | None = None) -> Path:
    shutil.copytree(schemas.SCHEMA_DIR / "history", tmp_path / "history", dirs_exist_ok=True)
    schema = json.loads(schemas.schema_text("transaction"))
    if change is not None:
        schema["fields"].append(change)
    if retype is not None:
        next(f for f in schema["fields"] if f["name"] == retype)["type"] = "int"
    (tmp_path / "transaction.avsc").write_text(json.dumps(schema))
    (tmp_path / "transaction_label.avsc").write_text(schemas.schema_text("transaction_label"))
    return tmp_path


def test_register_and_evolve_through_the_registry(registry: SchemaRegistryClient, unique: str, tmp_path: Path) -> None:
    tx_subject, label_subject = f"it-{unique}-value", f"it-{unique}.labels-value"
    subjects = {tx_subject: "transaction", label_subject: "transaction_label"}
    try:
        settings = SchemaSettings(subject_compatibility={label_subject: "FULL"})
        done, findings = register(registry, settings, subjects)
        assert findings == []
        assert {(r.subject, r.version, r.compatibility) for r in done} == {
            (tx_subject, 1, "BACKWARD"),
            (label_subject, 1, "FULL"),
        }
        assert registry.get_compatibility(label_subject) == "FULL"
        assert registry.get_latest_version(tx_subject).schema_id == done[0].schema_id

        # a compatible change: the registry agrees, and it registers as version 2
        added = _schema_dir(
            tmp_path / "added", {"name": "device", "type": ["null", "string"], "default": None, "doc": "Device id."}
        )
        assert [f.text for f in check_online(registry, subjects, added) if f.error] == []
        done, findings = register(registry, settings, subjects, added)
        assert findings == [] and {r.version for r in done if r.subject == tx_subject} == {2}

        # an incompatible change: the registry says no, and the reason names the field
        retyped = _schema_dir(tmp_path / "retyped", retype="currency")
        errors = [f.text for f in check_online(registry, subjects, retyped) if f.error]
        assert errors and all("field 'currency'" in e for e in errors)
        done, findings = register(registry, settings, subjects, retyped)
        assert tx_subject not in {r.subject for r in done}
        assert any("refused" in f.text for f in findings) and any("field 'currency'" in f.text for f in findings)
        assert registry.get_versions(tx_subject) == [1, 2]
    finally:
        for subject in subjects:
            registry.delete_subject(subject)
            registry.delete_subject(subject, permanent=True)


def _consume_lines(stack: Endpoints, registry: SchemaRegistryClient, topic: str, n: int) -> tuple[list[str], str]:
    out, err = io.StringIO(), io.StringIO()
    result = consume(
        stack.kafka,
        registry,
        topic,
        from_beginning=True,
        max_messages=n,
        idle_timeout_s=20,
        out=out,
        err=err,
    )
    assert result.printed + result.errors == n, err.getvalue()
    return out.getvalue().splitlines(), err.getvalue()


def test_generate_then_consume_round_trip_with_exact_decimals(
    stack: Endpoints, registry: SchemaRegistryClient, admin: AdminClient, unique: str
) -> None:
    count = 3_000
    settings = GeneratorSettings.with_overrides(
        seed=7,
        rate=0,
        count=count,
        topic=f"it-tx-{unique}",
        labels_topic=f"it-labels-{unique}",
        partitions=3,
        fraud_fan_in=0.5,
    )
    sender = Sender(settings, stack.kafka, registry, admin)
    stream = TransactionStream(stream_config(settings))

    def ignore(_: Progress) -> None:
        return None

    progress = sender.run(stream, count=count, rate=0, report=ignore)
    try:
        assert (progress.sent, progress.records.delivered, progress.records.failed) == (count, 2 * count, 0)
        expected = {g.record["transaction_id"]: g for g in TransactionStream(stream_config(settings)).take(count)}

        lines, _ = _consume_lines(stack, registry, settings.topic, count)
        got = {r["transaction_id"]: r for r in map(json.loads, lines)}
        assert got.keys() == expected.keys()
        for tx_id, record in got.items():
            want = expected[tx_id].record
            assert record["amount"] == str(want["amount"])  # exact, two decimals, as a string
            assert Decimal(record["amount"]) == want["amount"]
            want_json = json.loads(json.dumps({**want, "event_time": _iso(want["event_time"])}, default=to_json))
            assert record == want_json

        label_lines, _ = _consume_lines(stack, registry, settings.labels_topic, count)
        labels = {r["transaction_id"]: r for r in map(json.loads, label_lines)}
        assert labels.keys() == expected.keys()
        assert {t: lab["scenario"] for t, lab in labels.items()} == {t: g.scenario for t, g in expected.items()}
        assert Counter(lab["is_fraud"] for lab in labels.values())[True] == progress.fraud > 0
    finally:
        admin.delete_topics([settings.topic, settings.labels_topic])


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return str(to_json(datetime.fromtimestamp(ms / 1000, UTC)))


def test_generate_twice_with_seed_7_gives_the_same_transactions(
    stack: Endpoints, registry: SchemaRegistryClient, admin: AdminClient, unique: str
) -> None:
    runner = CliRunner()
    env = {"KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers, "SCHEMA_REGISTRY_URL": stack.registry_url}
    topics = [f"it-seed-a-{unique}", f"it-seed-b-{unique}"]
    try:
        runs = []
        for topic in topics:
            result = runner.invoke(
                app,
                [
                    "generate",
                    "--count",
                    "2000",
                    "--rate",
                    "0",
                    "--seed",
                    "7",
                    "--topic",
                    topic,
                    "--labels-topic",
                    f"{topic}.labels",
                    "--partitions",
                    "3",
                ],
                env=env,
            )
            assert result.exit_code == 0, result.output
            assert "sent 2,000 transactions" in result.output
            runs.append(_consume_lines(stack, registry, topic, 2000)[0])
        assert sorted(runs[0]) == sorted(runs[1])
        assert len(set(runs[0])) == 2000
    finally:
        admin.delete_topics([name for t in topics for name in (t, f"{t}.labels")])


def test_consume_cli_prints_error_lines_for_undecodable_records_and_goes_on(
    stack: Endpoints, registry: SchemaRegistryClient, admin: AdminClient, unique: str
) -> None:
    topic = f"it-console-{unique}"
    ensure_topics(admin, [topic], partitions=1)
    try:
        encoder = AvroEncoder(registry, schemas.schema_text("transaction"), f"{topic}-value")
        good = encoder.encode(
            {
                "transaction_id": "t1",
                "source_account": "ACC1",
                "target_account": "ACC2",
                "amount": Decimal("0.10"),
                "currency": "EUR",
                "event_time": 1_767_225_600_000,
            }
        )
        producer = Producer(producer_config(stack.kafka))
        for value in (good, b"not avro", good[:-3], good):
            producer.produce(topic, value, b"ACC1", headers=[("origin", b"test")])
        producer.flush(10)
        result = CliRunner().invoke(
            app,
            [
                "consume",
                "--topic",
                topic,
                "--from-beginning",
                "--max-messages",
                "4",
                "--print-key",
                "--print-headers",
                "--bootstrap-servers",
                stack.bootstrap_servers,
                "--registry-url",
                stack.registry_url,
            ],
        )
        assert result.exit_code == 0, result.output
        printed = [json.loads(line) for line in result.stdout.splitlines()]
        assert [(p["offset"], p["key"], p["value"]["amount"], p["headers"]) for p in printed] == [
            (0, "ACC1", "0.10", {"origin": "test"}),
            (3, "ACC1", "0.10", {"origin": "test"}),
        ]
        assert "ERROR partition=0 offset=1 reason=not-wire-format" in result.stderr
        assert "ERROR partition=0 offset=2 reason=truncated" in result.stderr
        assert "Processed a total of 4 messages (2 undecodable)" in result.stderr

        # One partition from an offset, without a group (like kafka-console-consumer --partition --offset).
        endpoints = ["--bootstrap-servers", stack.bootstrap_servers, "--registry-url", stack.registry_url]
        result = CliRunner().invoke(
            app, ["consume", "--topic", topic, "--partition", "0", "--offset", "2", "--max-messages", "2",
                  "--print-key", *endpoints],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert [json.loads(line)["offset"] for line in result.stdout.splitlines()] == [3]
        assert "ERROR partition=0 offset=2 reason=truncated" in result.stderr
        for bad, said in ((["--partition", "1"], "has 1 partitions"), (["--offset", "2"], "needs --partition"),
                          (["--partition", "0", "--offset", "x"], "is not an offset")):  # fmt: skip
            result = CliRunner().invoke(app, ["consume", "--topic", topic, "--max-messages", "1", *bad, *endpoints])
            assert result.exit_code != 0 and said in result.output, result.output
    finally:
        admin.delete_topics([topic])


def test_failed_deliveries_are_counted_and_never_called_delivered(
    stack: Endpoints, registry: SchemaRegistryClient, admin: AdminClient, unique: str
) -> None:
    """The sender hears of failures only: a topic that rejects every batch (max.message.bytes far
    below one batch) must show up as failed records, and delivered must count only the others."""
    count = 300
    settings = GeneratorSettings.with_overrides(
        seed=7, rate=0, count=count, topic=f"it-tx-{unique}", labels_topic=f"it-labels-{unique}", partitions=1
    )
    tiny = NewTopic(settings.topic, num_partitions=1, replication_factor=1, config={"max.message.bytes": "64"})
    for future in admin.create_topics([tiny]).values():
        future.result()
    try:
        sender = Sender(settings, stack.kafka, registry, admin)
        progress = sender.run(TransactionStream(stream_config(settings)), count=count, rate=0, report=lambda _: None)
        assert (progress.sent, progress.records.produced, progress.records.in_flight) == (count, 2 * count, 0)
        assert progress.records.failed == count  # every transaction record; the labels' topic takes them
        assert progress.records.delivered == count
        assert progress.records.last_error
    finally:
        admin.delete_topics([settings.topic, settings.labels_topic])

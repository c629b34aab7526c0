"""`fraudstream consume --print-key | fraudstream produce` round-trips a topic byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from services.kafka import check_broker, consumer_config, end_offsets, ensure_topics
from tests.conftest import Endpoints
from tests.integration.eos_support import ROOT

pytestmark = pytest.mark.integration

COUNT = 200


def _run(stack: Endpoints, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers, "SCHEMA_REGISTRY_URL": stack.registry_url}
    return subprocess.run([sys.executable, "-m", "services", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120, check=False)


def _raw(stack: Endpoints, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    consumer = Consumer(consumer_config(stack.kafka, f"fraudstream-produce-test-{topic}"))
    try:
        end = end_offsets(consumer, topic, [0])[0]
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out: list[tuple[bytes | None, bytes | None]] = []
        while len(out) < end:
            out += [(m.key(), m.value()) for m in consumer.consume(500, 1.0) if m.error() is None]
        return out
    finally:
        consumer.close()


def test_consume_then_produce_is_byte_for_byte(stack: Endpoints, unique: str) -> None:
    source, copy = f"produce-{unique}.transactions", f"produce-{unique}.copy"
    gen = _run(stack, "generate", "--count", str(COUNT), "--rate", "0", "--seed", "3", "--topic", source,
               "--labels-topic", f"{source}.labels", "--partitions", "1")
    assert gen.returncode == 0, gen.stdout + gen.stderr
    ensure_topics(check_broker(stack.kafka), [copy], partitions=1)
    lines = _run(stack, "consume", "--topic", source, "--from-beginning", "--print-key", "--print-headers",
                 "--max-messages", str(COUNT))
    assert lines.returncode == 0 and len(lines.stdout.splitlines()) == COUNT, lines.stderr
    sent = _run(stack, "produce", "--topic", copy, "--schema-file", str(ROOT / "schemas" / "transaction.avsc"),
                stdin=lines.stdout)
    assert sent.returncode == 0 and f"sent {COUNT} records" in sent.stderr, sent.stderr
    original = _raw(stack, source)
    assert len(original) == COUNT and _raw(stack, copy) == original  # same keys, same value bytes, same order


def test_a_bad_line_is_reported_and_not_sent(stack: Endpoints, unique: str) -> None:
    topic = f"produce-{unique}.bad"
    ensure_topics(check_broker(stack.kafka), [topic], partitions=1)
    good = ('{"transaction_id": "t1", "source_account": "A", "target_account": "B", "amount": "1.00", '
            '"currency": "EUR", "event_time": "2026-01-01T00:00:00Z"}')
    bad = good.replace('"1.00"', '"1,00"')
    proc = _run(stack, "produce", "--topic", topic, "--key-field", "source_account",
                "--schema-file", str(ROOT / "schemas" / "transaction.avsc"), stdin=f"{good}\n{bad}\n{good}\n")
    assert proc.returncode == 1 and "line 2: field amount: '1,00' is not a decimal number" in proc.stderr
    rows = _raw(stack, topic)
    assert [key for key, _value in rows] == [b"A"]  # the line before the bad one only

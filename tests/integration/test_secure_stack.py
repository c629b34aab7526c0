"""The pipeline on ``fraudstream stack up --secure``: SASL_SSL (SCRAM-SHA-512), ACLs, registry basic auth.

One secured stack per session (fixture ``secure_stack``), default topic names (it is fresh). The tests
run in file order: the pipeline first, then the refusals, then the log check over everything captured.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, Producer

from services.config import TOPICS
from services.evaluate.cli import drain
from services.kafka import check_broker, end_offsets, producer_config, registry_client, topic_partitions
from tests.conftest import SecureStack, free_port
from tests.integration.eos_support import ROOT, Detector, Topics, stateless_topology
from topology.serde.decoder import AvroDecoder

pytestmark = pytest.mark.integration

COUNT = 300
CAPTURED: list[str] = []  # every output of every process these tests ran (checked for secrets at the end)


def fraudstream(stack: SecureStack, *args: str, principal: str = "detector", stdin: str | None = None,
                **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``fraudstream ARGS`` as ``principal``; its output is kept for the secrets check."""
    proc = subprocess.run(
        [sys.executable, "-m", "services", *args], cwd=ROOT, env=stack.env(principal, **env), input=stdin,
        capture_output=True, text=True, timeout=180, check=False,
    )
    CAPTURED.append(proc.stdout + proc.stderr)
    return proc


def _topics() -> Topics:
    return Topics("secure", TOPICS.transactions, TOPICS.legit, TOPICS.fraud, TOPICS.dlq, "fraudstream-secure")


def test_pipeline_over_sasl_ssl_with_registry_basic_auth(
    secure_stack: SecureStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for step in (("schemas", "register"), ("generate", "--count", str(COUNT), "--rate", "0", "--seed", "5",
                                          "--partitions", "3", "--fraud", "large_amount=100")):
        proc = fraudstream(secure_stack, *step)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    t = _topics()
    topology = tmp_path / "topology.yaml"
    topology.write_text(stateless_topology(t))
    for name, value in secure_stack.env().items():
        monkeypatch.setenv(name, value)
    detector = Detector(secure_stack.settings.bootstrap_servers, secure_stack.settings.registry_url, topology,
                        t.application_id, "a", tmp_path / "detector.log")
    kafka = secure_stack.connection()
    try:
        decided: list[Message] = []
        deadline = time.monotonic() + 120
        while len(decided) < COUNT and time.monotonic() < deadline and detector.proc.poll() is None:
            time.sleep(1)
            decided = [m for topic in (t.legit, t.fraud)
                       for m in drain(kafka, topic, idle_timeout_s=5, missing_ok=True)]
        detector.signal(signal.SIGTERM)
        assert detector.wait() == 0, detector.output()[-3000:]
    finally:
        detector.kill()
        CAPTURED.append(detector.output())
    decoder = AvroDecoder(registry_client(kafka))
    ids = [decoder.decode(m.value())["transaction_id"] for m in decided]
    assert len(ids) == len(set(ids)) == COUNT, detector.output()[-3000:]  # exactly once: all, no duplicate

    consumed = fraudstream(secure_stack, "consume", "--topic", t.fraud, "--from-beginning", "--timeout", "5")
    assert consumed.returncode == 0, consumed.stderr
    fraud_ids = {json.loads(line)["transaction_id"] for line in consumed.stdout.splitlines()}
    assert len(fraud_ids) == sum(1 for m in decided if m.topic() == t.fraud) > 0
    report = fraudstream(secure_stack, "evaluate", "--json", "--alerts-topic", "")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["overall"]["tp"] > 0


def test_wrong_credentials_are_one_clear_line(secure_stack: SecureStack) -> None:
    kafka = fraudstream(secure_stack, "consume", "--topic", TOPICS.fraud, KAFKA_SASL_PASSWORD="not-the-password")
    registry = fraudstream(secure_stack, "consume", "--topic", TOPICS.fraud,
                           SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO="fraudstream:not-the-password")
    for proc, what in ((kafka, "Kafka broker"), (registry, "Schema Registry")):
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert what in lines[0] and "authentication failed" in lines[0] and "unreachable" not in lines[0]
    assert "not-the-password" not in kafka.stderr + registry.stderr


def test_reader_can_only_read_the_fraud_topic(secure_stack: SecureStack) -> None:
    admin = check_broker(secure_stack.connection("admin"))
    topics = [TOPICS.transactions, TOPICS.labels, TOPICS.legit, TOPICS.fraud, TOPICS.dlq]
    before = _ends(secure_stack, topics)

    errors: list[KafkaError] = []
    producer = Producer(producer_config(secure_stack.connection("reader"), error_cb=errors.append, **{
        "enable.idempotence": False, "message.timeout.ms": 10_000}))
    for topic in topics:
        producer.produce(topic, b"x", on_delivery=lambda err, _m: errors.append(err) if err else None)
    assert producer.flush(30) == 0
    assert errors and all("AUTHORIZATION" in err.name() for err in errors), errors
    assert _ends(secure_stack, topics) == before  # nothing written

    legit = fraudstream(secure_stack, "consume", "--topic", TOPICS.legit, principal="reader")
    assert legit.returncode == 2 and "not authorized to access topic 'streaming.transactions.legit'" in legit.stderr
    fraud = fraudstream(secure_stack, "consume", "--topic", TOPICS.fraud, "--from-beginning", "--max-messages", "1",
                        principal="reader")
    assert fraud.returncode == 0 and json.loads(fraud.stdout)["transaction_id"], fraud.stderr
    assert topic_partitions(admin, TOPICS.fraud) == 3


def test_dashboard_over_sasl_ssl_shows_the_decisions_and_the_detectors_lag(secure_stack: SecureStack) -> None:
    port = free_port()
    env = secure_stack.env("detector", FRAUDSTREAM_DASHBOARD_DETECTOR_GROUP=_topics().application_id)
    proc = subprocess.Popen(
        [sys.executable, "-m", "services", "dashboard", "--from-beginning", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    snapshot: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/snapshot", timeout=5) as r:
                    snapshot = json.loads(r.read())
            except OSError:
                pass
            group = (snapshot.get("health") or {}).get("group") or {}
            if snapshot.get("totals", {}).get("decisions") == COUNT and group.get("lag") is not None:
                break
            time.sleep(1)
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
        CAPTURED.append(output)
    totals = snapshot.get("totals", {})
    assert totals.get("decisions") == COUNT and totals["fraud"] > 0, (totals, output[-3000:])
    group = snapshot["health"]["group"]
    assert group["error"] is None and group["lag"] == 0, group  # the detector's group, read over SASL_SSL
    queue = snapshot["queue"]
    assert len(queue) == totals["fraud"] and all("fraud" in row["kinds"] and row["rules"] for row in queue)


def test_no_secret_in_any_captured_log(secure_stack: SecureStack) -> None:
    logs = [*CAPTURED, *(p.read_text(errors="replace") for p in (secure_stack.settings.data_dir / "run").glob("*"))]
    assert len(CAPTURED) >= 7
    for secret in secure_stack.secrets():
        assert not any(secret in text for text in logs)


def _ends(stack: SecureStack, topics: list[str]) -> dict[str, dict[int, int]]:
    from confluent_kafka import Consumer

    from services.kafka import consumer_config

    consumer = Consumer(consumer_config(stack.connection("admin"), "fraudstream-secure-test"))
    try:
        return {t: end_offsets(consumer, t, range(3)) for t in topics}
    finally:
        consumer.close()

"""Chaos on a stack of the test's own: the registry, then the broker, SIGKILLed for 30 s each mid-stream.

The generator sends fraud-scenario traffic at 1,000 tx/s; the detector runs fraud.yaml's windowed rules
(with its own graces) and the dashboard and the alerts consumer watch its decisions. While the registry
is down, records written with a schema the detector has not seen yet arrive, so its decoding needs the
registry and has to wait for it. Then the broker is SIGKILLed and, 30 s later, started again on its data.

Every process rides out both outages: none exits, each says once that an outage began and once that it
ended (the detector and the alerts consumer must say it for the broker), and no per-connection noise
reaches the logs. Afterwards every input is decided exactly once
(read_committed), the dashboard has shown every decision, the webhook got an alert for every fraud
decision, and each service stops cleanly (exit 0) when asked.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from confluent_kafka import Producer

from schemas import schema_text
from services.kafka import registry_client
from services.stack import LocalStack
from services.stack.process import Daemon
from tests.conftest import free_port
from tests.integration.eos_support import Detector, Service, Topics, connection, create_topics, read_all
from tests.integration.stateful_support import OutputCounter, decisions, stateful_topology
from topology.serde.decoder import AvroEncoder

pytestmark = pytest.mark.integration

# FRAUDSTREAM_CHAOS_OUTAGE_S=120 runs the same proof with 2-minute outages (by hand: the suite keeps 30 s).
OUTAGE_S = float(os.environ.get("FRAUDSTREAM_CHAOS_OUTAGE_S", "30"))
RATE = 1_000
COUNT = int(RATE * (2 * OUTAGE_S + 20))  # both outages fall inside the traffic
PARTITIONS = 3
LATE_SCHEMA = 20  # records with a schema registered before the registry outage, sent during it


class Webhook:
    """A webhook on 127.0.0.1 that accepts every post and keeps its text."""

    def __init__(self) -> None:
        texts: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                texts.append(json.loads(body)["text"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.texts = texts
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


def _crash(*daemons: Daemon) -> None:
    """SIGKILL each daemon's process group (a crash, no clean shutdown) and wait until it is gone."""
    for d in daemons:
        pid = d.pid()
        assert pid is not None, f"{d.name} is not running"
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(d.pid() is not None for d in daemons):
        assert time.monotonic() < deadline, "a crashed daemon did not go away"
        time.sleep(0.1)


def _late_schema_encoder(stack: LocalStack, subject: str) -> AvroEncoder:
    """The transaction schema plus an optional field (a backward-compatible v2), registered now."""
    schema = json.loads(schema_text("transaction"))
    schema["fields"].append({"name": "chaos_note", "type": ["null", "string"], "default": None})
    kafka = connection(stack.settings.bootstrap_servers, stack.settings.registry_url)
    return AvroEncoder(registry_client(kafka), json.dumps(schema), subject)


def _send_late_schema_records(bootstrap: str, topic: str, encoder: AvroEncoder) -> list[str]:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    ids = [f"late-schema-{i}" for i in range(LATE_SCHEMA)]
    now_ms = int(time.time() * 1000)
    for i, tx_id in enumerate(ids):
        account = f"LATE{i % 4}"
        record = {
            "transaction_id": tx_id, "source_account": account, "target_account": "MERCHANT-LATE",
            "amount": Decimal("12.50"), "currency": "EUR", "event_time": now_ms, "channel": "online",
            "country": "DE", "merchant_category": None, "chaos_note": "sent while the registry was down",
        }  # fmt: skip
        producer.produce(topic, encoder.encode(record), key=account.encode())
    assert producer.flush(30) == 0
    return ids


def _records_in(port: int) -> dict[str, float]:
    """The dashboard's ``fraudstream_records_in_total`` per topic (Prometheus text)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("fraudstream_records_in_total{"):
            labels, value = line.rsplit(" ", 1)
            topic = labels.split('topic="', 1)[1].split('"', 1)[0]
            found[topic] = found.get(topic, 0.0) + float(value)
    return found


def _posted(fraud: str, webhook: Webhook) -> set[tuple[int, int]]:
    """The (partition, offset) of every fraud decision the webhook got an alert for (an alert names both)."""
    return {(int(p), int(o)) for p, o in re.findall(rf"{re.escape(fraud)} (\d+)/(\d+)", "\n".join(webhook.texts))}


def _unalerted(decided: set[tuple[int, int]], fraud: str, webhook: Webhook) -> str:
    missing = sorted(decided - _posted(fraud, webhook))
    return f"{len(decided) - len(missing)} of {len(decided)} alerted; without an alert (partition, offset): {missing}"


def _wait(what: str | Callable[[], str], ok: Callable[[], bool], services: list[Service], timeout_s: float) -> None:
    """Wait until ``ok()`` is true; every service must stay up meanwhile (``what`` may be computed when it fails)."""
    deadline = time.monotonic() + timeout_s
    while not ok():
        gone = next((s for s in services if not s.alive()), None)
        if gone is not None or time.monotonic() >= deadline:
            said = what if isinstance(what, str) else what()
            assert gone is None, f"{gone.log.name} exited (rc {gone.proc.returncode}) {said}:\n{gone.output()[-3000:]}"
            raise AssertionError(f"not {said} in {timeout_s:.0f} s")
        time.sleep(0.5)


def test_every_service_rides_out_a_registry_and_a_broker_outage_exactly_once(
    own_stack: LocalStack, unique: str, tmp_path: Path, webhook: Webhook
) -> None:
    s = own_stack.settings
    bootstrap, registry_url = s.bootstrap_servers, s.registry_url
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SCHEMA_REGISTRY_URL": registry_url}
    t = Topics.make(unique)
    create_topics(bootstrap, [t.transactions, t.legit, t.fraud, t.dlq], PARTITIONS)
    late = _late_schema_encoder(own_stack, f"{t.transactions}-value")
    topology = tmp_path / "topology.yaml"
    topology.write_text(stateful_topology(t, fan_in_grace=None), encoding="utf-8")  # fraud.yaml's graces
    port = free_port()
    detector = Detector(bootstrap, registry_url, topology, t.application_id, "chaos", tmp_path / "detector.log")
    dashboard = Service(
        ["dashboard", "--port", str(port), "--from-beginning", "--legit-topic", t.legit, "--fraud-topic", t.fraud,
         "--alerts-topic", t.alerts], tmp_path / "dashboard.log", env, started="dashboard: http://",
    )  # fmt: skip
    alerts = Service(
        ["alerts", "--webhook", webhook.url, "--topic", t.fraud, "--group-id", f"alerts-{unique}",
         "--from-beginning", "--dead-letter-topic", ""], tmp_path / "alerts.log", env, started="alerts started",
    )  # fmt: skip
    generator = Service(
        ["generate", "--rate", str(RATE), "--count", str(COUNT), "--seed", "5", "--topic", t.transactions,
         "--labels-topic", f"{t.transactions}.labels", "--partitions", str(PARTITIONS)],
        tmp_path / "generator.log", env, started="generating ",
    )  # fmt: skip
    services: list[Service] = [detector, dashboard, alerts, generator]
    watching = [detector, dashboard, alerts]
    counter = OutputCounter(bootstrap, t.outputs, PARTITIONS)
    try:
        _wait("deciding", lambda: counter.poll(0.1) >= 5_000, services, 120)

        _crash(own_stack.registry.apicurio, own_stack.registry.proxy)
        late_ids = _send_late_schema_records(bootstrap, t.transactions, late)
        time.sleep(OUTAGE_S)
        for svc in services:
            assert svc.alive(), f"{svc.log.name} exited in the registry outage:\n{svc.output()[-3000:]}"
        own_stack.registry.start()
        own_stack.registry.wait_healthy(time.monotonic() + 120)
        _wait("past the late-schema records", lambda: detector.logged("the Schema Registry reachable again"),
              services, 60)  # fmt: skip

        _crash(own_stack.kafka.daemon)
        time.sleep(OUTAGE_S)
        for svc in services:
            assert svc.alive(), f"{svc.log.name} exited in the broker outage:\n{svc.output()[-3000:]}"
        restarted_at = datetime.fromtimestamp(time.time())  # local time, as the services' log lines
        own_stack.kafka.start()
        own_stack.kafka.wait_healthy(time.monotonic() + 120)

        _wait("done generating", lambda: not generator.alive(), watching, 240)
        assert generator.wait() == 0, generator.output()[-3000:]
        total = COUNT + LATE_SCHEMA
        _wait("deciding every transaction", lambda: counter.poll(0.1) >= total, watching, 240)
        _wait("showing every decision", lambda: sum(_records_in(port).get(x, 0) for x in (t.legit, t.fraud))
              >= total, watching, 60)  # fmt: skip
        # The alerts consumer rejoins its group after the broker outage and posts again what it could not commit.
        fraud_at = {(o.partition, o.offset) for o in read_all(bootstrap, (t.fraud,), "read_committed")}
        _wait(lambda: f"alerting every fraud decision ({_unalerted(fraud_at, t.fraud, webhook)}; alerts log:\n"
              f"{alerts.output()[-1500:]})",
              lambda: fraud_at <= _posted(t.fraud, webhook), watching, 120)  # fmt: skip
        shown = _records_in(port)
        assert (shown.get(t.legit, 0), shown.get(t.fraud, 0)) == (total - len(fraud_at), len(fraud_at)), shown
    finally:
        counter.close()
        for svc in services:
            if svc.alive():
                svc.signal(signal.SIGTERM)
        codes = {svc.log.name: svc.wait() for svc in services}
    assert codes == {svc.log.name: 0 for svc in services}, "\n".join(svc.output()[-2000:] for svc in services)

    inputs = {o.transaction_id() for o in read_all(bootstrap, (t.transactions,), "read_uncommitted")}
    assert len(inputs) == total and set(late_ids) <= inputs
    decided, seen = decisions(read_all(bootstrap, t.outputs, "read_committed"), t)
    assert set(decided) == inputs, f"missing {sorted(inputs - set(decided))[:5]}"
    assert max(seen.values()) == 1, f"decided twice: {[i for i, n in seen.items() if n > 1][:5]}"
    fraud = {i for i, (branch, _rules, _evidence) in decided.items() if branch == "fraud"}
    alerted = {i for i in fraud if any(f"tx {i} " in text for text in webhook.texts)}
    assert fraud and alerted == fraud, f"{len(fraud - alerted)} fraud decisions without an alert"

    # One line when each outage began and one when it ended, per process; no per-connection noise.
    for svc in services:
        log = svc.output()
        assert "librdkafka: FAIL" not in log and "|FAIL|" not in log, log[-3000:]  # per-connection lines
        began, ended = log.count("the Kafka broker unreachable"), log.count("the Kafka broker reachable again")
        assert began == ended and began <= 2, f"{svc.log.name}: {began} outage lines, {ended} ends:\n{log[-3000:]}"
    assert detector.output().count("the Kafka broker unreachable") >= 1
    # The alerts consumer's own client says so too (its error_cb; it reported nothing before).
    assert alerts.output().count("the Kafka broker unreachable") >= 1, alerts.output()[-3000:]
    # ... while the broker is away, not when it is back (a synchronous commit blocked its error callbacks).
    began_at = re.search(r"^(\S+ \S+) WARNING \S+: the Kafka broker unreachable", alerts.output(), re.MULTILINE)
    assert began_at and datetime.strptime(began_at[1], "%Y-%m-%d %H:%M:%S,%f") < restarted_at, alerts.output()[-3000:]
    assert detector.output().count("the Schema Registry unreachable") == 1

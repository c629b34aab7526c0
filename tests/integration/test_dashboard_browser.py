"""The dashboard in real headless Chromium, fed by real Avro records on the real broker.

The dashboard runs as its own process (``python -m services dashboard``) on unique
topics; records are produced in Kafka transactions (one committed, one aborted).
Checked in the browser: events arrive newest first, fraud rows are red and legit
rows green, the deciding rule is shown, a field holding markup shows as text
(and runs nothing), aborted records never show, an alerts topic created later is
picked up, and the page reconnects by itself after the server restarts.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient

from schemas import schema_text
from services.dashboard.screenshot import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import Endpoints
from topology.serde import AvroEncoder

pytestmark = [pytest.mark.integration, pytest.mark.browser]

XSS_SCRIPT = "<script>window.__xss = 1</script>"
XSS_IMG = '<img src=x onerror="window.__xss = 2">'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def transaction(i: int, **over: Any) -> dict[str, Any]:
    record = {
        "transaction_id": f"tx-{i:04d}", "source_account": f"AC{1000 + i}", "target_account": f"M-{i % 7}",
        "amount": Decimal(1000 + 37 * i) / 100, "currency": "EUR",
        "event_time": dt.datetime.now(dt.UTC), "channel": "card", "country": "DE", "merchant_category": "5411",
    }
    return {**record, **over}


class Topics:
    def __init__(self, unique: str) -> None:
        self.legit = f"test.dash.legit.{unique}"
        self.fraud = f"test.dash.fraud.{unique}"
        self.alerts = f"test.dash.alerts.{unique}"  # never created: the dashboard must tolerate it


class Feeder:
    """Produces Avro transactions with decision headers, in Kafka transactions."""

    def __init__(self, stack: Endpoints, topics: Topics, unique: str) -> None:
        registry = SchemaRegistryClient({"url": stack.registry_url})
        self.registry = registry
        self.topics = topics
        self.encoders = {
            t: AvroEncoder(registry, schema_text("transaction"), f"{t}-value") for t in (topics.legit, topics.fraud)
        }
        self.producer = Producer({"bootstrap.servers": stack.bootstrap_servers,
                                  "transactional.id": f"test-dash-{unique}"})
        self.producer.init_transactions(30)

    def send_alert(self, record: dict[str, Any]) -> None:
        encoder = AvroEncoder(self.registry, schema_text("transaction"), f"{self.topics.alerts}-value")
        self.producer.begin_transaction()
        self.producer.produce(self.topics.alerts, key=record["source_account"].encode(), value=encoder.encode(record))
        self.producer.commit_transaction(30)

    def send(self, records: list[tuple[bool, dict[str, Any], str]], *, commit: bool = True) -> None:
        self.producer.begin_transaction()
        for is_fraud, record, rules in records:
            topic = self.topics.fraud if is_fraud else self.topics.legit
            headers: list[tuple[str, str | bytes | None]] = [("fraudstream.branch", b"fraud" if is_fraud else b"legit"),
                       ("fraudstream.rules", rules.encode())]
            self.producer.produce(topic, key=record["source_account"].encode(),
                                  value=self.encoders[topic].encode(record), headers=headers)
        if commit:
            self.producer.commit_transaction(30)
        else:
            self.producer.abort_transaction(30)


class Dashboard:
    """``python -m services dashboard`` on a free port, as its own process."""

    def __init__(self, stack: Endpoints, topics: Topics, unique: str, port: int, log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers, "SCHEMA_REGISTRY_URL": stack.registry_url,
            "FRAUDSTREAM_DASHBOARD_LEGIT_TOPIC": topics.legit, "FRAUDSTREAM_DASHBOARD_FRAUD_TOPIC": topics.fraud,
            "FRAUDSTREAM_DASHBOARD_ALERTS_TOPIC": topics.alerts,
            "FRAUDSTREAM_DASHBOARD_GROUP_ID": f"test-dash-{unique}",
        }
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services", "dashboard", "--port", str(self.port), "--from-beginning"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"dashboard exited: {self.log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(self.url + "healthz", timeout=2) as resp:
                    health = json.load(resp)
                    if resp.status == 200:
                        assert self.topics_missing(health) == [self.env["FRAUDSTREAM_DASHBOARD_ALERTS_TOPIC"]] \
                            or health["kafka"]["missing_topics"] == []
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"dashboard not healthy within 60 s: {self.log.read_text()[-3000:]}")

    @staticmethod
    def topics_missing(health: dict[str, Any]) -> list[str]:
        return list(health["kafka"]["missing_topics"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def topics(stack: Endpoints, unique: str) -> Iterator[Topics]:
    t = Topics(unique)
    admin = AdminClient({"bootstrap.servers": stack.bootstrap_servers})
    for future in admin.create_topics([NewTopic(t.legit, 2, 1), NewTopic(t.fraud, 2, 1)]).values():
        future.result(30)
    yield t
    existing = admin.list_topics(timeout=10).topics
    doomed = [name for name in (t.legit, t.fraud, t.alerts) if name in existing]
    for future in admin.delete_topics(doomed).values():
        future.result(30)


def rgb(css: str) -> tuple[int, int, int]:
    parts = css[css.index("(") + 1 : css.index(")")].split(",")
    r, g, b = (int(float(p)) for p in parts[:3])
    return r, g, b


def test_dashboard_in_chromium(stack: Endpoints, topics: Topics, unique: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `make browser-deps`"
    feeder = Feeder(stack, topics, unique)
    committed = [
        (False, transaction(1), ""),
        (True, transaction(2, amount=Decimal("9800.00")), "big_amount@1"),
        (False, transaction(3, merchant_category=XSS_SCRIPT, target_account=XSS_IMG), ""),
        (True, transaction(4, country="NG"), "night_foreign@2,velocity@1"),
        (False, transaction(5), ""),
    ]
    feeder.send(committed)
    feeder.send([(True, transaction(99, transaction_id="ABORTED-1"), "big_amount@1")], commit=False)

    dashboard = Dashboard(stack, topics, unique, free_port(), tmp_path / "dashboard.log")
    dashboard.start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                # bypass_csp: the page's CSP would also stop injected script; switched off here so the test
                # proves the escaping itself (and so Playwright may evaluate its wait conditions).
                page = browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(dashboard.url)
                page.wait_for_function("document.querySelectorAll('#rows tr').length >= 5", timeout=30_000)

                # Fraud rows are red, legit rows green.
                fraud_rows = page.locator("#rows tr.fraud")
                legit_rows = page.locator("#rows tr.legit")
                assert fraud_rows.count() == 2 and legit_rows.count() == 3
                r, g, b = rgb(fraud_rows.first.evaluate("e => getComputedStyle(e).backgroundColor"))
                assert r > g and r > b, (r, g, b)
                r, g, b = rgb(legit_rows.first.evaluate("e => getComputedStyle(e).backgroundColor"))
                assert g > r and g > b, (r, g, b)
                assert page.locator("#rows tr.fraud td.decision").first.text_content() == "fraud"

                # The rule that decided is shown; hits per rule are counted.
                rules_text = page.locator("#rows tr.fraud td.rule").all_text_contents()
                assert sorted(rules_text) == ["big_amount@1", "night_foreign@2, velocity@1"]
                assert "big_amount@1" in (page.locator("#rules").text_content() or "")
                assert page.locator("#c-fraud").text_content() == "2"
                assert page.locator("#c-legit").text_content() == "3"

                # Markup in a field is text: shown literally, nothing ran, no element was created.
                row = page.locator("#rows tr", has_text="tx-0003")
                assert row.locator("td.mcc").text_content() == XSS_SCRIPT
                assert row.locator("td.to").text_content() == XSS_IMG
                assert page.evaluate("typeof window.__xss") == "undefined"
                assert page.locator("#rows script, #rows img").count() == 0

                # Only committed decisions are shown (read_committed).
                assert "ABORTED-1" not in (page.locator("#rows").text_content() or "")

                # A decision committed while the page is open arrives, on top.
                feeder.send([(True, transaction(6, transaction_id="LIVE-6"), "big_amount@1")])
                page.wait_for_function(
                    "document.querySelector('#rows tr td.txid').textContent === 'LIVE-6'", timeout=30_000
                )
                assert page.locator("#rows tr").first.get_attribute("class") == "fraud"

                # The alerts topic did not exist at start; once created, its records show up too.
                admin = AdminClient({"bootstrap.servers": stack.bootstrap_servers})
                admin.create_topics([NewTopic(topics.alerts, 1, 1)])[topics.alerts].result(30)
                feeder.send_alert(transaction(7, transaction_id="ALERT-7"))
                page.wait_for_function("document.querySelector('#rows tr.alert td.txid') !== null", timeout=60_000)
                assert page.locator("#rows tr.alert td.txid").first.text_content() == "ALERT-7"
                page.wait_for_function("document.getElementById('c-alerts').textContent === '1'", timeout=10_000)

                # The server restarts: the page reconnects by itself and shows the decisions again.
                dashboard.stop()
                page.wait_for_function("document.getElementById('status').textContent !== 'live'",
                                       timeout=30_000)
                dashboard.start()
                page.wait_for_function("document.getElementById('status').textContent === 'live'",
                                       timeout=30_000)
                page.wait_for_function("document.querySelectorAll('#rows tr').length >= 6", timeout=30_000)
                # Counters come with the periodic stats event, which may trail the rows after a reconnect.
                page.wait_for_function("document.getElementById('c-fraud').textContent === '3'", timeout=30_000)
                assert page.locator("#c-fraud").text_content() == "3"

                shot = tmp_path / "dashboard.png"
                page.screenshot(path=str(shot))
                assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
                assert errors == []
            finally:
                browser.close()
    finally:
        dashboard.stop()

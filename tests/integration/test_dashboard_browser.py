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
import subprocess
import sys
import time
import urllib.request
import uuid
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
from services.detector import FRAUD_TOPOLOGY
from tests.conftest import Endpoints, free_port
from topology.serde.decoder import AvroEncoder

pytestmark = [pytest.mark.integration, pytest.mark.browser]

XSS_SCRIPT = "<script>window.__xss = 1</script>"
XSS_IMG = '<img src=x onerror="window.__xss = 2">'


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
        self.dlq = f"test.dash.dlq.{unique}"


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

    def __init__(self, stack: Endpoints, topics: Topics, unique: str, port: int, log: Path,
                 **env: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers, "SCHEMA_REGISTRY_URL": stack.registry_url,
            "FRAUDSTREAM_DASHBOARD_LEGIT_TOPIC": topics.legit, "FRAUDSTREAM_DASHBOARD_FRAUD_TOPIC": topics.fraud,
            "FRAUDSTREAM_DASHBOARD_ALERTS_TOPIC": topics.alerts, "FRAUDSTREAM_DASHBOARD_DLQ_TOPIC": topics.dlq,
            "FRAUDSTREAM_DASHBOARD_GROUP_ID": f"test-dash-{unique}",
            # The shared broker's canonical rules topic is another test's business.
            "FRAUDSTREAM_DASHBOARD_RULES_TOPIC": "",
            **{f"FRAUDSTREAM_DASHBOARD_{name.upper()}": value for name, value in env.items()},
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
    for future in admin.create_topics([NewTopic(t.legit, 2, 1), NewTopic(t.fraud, 2, 1),
                                       NewTopic(t.dlq, 1, 1)]).values():
        future.result(30)
    yield t
    existing = admin.list_topics(timeout=10).topics
    doomed = [name for name in (t.legit, t.fraud, t.alerts, t.dlq) if name in existing]
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


# ---------------------------------------------------------------- the analyst's view, on the real detector
#
# One detector (``python -m services detect`` on services/detector/fraud.yaml, its topics renamed) and one
# dashboard process serve all the tests below: the traffic is produced once, and each test opens its
# own page. The traffic, in order: a velocity burst (ten payments from one account in a minute, the
# tenth decided by velocity@3 naming the nine before it), a large online payment (large-amount@2),
# FILLER legit payments (so the first alerts are long gone from the live list), then a record that is
# not Avro (dead-lettered), a legit payment and a fraud one whose fields hold markup. The detector's
# output order is not its input's (the fan-in rule repartitions by target), so phases are waited for.

FILLER = 300
FILLER_ACCOUNTS = 60  # five payments of at most 60.00 per account: below every velocity threshold


class Analyst:
    """What the shared detector and dashboard were fed, and where they run."""

    def __init__(self, unique: str) -> None:
        self.unique = unique
        self.topics = Topics(unique)
        self.input = f"test.dash.input.{unique}"
        self.app_id = f"test-dash-detector-{unique}"
        self.burst_account = f"VEL-{unique}"
        self.burst = [f"vel-{unique}-{i}" for i in range(10)]
        self.big = f"big-{unique}"
        self.xss = f"xss-{unique}"
        self.dashboard: Dashboard | None = None
        self.registry: SchemaRegistryClient | None = None
        self.bootstrap = ""

    def topology(self) -> str:
        """services/detector/fraud.yaml with this run's topics."""
        text = FRAUD_TOPOLOGY.read_text()
        t = self.topics
        for old, new in (("topology: fraud-detector", f"topology: dash-{self.unique}"),
                         ("queueing.transactions", self.input), ("streaming.transactions.dlq", t.dlq),
                         ("streaming.transactions.alerts", t.alerts), ("streaming.transactions.fraud", t.fraud),
                         ("streaming.transactions.legit", t.legit)):
            assert old in text, old
            text = text.replace(old, new)
        return text

    def alerting(self) -> list[tuple[str, dict[str, Any] | bytes]]:
        """The first traffic: the burst and the large payment."""
        start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
        out: list[tuple[str, dict[str, Any] | bytes]] = [
            (self.burst_account, transaction(0, transaction_id=tid, source_account=self.burst_account,
                                             amount=Decimal("20.00"), event_time=start + dt.timedelta(seconds=5 * i)))
            for i, tid in enumerate(self.burst)
        ]
        out.append((f"BIG-{self.unique}", transaction(0, transaction_id=self.big, source_account=f"BIG-{self.unique}",
                                                      amount=Decimal("950.00"), channel="online")))
        return out

    def filler(self) -> list[tuple[str, dict[str, Any] | bytes]]:
        """Legit payments of FILLER_ACCOUNTS accounts."""
        return [(f"L{i % FILLER_ACCOUNTS}-{self.unique}", transaction(
            i, transaction_id=f"fill-{self.unique}-{i}", source_account=f"L{i % FILLER_ACCOUNTS}-{self.unique}",
            amount=Decimal(1000 + 71 * (i % 50)) / 100)) for i in range(FILLER)]

    def markup(self) -> list[tuple[str, dict[str, Any] | bytes]]:
        """A poison value, then a legit and a fraud payment of an account named with markup, its fields
        holding markup too."""
        over = {"source_account": XSS_SCRIPT, "target_account": XSS_IMG, "merchant_category": XSS_SCRIPT}
        return [("POISON", b"not avro at all"),
                (XSS_SCRIPT, transaction(1, transaction_id=f"xss-legit-{self.unique}", **over)),
                (XSS_SCRIPT, transaction(2, transaction_id=self.xss, amount=Decimal("990.00"), channel="online",
                                         **over))]

    def produce(self, records: list[tuple[str, dict[str, Any] | bytes]]) -> None:
        assert self.registry is not None
        encoder = AvroEncoder(self.registry, schema_text("transaction"), f"{self.input}-value")
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True})
        for key, value in records:
            payload = value if isinstance(value, bytes) else encoder.encode(value)
            producer.produce(self.input, key=key.encode(), value=payload)
        assert producer.flush(30) == 0

    def snapshot(self) -> dict[str, Any]:
        assert self.dashboard is not None
        with urllib.request.urlopen(self.dashboard.url + "api/snapshot", timeout=10) as resp:
            return dict(json.load(resp))

    def wait_for(self, decisions: int, dead_letters: int) -> None:
        """Until the dashboard has seen this many decisions and dead letters (fails after 120 s)."""
        deadline = time.monotonic() + 120
        while True:
            totals = self.snapshot()["totals"]
            if totals["decisions"] >= decisions and totals["dead_letters"] >= dead_letters:
                return
            assert time.monotonic() < deadline, f"dashboard saw {totals}, expected {decisions} decisions"
            time.sleep(0.5)


@pytest.fixture(scope="module")
def analyst(stack: Endpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Analyst]:
    from tests.integration.eos_support import Detector

    a = Analyst(uuid.uuid4().hex[:10])
    a.bootstrap, a.registry = stack.bootstrap_servers, SchemaRegistryClient({"url": stack.registry_url})
    t = a.topics
    admin = AdminClient({"bootstrap.servers": stack.bootstrap_servers})
    names = [(a.input, 2), (t.legit, 2), (t.fraud, 2), (t.alerts, 1), (t.dlq, 1)]
    for future in admin.create_topics([NewTopic(n, p, 1) for n, p in names]).values():
        future.result(30)
    tmp = tmp_path_factory.mktemp("analyst")
    topology = tmp / "topology.yaml"
    topology.write_text(a.topology())
    detector = Detector(stack.bootstrap_servers, stack.registry_url, topology, a.app_id, "i1", tmp / "detector.log")
    a.dashboard = Dashboard(stack, t, a.unique, free_port(), tmp / "dashboard.log", topology_file=str(topology),
                            detector_group=a.app_id, probe_interval_s="1")
    try:
        a.dashboard.start()
        a.produce(a.alerting())
        a.wait_for(decisions=len(a.burst) + 1, dead_letters=0)
        a.produce(a.filler())
        a.wait_for(decisions=len(a.burst) + 1 + FILLER, dead_letters=0)
        a.produce(a.markup())
        a.wait_for(decisions=len(a.burst) + 3 + FILLER, dead_letters=1)
        yield a
    finally:
        a.dashboard.stop()
        detector.kill()
        existing = admin.list_topics(timeout=10).topics
        doomed = [n for n in existing if a.unique in n]
        for future in admin.delete_topics(doomed).values():
            future.result(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `make browser-deps`"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, analyst: Analyst) -> Iterator[Any]:
    """A new page on the shared dashboard, once its snapshot is drawn (CSP bypassed as above);
    the test fails if the page raised a JavaScript error."""
    assert analyst.dashboard is not None
    p = browser.new_page(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.goto(analyst.dashboard.url)
    p.wait_for_function("document.querySelectorAll('#queue-rows tr').length >= 3", timeout=30_000)
    yield p
    p.close()
    assert errors == []


def texts(page: Any, selector: str) -> list[str]:
    return [t or "" for t in page.locator(selector).all_text_contents()]


def test_queue_holds_an_alert_long_gone_from_the_live_list(page: Any, analyst: Analyst) -> None:
    queue = page.get_by_test_id("alerts-queue")
    # The live list holds the newest 200; the large payment came 300 decisions before them.
    assert page.locator("#rows tr").count() == 200
    assert analyst.big not in (page.locator("#rows").text_content() or "")
    row = queue.locator("tr", has_text=analyst.big)
    assert row.count() == 1
    assert row.locator("td.rule").text_content() == "large-amount@2"
    assert row.locator("td.amount").text_content() == "950.00 EUR"
    assert row.locator("td.from").text_content() == f"BIG-{analyst.unique}"
    # Newest first: the markup fraud, sent last; the other two came from two partitions, in either order.
    queued = texts(page, "#queue-rows td.txid")
    assert queued[0] == analyst.xss and sorted(queued[1:]) == sorted([analyst.big, analyst.burst[-1]])


def test_detail_shows_rule_evidence_and_related_transactions_of_a_velocity_burst(
    page: Any, analyst: Analyst
) -> None:
    page.locator("#queue-rows tr", has_text=analyst.burst[-1]).click()
    detail = page.get_by_test_id("alert-detail")
    detail.locator(".evidence li").first.wait_for(timeout=10_000)
    rules = detail.locator(".rules-fired li").first.text_content() or ""
    assert rules.startswith("velocity@3 A burst of spending from one account within three minutes")
    assert "version 3 from topology file" in rules
    evidence = texts(page, "#alert-detail .evidence li")
    assert "velocity@3: count 10 \u2265 10 in sliding 3m" in evidence, evidence
    assert "velocity@3: sum 200.00 \u2265 1200 in sliding 3m" in evidence, evidence
    related = detail.locator(".detail-section", has_text="Related transactions")
    related_ids = related.locator("td.txid").all_text_contents()
    assert related_ids and set(related_ids) <= set(analyst.burst[:-1]), related_ids
    assert related.locator("tr.legit").count() >= 1  # a row the dashboard saw, not only an id
    recent = detail.locator(".detail-section", has_text="Recent transactions")
    assert set(recent.locator("td.txid").all_text_contents()) == set(analyst.burst)


def test_search_by_account_shows_only_that_account(page: Any, analyst: Analyst) -> None:
    account = f"L7-{analyst.unique}"
    page.get_by_test_id("search").fill(account)
    page.wait_for_function(
        f"[...document.querySelectorAll('#rows td.from')].every(td => td.textContent === {json.dumps(account)})",
        timeout=10_000)
    sources = texts(page, "#rows td.from")
    assert sources and set(sources) == {account}
    assert page.locator("#queue-rows tr").count() == 0  # that account has no alert
    page.get_by_test_id("search").fill(analyst.burst_account)
    page.wait_for_function("document.querySelectorAll('#queue-rows tr').length === 1", timeout=10_000)
    assert texts(page, "#queue-rows td.from") == [analyst.burst_account]
    # The decision and rule filters narrow the same lists.
    page.get_by_test_id("search").fill("")
    page.get_by_test_id("filter-rule").select_option("large-amount")
    page.wait_for_function("document.querySelectorAll('#queue-rows tr').length === 2", timeout=10_000)
    assert set(texts(page, "#queue-rows td.txid")) == {analyst.big, analyst.xss}
    page.get_by_test_id("filter-rule").select_option("")
    page.get_by_test_id("filter-decision").select_option("dead-letter")
    page.wait_for_function("document.querySelectorAll('#rows tr').length === 1", timeout=10_000)
    assert page.locator("#rows tr.dead-letter td.rule").text_content() == "not-wire-format"
    assert page.locator("#queue-rows tr").count() == 0


def test_pause_freezes_the_list_and_resume_catches_up(page: Any, analyst: Analyst) -> None:
    page.get_by_test_id("pause").click()
    frozen = texts(page, "#rows td.txid")
    late = [f"late-{analyst.unique}-{i}" for i in range(5)]
    analyst.produce([(f"LATE-{analyst.unique}", transaction(i, transaction_id=tid,
                                                            source_account=f"LATE-{analyst.unique}"))
                     for i, tid in enumerate(late)])
    # The stream goes on: the page counts what arrives, and the list stays as it was.
    page.wait_for_function(
        "document.querySelector('[data-testid=pause-status]').textContent === 'paused \u00b7 5 arrived since'",
        timeout=60_000)
    assert texts(page, "#rows td.txid") == frozen
    page.get_by_test_id("pause").click()
    page.wait_for_function(
        f"document.querySelector('#rows td.txid').textContent.startsWith('late-{analyst.unique}')", timeout=10_000)
    assert sorted(texts(page, "#rows td.txid")[:5]) == late  # in the detector's output order
    assert texts(page, "#rows td.txid")[5:] == frozen[: len(frozen) - 5]
    assert page.get_by_test_id("pause-status").text_content() == "caught up \u00b7 5 arrived while paused"


def test_dead_letter_shows_in_the_health_panel_with_its_reason(page: Any, analyst: Analyst) -> None:
    dead = page.get_by_test_id("dead-letters")
    assert dead.locator("#dead-reasons li", has_text="not-wire-format").locator(".v").text_content() == "1"
    row = dead.locator("#dead-rows tr").first
    assert row.locator("td.reason").text_content() == "not-wire-format"
    assert row.locator("td.class").text_content() == "DecodeError"
    # The poison record was produced after the burst and the large payment, on the input topic.
    assert (row.locator("td.where").text_content() or "").startswith(f"{analyst.input} ")
    # The detector's group, asked by the AdminClient: one member, no error; latency and version observed.
    health = page.get_by_test_id("health")
    page.wait_for_function("document.getElementById('lag').textContent.includes('STABLE')", timeout=30_000)
    lag = dict(zip(texts(page, "#lag .k"), texts(page, "#lag .v"), strict=True))
    assert lag["group"] == analyst.app_id and lag["members"] == "1" and "error" not in lag, lag
    assert lag["total lag"].isdigit()
    latency = dict(zip(texts(page, "#latency .k"), texts(page, "#latency .v"), strict=True))
    assert latency["p50"].endswith(" ms") and latency["p99"].endswith(" ms"), latency
    detectors = health.locator("#detectors").text_content() or ""
    assert "member " in detectors and "records, last" in detectors, detectors


def test_markup_shows_as_text_everywhere(page: Any, analyst: Analyst) -> None:
    live = page.locator("#rows tr.fraud", has_text=analyst.xss)
    assert live.locator("td.from").text_content() == XSS_SCRIPT
    assert live.locator("td.to").text_content() == XSS_IMG
    queued = page.locator("#queue-rows tr", has_text=analyst.xss)
    assert queued.locator("td.from").text_content() == XSS_SCRIPT
    assert queued.locator("td.to").text_content() == XSS_IMG
    queued.click()
    detail = page.get_by_test_id("alert-detail")
    detail.locator(".detail-section", has_text="Recent transactions").locator("tr.legit").first.wait_for(
        timeout=10_000)
    assert (detail.locator(".detail-title").text_content() or "").endswith(f"{XSS_SCRIPT} \u2192 {XSS_IMG}")
    assert detail.locator("h3", has_text="Recent transactions of").text_content() == \
        f"Recent transactions of {XSS_SCRIPT}"
    assert set(texts(page, "#alert-detail td.from")) == {XSS_SCRIPT}
    assert set(texts(page, "#alert-detail td.to")) == {XSS_IMG}
    page.get_by_test_id("search").fill(XSS_SCRIPT)  # its legit and fraud decisions, and its alert
    page.wait_for_function("document.querySelectorAll('#rows tr').length === 3", timeout=10_000)
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("main script, main img").count() == 0

"""The alerts consumer on the real broker, posting to a local webhook on 127.0.0.1 that fails, then succeeds."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient

from schemas import schema_text
from services.alerts.service import AlertService, DeadLetters, alerts_consumer_config
from services.alerts.webhook import RetryPolicy, WebhookPoster
from services.metrics import Metrics
from tests.conftest import Endpoints
from topology.serde.decoder import AvroDecoder, AvroEncoder

pytestmark = pytest.mark.integration

FAST = RetryPolicy(max_attempts=4, backoff_initial_s=0.05, backoff_max_s=0.2, give_up_after_s=20,
                   request_timeout_s=5)


def produce_fraud(stack: Endpoints, topic: str, unique: str, ids: list[str], aborted: list[str]) -> None:
    encoder = AvroEncoder(SchemaRegistryClient({"url": stack.registry_url}), schema_text("transaction"),
                          f"{topic}-value")
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "transactional.id": f"test-alerts-{unique}"})
    producer.init_transactions(30)
    for batch, commit in ((ids, True), (aborted, False)):
        producer.begin_transaction()
        for i, tx_id in enumerate(batch):
            record = {
                "transaction_id": tx_id, "source_account": f"AC{i}", "target_account": "<!channel>",
                "amount": Decimal("4999.99"), "currency": "EUR", "event_time": dt.datetime.now(dt.UTC),
                "channel": "online", "country": "NG", "merchant_category": None,
            }
            producer.produce(topic, key=f"AC{i}".encode(), value=encoder.encode(record),
                             headers=[("fraudstream.branch", b"fraud"), ("fraudstream.rules", b"big_amount@1")])
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)


def left_for_group(stack: Endpoints, topic: str, group: str) -> int:
    """Committed records the group would still get (0 when every alert's offset was committed)."""
    consumer = Consumer({"bootstrap.servers": stack.bootstrap_servers, "group.id": group,
                         "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    try:
        consumer.subscribe([topic])
        left, quiet_polls = 0, 0
        while quiet_polls < 6 or not consumer.assignment():
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                quiet_polls += 1
            else:
                left += 1
            if quiet_polls > 60:
                break
        return left
    finally:
        consumer.close()


async def run_service(stack: Endpoints, topic: str, group: str, hook_app: web.Application, expected: int,
                      dead_letter_topic: str | None) -> Metrics:
    metrics = Metrics("alerts")
    async with TestServer(hook_app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        service = AlertService(
            alerts_consumer_config(stack.kafka, group, from_beginning=True), topic,
            AvroDecoder(SchemaRegistryClient({"url": stack.registry_url})).decode,
            WebhookPoster(session, str(server.make_url("/hook")), FAST, metrics),
            DeadLetters(stack.kafka, dead_letter_topic), metrics,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        try:
            for _ in range(600):
                if service.handled >= expected or task.done():
                    break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=30)
        assert service.handled == expected
    return metrics


def test_flaky_webhook_gets_every_committed_decision_once(stack: Endpoints, unique: str) -> None:
    topic, group = f"test.alerts.fraud.{unique}", f"test-alerts-{unique}"
    admin = AdminClient({"bootstrap.servers": stack.bootstrap_servers})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    ids = [f"fraud-{i}" for i in range(5)]
    produce_fraud(stack, topic, unique, ids, aborted=["ABORTED"])
    received: list[dict[str, Any]] = []
    failures_left = [2]

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        if failures_left[0] > 0:
            failures_left[0] -= 1
            return web.Response(status=503)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    metrics = asyncio.run(run_service(stack, topic, group, app, expected=5, dead_letter_topic=None))

    texts = [body["text"] for body in received]
    delivered = {i for i in ids if any(f"tx {i} " in t for t in texts)}
    assert delivered == set(ids)
    assert len(texts) == 5 + 2  # two failed attempts, then each alert delivered once
    assert not any("ABORTED" in t for t in texts)  # read_committed
    assert all("&lt;!channel&gt;" in t and "<!channel>" not in t for t in texts)
    assert metrics.registry.get_sample_value("fraudstream_alerts_posted_total") == 5
    assert left_for_group(stack, topic, group) == 0  # every offset committed after its alert


def test_dead_webhook_dead_letters_and_moves_on(stack: Endpoints, unique: str) -> None:
    topic, dlq, group = f"test.alerts.fraud.{unique}", f"test.alerts.dlq.{unique}", f"test-alerts-{unique}"
    admin = AdminClient({"bootstrap.servers": stack.bootstrap_servers})
    for future in admin.create_topics([NewTopic(topic, 1, 1), NewTopic(dlq, 1, 1)]).values():
        future.result(30)
    ids = ["dead-0", "dead-1", "dead-2"]
    produce_fraud(stack, topic, unique, ids, aborted=[])
    attempts: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        attempts.append(1)
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/hook", hook)
    metrics = asyncio.run(run_service(stack, topic, group, app, expected=3, dead_letter_topic=dlq))
    assert len(attempts) == 3 * FAST.max_attempts
    assert metrics.registry.get_sample_value("fraudstream_alerts_dead_lettered_total") == 3

    consumer = Consumer({"bootstrap.servers": stack.bootstrap_servers, "group.id": f"{group}-check",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([dlq])
    got = []
    for _ in range(60):
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append(msg)
        if len(got) == 3:
            break
    consumer.close()
    assert len(got) == 3
    headers = dict(got[0].headers() or [])
    assert headers["error.class"] == b"WebhookGaveUp"
    assert headers["source.topic"] == topic.encode() and headers["source.offset"] == b"0"
    assert headers["error.attempts"] == str(FAST.max_attempts).encode()
    assert headers["error.reason"] == b"webhook-gave-up"
    assert headers["fraudstream.rules"] == b"big_amount@1"  # original headers kept
    assert left_for_group(stack, topic, group) == 0  # committed after dead-lettering: nothing blocks

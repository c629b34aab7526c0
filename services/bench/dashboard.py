"""``fraudstream bench dashboard``: how many decisions per second the dashboard's feed takes in.

Produces N Avro transactions (committed, with decision headers) to two fresh topics, then
times the dashboard's own KafkaFeed (AIOConsumer, decode on its executor, Hub fan-out to
one never-reading browser) from start until it has published all N. Prints the figures,
deletes its topics. Needs the broker and registry of KAFKA_BOOTSTRAP_SERVERS / SCHEMA_REGISTRY_URL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from decimal import Decimal
from typing import Any

from confluent_kafka import Producer

from schemas import schema_text
from services.config import KafkaSettings
from services.dashboard.feed import KafkaFeed, feed_config
from services.dashboard.hub import Hub, TopicRoles
from services.kafka import check_broker, ensure_topics, producer_config, registry_client
from services.metrics import Metrics
from topology.serde.decoder import AvroDecoder, AvroEncoder


def produce(kafka: KafkaSettings, roles: TopicRoles, n: int) -> float:
    """Write ``n`` decisions (1 in 50 fraud) in transactions of 1,000; seconds taken."""
    registry = registry_client(kafka)
    encoders = {t: AvroEncoder(registry, schema_text("transaction"), f"{t}-value") for t in (roles.legit, roles.fraud)}
    txn_id = f"bench-dashboard-{uuid.uuid4().hex[:8]}"
    producer = Producer(producer_config(kafka, **{"linger.ms": 20, "transactional.id": txn_id}))
    producer.init_transactions(30)
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    for start in range(0, n, 1000):
        producer.begin_transaction()
        for i in range(start, min(n, start + 1000)):
            fraud = i % 50 == 0
            topic = roles.fraud if fraud else roles.legit
            record: dict[str, Any] = {"transaction_id": f"{i:032x}", "source_account": f"AC{i % 5000:08d}",
                      "target_account": f"MER{i % 700:06d}", "amount": Decimal(i % 100_000) / 100,
                      "currency": "EUR", "event_time": now, "channel": "card", "country": "DE",
                      "merchant_category": "5411"}
            headers: list[tuple[str, str | bytes | None]] = [
                ("fraudstream.branch", b"fraud" if fraud else b"legit"),
                ("fraudstream.rules", b"large-amount@1" if fraud else b""),
            ]
            producer.produce(topic, key=record["source_account"].encode(), value=encoders[topic].encode(record),
                             headers=headers)
            producer.poll(0)
        producer.commit_transaction(60)
    return time.perf_counter() - started


async def consume(kafka: KafkaSettings, roles: TopicRoles, n: int) -> tuple[float, Hub, float]:
    """Seconds until the feed has published ``n`` events to the hub, and the worst event-loop stall (s)."""
    metrics = Metrics("dashboard-bench")
    hub = Hub(recent=200, client_buffer=1000, history_s=300, metrics=metrics)
    hub.subscribe()  # one browser that never reads: its buffer drops, the feed must not slow down
    decoder = AvroDecoder(registry_client(kafka))
    config = feed_config(kafka, f"bench-dashboard-{uuid.uuid4().hex[:8]}", from_beginning=True)
    feed = KafkaFeed(config, roles, decoder.decode, hub, metrics)
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(feed.run(stop))
    worst_stall = 0.0
    while hub.totals.legit + hub.totals.fraud < n and not task.done():
        before = time.perf_counter()
        await asyncio.sleep(0.01)  # how late this wakes up = how long something blocked the loop
        worst_stall = max(worst_stall, time.perf_counter() - before - 0.01)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    return elapsed, hub, worst_stall


def run_dashboard_bench(records: int) -> int:
    """Produce ``records`` decisions, then time the dashboard's feed taking them in; print the figures."""
    kafka = KafkaSettings()
    suffix = uuid.uuid4().hex[:8]
    roles = TopicRoles(f"bench.dash.legit.{suffix}", f"bench.dash.fraud.{suffix}", f"bench.dash.alerts.{suffix}")
    admin = check_broker(kafka)
    ensure_topics(admin, [roles.legit, roles.fraud], partitions=3, timeout_s=30)
    try:
        produced_s = produce(kafka, roles, records)
        consumed_s, hub, stall_s = asyncio.run(consume(kafka, roles, records))
    finally:
        for future in admin.delete_topics([roles.legit, roles.fraud]).values():
            future.result(30)
    seen = hub.totals.legit + hub.totals.fraud
    print(f"produced {records:,} decisions in {produced_s:.2f} s ({records / produced_s:,.0f}/s)")
    print(f"dashboard feed took in {seen:,} decisions in {consumed_s:.2f} s ({seen / consumed_s:,.0f}/s) "
          f"incl. consumer start and group join; fraud {hub.totals.fraud:,}, "
          f"dropped for a browser that never reads {hub.totals.dropped:,}")
    print(f"worst event-loop stall meanwhile {stall_s * 1000:.1f} ms (Kafka polls and decoding run on the executor)")
    return 0

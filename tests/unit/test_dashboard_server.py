"""services.dashboard.server over real HTTP on 127.0.0.1 (no Kafka: events are published to the hub directly)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from services.dashboard.hub import Hub, TopicRoles, make_event
from services.dashboard.server import create_app
from services.metrics import Metrics

ROLES = TopicRoles(legit="L", fraud="F", alerts="A")


def run(test: Callable[[TestClient[Any, Any], Hub], Awaitable[None]], client_buffer: int = 100) -> None:
    async def main() -> None:
        hub = Hub(recent=50, client_buffer=client_buffer, history_s=60)
        app = create_app(hub, Metrics("dashboard"))
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            await test(client, hub)

    asyncio.run(main())


def ev(topic: str, offset: int, value: str = "x") -> dict[str, Any]:
    return make_event(ROLES, topic=topic, partition=0, offset=offset, key=b"k",
                      headers=[("fraudstream.rules", b"r@1" if topic == "F" else b"")],
                      record={"transaction_id": value}, received_ms=0)


async def read_sse(resp: ClientResponse) -> tuple[str, Any]:
    """The next SSE message with an event name (skips retry lines and comments)."""
    while True:
        raw = (await asyncio.wait_for(resp.content.readuntil(b"\n\n"), timeout=5)).decode()
        fields = dict(line.split(": ", 1) for line in raw.strip().split("\n") if ": " in line)
        if "event" in fields:
            return fields["event"], json.loads(fields["data"])


def test_page_and_static_assets_are_local_with_strict_csp() -> None:
    async def check(client: TestClient[Any, Any], hub: Hub) -> None:
        resp = await client.get("/")
        html = await resp.text()
        assert resp.status == 200
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "http://" not in html and "https://" not in html  # no CDN: works offline
        for asset in ("/static/app.js", "/static/panels.js", "/static/style.css"):
            r = await client.get(asset)
            assert r.status == 200, asset
        for script in ("/static/app.js", "/static/panels.js"):
            js = await (await client.get(script)).text()
            assert "innerHTML" not in js.replace("never innerHTML", ""), script

    run(check)


def test_sse_snapshot_then_batches_then_stats() -> None:
    async def check(client: TestClient[Any, Any], hub: Hub) -> None:
        hub.publish(ev("L", 0))
        resp = await client.get("/events")
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        name, snap = await read_sse(resp)
        assert name == "snapshot" and [e["offset"] for e in snap["recent"]] == [0]
        hub.publish(ev("F", 1, "<script>alert(1)</script>"))
        hub.publish(ev("L", 2))
        seen: list[int] = []
        while len(seen) < 2:
            name, data = await read_sse(resp)
            if name == "tx":
                seen += [e["offset"] for e in data]
        assert seen == [1, 2]
        hub.tick()
        while name != "stats":
            name, data = await read_sse(resp)
        assert data["totals"]["fraud"] == 1 and data["rules"]["r@1"] == 1
        resp.close()

    run(check)


def test_a_browser_that_does_not_read_loses_oldest_events_only() -> None:
    async def check(client: TestClient[Any, Any], hub: Hub) -> None:
        resp = await client.get("/events")
        await read_sse(resp)  # snapshot; then stop reading while 5,000 events arrive
        for i in range(5000):
            hub.publish(ev("L", i))  # never awaits: the consumer is never slowed
        assert hub.totals.dropped > 0
        assert hub.totals.legit == 5000
        resp.close()

    run(check, client_buffer=10)


def test_healthz_and_metrics() -> None:
    async def check(client: TestClient[Any, Any], hub: Hub) -> None:
        resp = await client.get("/healthz")
        assert resp.status == 200 and (await resp.json())["status"] == "ok"
        text = await (await client.get("/metrics")).text()
        assert "fraudstream_sse_clients" in text

    run(check)


def test_alert_detail_by_transaction_id() -> None:
    async def check(client: TestClient[Any, Any], hub: Hub) -> None:
        hub.publish(ev("F", 1, "t/1 <b>"))
        resp = await client.get("/api/alerts/t%2F1%20%3Cb%3E")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/json")
        detail = await resp.json()
        assert detail["key"] == "t/1 <b>" and detail["rules_fired"][0]["ref"] == "r@1"
        assert (await client.get("/api/alerts/unknown")).status == 404
        snap = await (await client.get("/api/snapshot")).json()
        assert [row["key"] for row in snap["queue"]] == ["t/1 <b>"]

    run(check)

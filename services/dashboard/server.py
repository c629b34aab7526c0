"""The dashboard's web side (aiohttp): the page, Server-Sent Events, /healthz and /metrics.

``GET /events`` is an SSE stream: first a ``snapshot`` (counters, history, recent
events newest first), then ``tx`` batches and a ``stats`` message every second.
The browser's EventSource reconnects by itself and gets a fresh snapshot.
Every response carries a strict Content-Security-Policy: scripts only from this
server, no inline script, so even a mistake in escaping could not run injected code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from services.dashboard.feed import KafkaFeed
from services.dashboard.hub import Client, Hub
from services.dashboard.probe import Probe
from services.metrics import Metrics

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
KEEPALIVE_S = 15.0
MAX_EVENTS_PER_MESSAGE = 500

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

HUB = web.AppKey("hub", Hub)
METRICS = web.AppKey("metrics", Metrics)
FEED = web.AppKey("feed", KafkaFeed)
PROBE = web.AppKey("probe", Probe)


def sse(event: str, data: Any) -> bytes:
    """One SSE message; JSON never contains a raw newline, so one ``data:`` line is enough."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@web.middleware
async def security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def events(request: web.Request) -> web.StreamResponse:
    """The SSE stream of one browser; its buffer is bounded, so it never slows the consumer."""
    hub = request.app[HUB]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    client = hub.subscribe()
    try:
        await response.write(b"retry: 2000\n\n" + sse("snapshot", hub.snapshot()))
        while not hub.closing.is_set():
            try:
                await asyncio.wait_for(client.wake.wait(), timeout=KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            await response.write(_pending(hub, client))
    except (ConnectionResetError, ConnectionError):
        pass  # the browser went away; EventSource reconnects on its side
    finally:
        hub.unsubscribe(client)
    return response


def _pending(hub: Hub, client: Client) -> bytes:
    """What one browser has waiting: a batch of events and, once a second, the stats."""
    client.wake.clear()
    chunks: list[bytes] = []
    batch = client.drain(MAX_EVENTS_PER_MESSAGE)
    if batch:
        chunks.append(sse("tx", batch))
    if client.events:
        client.wake.set()  # more than one message's worth: come back at once
    if client.stats_pending:
        client.stats_pending = False
        stats = hub.stats()
        point = stats.pop("history")[-1:]
        chunks.append(sse("stats", {**stats, "point": point[0] if point else None, "you_dropped": client.dropped}))
    return b"".join(chunks) or b": idle\n\n"


async def favicon(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def snapshot(request: web.Request) -> web.Response:
    return web.json_response(request.app[HUB].snapshot())


async def alert_detail(request: web.Request) -> web.Response:
    """The drill-down of one queued alert, by its transaction id (404 once it left the queue)."""
    detail = request.app[HUB].detail(request.match_info["key"])
    if detail is None:
        return web.json_response({"error": "not in the alert queue"}, status=404)
    return web.json_response(detail)


async def healthz(request: web.Request) -> web.Response:
    """200 while the consumer is polling; 503 before its first poll or after it stopped."""
    app = request.app
    body: dict[str, Any] = {"clients": len(app[HUB].clients)}
    ok = True
    if FEED in app:
        body["kafka"] = app[FEED].health()
        ok = bool(body["kafka"]["ok"])
    body["status"] = "ok" if ok else "unavailable"
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def _background(app: web.Application) -> AsyncIterator[None]:
    """Run the ticker (and the Kafka feed, if any) for the application's lifetime."""
    hub = app[HUB]
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            hub.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)

    tasks = [asyncio.create_task(ticker(), name="dashboard-ticker")]
    if FEED in app:
        feed_task = asyncio.create_task(app[FEED].run(stop), name="dashboard-feed")
        feed_task.add_done_callback(_log_feed_end)
        tasks.append(feed_task)
    if PROBE in app:
        tasks.append(asyncio.create_task(app[PROBE].run(stop), name="dashboard-probe"))
    yield
    stop.set()
    hub.close()
    for task in tasks:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=10)


def _log_feed_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("Kafka feed stopped: %r", task.exception())


async def _on_shutdown(app: web.Application) -> None:
    app[HUB].close()  # lets every open SSE stream finish before the server waits for handlers


def create_app(
    hub: Hub, metrics_: Metrics, feed: KafkaFeed | None = None, probe: Probe | None = None
) -> web.Application:
    """The dashboard application; without ``feed`` it only serves what is published to ``hub``."""
    app = web.Application(middlewares=[security_headers])
    app[HUB] = hub
    app[METRICS] = metrics_
    if feed is not None:
        app[FEED] = feed
    if probe is not None:
        app[PROBE] = probe
    app.cleanup_ctx.append(_background)
    app.on_shutdown.append(_on_shutdown)
    app.router.add_get("/", index)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/events", events)
    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_get("/api/alerts/{key}", alert_detail)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False)
    return app

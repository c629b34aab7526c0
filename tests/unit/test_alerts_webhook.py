"""services.alerts.webhook against a real local HTTP server on 127.0.0.1 that fails N times, then succeeds."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.alerts.webhook import RetryPolicy, WebhookGaveUp, WebhookPoster, alert_text, slack_escape
from services.metrics import Metrics

FAST = RetryPolicy(max_attempts=5, backoff_initial_s=0.01, backoff_max_s=0.05, give_up_after_s=10,
                   request_timeout_s=2)


class FlakyHook:
    """Answers ``failures`` times with ``status`` (or hangs past the timeout), then 200; records every body."""

    def __init__(self, failures: int, status: int = 500, retry_after: str | None = None,
                 hang_s: float = 0.0) -> None:
        self.failures = failures
        self.status = status
        self.retry_after = retry_after
        self.hang_s = hang_s
        self.bodies: list[Any] = []
        self.times: list[float] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        self.times.append(asyncio.get_running_loop().time())
        if len(self.bodies) <= self.failures:
            if self.hang_s:
                await asyncio.sleep(self.hang_s)
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return web.Response(status=self.status, text="no", headers=headers)
        return web.Response(text="ok")


def with_hook(hook: FlakyHook, policy: RetryPolicy,
              body: Callable[[WebhookPoster, Metrics], Awaitable[None]]) -> None:
    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook.handle)
        async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
            metrics = Metrics("alerts")
            await body(WebhookPoster(session, str(server.make_url("/hook")), policy, metrics), metrics)

    asyncio.run(main())


def test_fails_three_times_then_delivers_once() -> None:
    hook = FlakyHook(failures=3)

    async def body(poster: WebhookPoster, metrics: Metrics) -> None:
        assert await poster.post({"text": "hello"}) == 4
        assert metrics.registry.get_sample_value("fraudstream_alerts_posted_total") == 1
        assert metrics.registry.get_sample_value("fraudstream_alert_attempts_failed_total") == 3

    with_hook(hook, FAST, body)
    assert hook.bodies == [{"text": "hello"}] * 4
    gaps = [b - a for a, b in zip(hook.times, hook.times[1:], strict=False)]
    assert all(g >= 0.009 for g in gaps), gaps  # it backed off between attempts


def test_gives_up_after_max_attempts() -> None:
    hook = FlakyHook(failures=100, status=503)

    async def body(poster: WebhookPoster, metrics: Metrics) -> None:
        with pytest.raises(WebhookGaveUp) as info:
            await poster.post({"text": "x"})
        assert info.value.attempts == 5 and "HTTP 503" in str(info.value)

    with_hook(hook, FAST, body)
    assert len(hook.bodies) == 5


def test_client_error_is_not_retried() -> None:
    hook = FlakyHook(failures=100, status=400)

    async def body(poster: WebhookPoster, metrics: Metrics) -> None:
        with pytest.raises(WebhookGaveUp) as info:
            await poster.post({"text": "x"})
        assert info.value.attempts == 1 and not info.value.last.retryable

    with_hook(hook, FAST, body)
    assert len(hook.bodies) == 1


def test_429_honours_retry_after_capped_at_backoff_max() -> None:
    hook = FlakyHook(failures=1, status=429, retry_after="0.2")
    policy = RetryPolicy(max_attempts=3, backoff_initial_s=0.01, backoff_max_s=0.3, give_up_after_s=10,
                         request_timeout_s=2)

    async def body(poster: WebhookPoster, metrics: Metrics) -> None:
        assert await poster.post({"text": "x"}) == 2

    with_hook(hook, policy, body)
    assert hook.times[1] - hook.times[0] >= 0.19


def test_timeout_is_retried() -> None:
    hook = FlakyHook(failures=1, hang_s=1.0)
    policy = RetryPolicy(max_attempts=3, backoff_initial_s=0.01, backoff_max_s=0.05, give_up_after_s=10,
                         request_timeout_s=0.2)

    async def body(poster: WebhookPoster, metrics: Metrics) -> None:
        assert await poster.post({"text": "x"}) == 2

    with_hook(hook, policy, body)


def test_alert_text_escapes_every_value() -> None:
    record = {
        "transaction_id": "t<1>", "source_account": "<!channel>", "target_account": "M&Co",
        "amount": Decimal("9800.5"), "currency": "EUR", "event_time": dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
        "channel": "card", "country": "NG", "merchant_category": "<http://evil|click>",
    }
    text = alert_text(record, rules=["big_amount@1"], topic="fraud", partition=1, offset=7, key="k")
    assert "<" not in text and ">" not in text
    assert "&lt;!channel&gt;" in text and "M&amp;Co" in text and "9,800.50 EUR" in text
    assert "rules: big_amount@1" in text and "fraud 1/7" in text and "2026-01-02T00:00:00+00:00" in text
    undecodable = alert_text(None, rules=[], topic="fraud", partition=0, offset=1, key="AC1",
                             error="not-wire-format: <x>")
    assert "AC1" in undecodable and "&lt;x&gt;" in undecodable and "(default branch)" in undecodable
    assert slack_escape("a&<b>") == "a&amp;&lt;b&gt;"


def test_the_webhook_url_never_appears_in_an_error() -> None:
    secret = "T0000/B0000/s3cr3tT0ken"

    async def main() -> str:
        async def loop(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(request.path_qs)  # aiohttp's TooManyRedirects names the whole URL

        app = web.Application()
        app.router.add_post(f"/services/{secret}", loop)
        async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
            url = str(server.make_url(f"/services/{secret}?token=abcd1234"))
            poster = WebhookPoster(session, url, RetryPolicy(max_attempts=1, backoff_initial_s=0.01,
                                   backoff_max_s=0.01, give_up_after_s=5, request_timeout_s=2), Metrics("alerts"))
            with pytest.raises(WebhookGaveUp) as info:
                await poster.post({"text": "x"})
            return str(info.value)

    text = asyncio.run(main())
    assert "TooManyRedirects" in text and "127.0.0.1" in text, text  # the host stays: it says where
    assert secret not in text and "abcd1234" not in text, text

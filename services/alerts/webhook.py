"""Posting one alert to a Slack-compatible webhook, with retries and exponential backoff (tenacity).

Retried: connection errors, timeouts, HTTP 408, 429 (honouring ``Retry-After``)
and 5xx. Not retried: other 4xx (the request itself is wrong; retrying cannot help).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_exponential_jitter

from services.client_properties import redact
from services.metrics import Metrics

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))


class WebhookError(Exception):
    """One failed attempt; ``retryable`` says whether another attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class WebhookGaveUp(Exception):
    """The alert was not delivered: after ``attempts`` attempts, or at once for a permanent error."""

    def __init__(self, last: WebhookError, attempts: int) -> None:
        super().__init__(f"webhook gave up after {attempts} attempt(s): {last}")
        self.last = last
        self.attempts = attempts


class ShuttingDown(Exception):
    """Raised from a backoff sleep when the service is asked to stop (the alert is not committed)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How ``WebhookPoster`` retries (the values and their defaults: ``AlertsSettings``)."""

    max_attempts: int
    backoff_initial_s: float
    backoff_max_s: float
    give_up_after_s: float
    request_timeout_s: float


def slack_escape(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` as Slack requires, so data can neither mention (<!channel>) nor link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fmt_amount(amount: Any, currency: Any) -> str:
    try:
        value = f"{Decimal(str(amount)):,.2f}"
    except (InvalidOperation, ValueError):
        value = str(amount)
    return f"{value} {currency or ''}".strip()


def alert_text(
    record: Mapping[str, Any] | None,
    *,
    rules: list[str],
    topic: str,
    partition: int,
    offset: int,
    key: str | None,
    error: str | None = None,
) -> str:
    """The Slack message of one fraud decision; every value from the record is escaped."""
    e = slack_escape
    where = f"{e(topic)} {partition}/{offset}"
    rule_text = e(", ".join(rules)) if rules else "(default branch)"
    if record is None:
        return (f":rotating_light: *Fraud decision* for account {e(key or '?')} (record not decodable: "
                f"{e(error or 'unknown error')})\nrules: {rule_text} · {where}")
    details = ", ".join(
        e(str(record[name])) for name in ("channel", "country") if record.get(name) is not None
    )
    mcc = record.get("merchant_category")
    if mcc is not None:
        details = f"{details}, MCC {e(str(mcc))}" if details else f"MCC {e(str(mcc))}"
    when = record.get("event_time")
    when_text = when.isoformat() if isinstance(when, dt.datetime) else str(when)
    head = (f":rotating_light: *Fraud* {e(_fmt_amount(record.get('amount'), record.get('currency')))} "
            f"from {e(str(record.get('source_account')))} to {e(str(record.get('target_account')))}")
    if details:
        head += f" ({details})"
    return (f"{head}\nrules: {rule_text} · tx {e(str(record.get('transaction_id')))} · "
            f"{e(when_text)} · {where}")


class _Backoff:
    """Exponential backoff with jitter; a server's ``Retry-After`` wins (capped at the maximum)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.max = policy.backoff_max_s
        self.exp = wait_exponential_jitter(multiplier=policy.backoff_initial_s, max=policy.backoff_max_s,
                                           jitter=policy.backoff_initial_s)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, WebhookError) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, self.max)
        return float(self.exp(state))


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


@dataclass(eq=False, repr=False)  # no repr: the URL is a secret
class WebhookPoster:
    """Posts ``{"text": ...}`` payloads to one webhook URL, retrying per ``RetryPolicy``."""

    session: aiohttp.ClientSession
    url: str
    policy: RetryPolicy
    metrics: Metrics
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def redact(self, text: str) -> str:
        """``text`` without the webhook URL's path, query or user info (only scheme and host stay)."""
        parts = urlsplit(self.url)
        text = text.replace(self.url, f"{parts.scheme}://{parts.hostname}/***")
        secrets = [parts.path, parts.query, parts.netloc.rpartition("@")[0]]
        return redact(text, [s for s in secrets if s not in ("", "/")])

    async def post(self, payload: Mapping[str, Any]) -> int:
        """Deliver ``payload``; returns the number of attempts, raises ``WebhookGaveUp``."""
        p = self.policy
        retrying = AsyncRetrying(
            stop=stop_after_attempt(p.max_attempts) | stop_after_delay(p.give_up_after_s),
            wait=_Backoff(p),
            retry=retry_if_exception(lambda exc: isinstance(exc, WebhookError) and exc.retryable),
            sleep=self.sleep,
            reraise=True,
        )
        attempts = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    await self._attempt(payload)
        except WebhookError as exc:
            raise WebhookGaveUp(exc, attempts) from exc
        return attempts

    async def _attempt(self, payload: Mapping[str, Any]) -> None:
        started = time.perf_counter()
        try:
            timeout = aiohttp.ClientTimeout(total=self.policy.request_timeout_s)
            async with self.session.post(self.url, json=payload, timeout=timeout) as resp:
                body = (await resp.text())[:200]
                if resp.status < 300:
                    self.metrics.alerts_posted.inc()
                    return
                retryable = resp.status in RETRYABLE_STATUS
                error = WebhookError(
                    f"HTTP {resp.status} from webhook: {body!r}", retryable=retryable,
                    retry_after_s=_retry_after(resp.headers.get("Retry-After")),
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            # aiohttp names the URL in some errors; a webhook URL is a secret (Slack's carries its token).
            error = WebhookError(self.redact(f"{type(exc).__name__}: {exc}"), retryable=True)
        finally:
            self.metrics.alert_post_latency.observe(time.perf_counter() - started)
        self.metrics.alert_attempts_failed.inc()
        log.warning("webhook attempt failed (%s)", error)
        raise error

"""``fraudstream alerts --webhook URL``: post fraud decisions to a Slack-compatible webhook."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from typing import Annotated

import aiohttp
import typer
from aiohttp import web

from services.alerts.service import AlertService, DeadLetters, alerts_consumer_config
from services.alerts.webhook import RetryPolicy, WebhookPoster
from services.config import AlertsSettings, KafkaSettings
from services.connection_options import connection
from services.kafka import registry_client
from services.logs import setup_logging
from services.metrics import Metrics
from topology.serde.decoder import AvroDecoder

log = logging.getLogger(__name__)


def _status_app(service: AlertService, metrics: Metrics) -> web.Application:
    """``/healthz`` and ``/metrics`` of the alerts process."""

    async def healthz(_request: web.Request) -> web.Response:
        health = service.health()
        return web.json_response(health, status=200 if health["ok"] else 503)

    async def metrics_(_request: web.Request) -> web.Response:
        body, content_type = metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_)
    return app


async def run_alerts(settings: AlertsSettings, kafka: KafkaSettings, webhook_url: str) -> None:
    """Run the alerts consumer until SIGINT/SIGTERM."""
    metrics = Metrics("alerts", instance=socket.gethostname())
    policy = RetryPolicy(
        max_attempts=settings.max_attempts, backoff_initial_s=settings.backoff_initial_s,
        backoff_max_s=settings.backoff_max_s, give_up_after_s=settings.give_up_after_s,
        request_timeout_s=settings.request_timeout_s,
    )
    decoder = AvroDecoder(registry_client(kafka))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with aiohttp.ClientSession() as session:
        service = AlertService(
            alerts_consumer_config(kafka, settings.group_id, from_beginning=settings.from_beginning),
            settings.topic, decoder.decode, WebhookPoster(session, webhook_url, policy, metrics),
            DeadLetters(kafka, settings.dead_letter_topic), metrics,
        )
        runner: web.AppRunner | None = None
        if settings.metrics_port is not None:
            runner = web.AppRunner(_status_app(service, metrics), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, settings.metrics_host, settings.metrics_port).start()
        log.info("alerts started: posting the decisions of %s to %s", settings.topic,
                 service.poster.redact(webhook_url))
        try:
            await service.run(stop)
        finally:
            if runner is not None:
                with contextlib.suppress(Exception):
                    await runner.cleanup()


def alerts(
    webhook: Annotated[str | None, typer.Option(help="Slack-compatible webhook URL. "
                                                "(env FRAUDSTREAM_ALERTS_WEBHOOK_URL)")] = None,
    topic: Annotated[str | None, typer.Option(help="Topic of decisions to alert on. "
                                              "(env FRAUDSTREAM_ALERTS_TOPIC; default the fraud topic)")] = None,
    group_id: Annotated[str | None, typer.Option(help="(env FRAUDSTREAM_ALERTS_GROUP_ID)")] = None,
    dead_letter_topic: Annotated[str | None, typer.Option(help="Where given-up alerts go (\"\" = log only). "
                                                          "(env FRAUDSTREAM_ALERTS_DEAD_LETTER_TOPIC)")] = None,
    max_attempts: Annotated[int | None, typer.Option(help="(env FRAUDSTREAM_ALERTS_MAX_ATTEMPTS; default 6)")] = None,
    from_beginning: Annotated[
        bool | None, typer.Option("--from-beginning/--from-end", help="Where a new group starts. "
                                  "(env FRAUDSTREAM_ALERTS_FROM_BEGINNING)")
    ] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve /healthz and /metrics on this port. "
                                                     "(env FRAUDSTREAM_ALERTS_METRICS_PORT)")] = None,
    bootstrap_servers: Annotated[str | None, typer.Option(help="Kafka. (env KAFKA_BOOTSTRAP_SERVERS)")] = None,
    schema_registry_url: Annotated[str | None, typer.Option(help="Registry. (env SCHEMA_REGISTRY_URL)")] = None,
) -> None:
    """Post every fraud decision to a webhook as Slack-compatible JSON ({"text": ...}).

    A consumer group of its own, with retries and exponential backoff.
    An offset is committed only after its alert was delivered or dead-lettered.
    """
    setup_logging()
    settings = AlertsSettings.with_overrides(
        webhook_url=webhook, topic=topic, group_id=group_id, dead_letter_topic=dead_letter_topic,
        max_attempts=max_attempts, from_beginning=from_beginning, metrics_port=metrics_port,
    )
    kafka = connection(bootstrap_servers, schema_registry_url)
    if not settings.webhook_url:
        typer.secho("error: no webhook: pass --webhook URL or set FRAUDSTREAM_ALERTS_WEBHOOK_URL",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    typer.echo(f"alerts: {settings.topic} -> webhook (group {settings.group_id}, "
               f"dead letters -> {settings.dead_letter_topic or 'log only'})")
    asyncio.run(run_alerts(settings, kafka, settings.webhook_url))

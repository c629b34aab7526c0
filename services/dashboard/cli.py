"""``fraudstream dashboard``: the live web page of decisions."""

from __future__ import annotations

import socket
from typing import Annotated

import typer
from aiohttp import web

from services.config import DashboardSettings, DetectorSettings, KafkaSettings
from services.connection_options import connection
from services.dashboard.catalog import RuleCatalog
from services.dashboard.feed import KafkaFeed, default_group_id, feed_config
from services.dashboard.health import Health
from services.dashboard.hub import Hub, TopicRoles
from services.dashboard.probe import Probe
from services.dashboard.server import create_app
from services.detector import FRAUD_TOPOLOGY, load_topology
from services.kafka import admin_config, registry_client
from services.logs import setup_logging
from services.metrics import Metrics
from services.rules.feed import RulesFeed
from topology.serde.decoder import AvroDecoder


def build_app(settings: DashboardSettings, kafka: KafkaSettings) -> web.Application:
    """The dashboard application wired to Kafka and the registry (started by aiohttp's runner)."""
    metrics = Metrics("dashboard", instance=socket.gethostname())
    topology = load_topology(settings.topology_file) if settings.topology_file else load_topology(FRAUD_TOPOLOGY)
    group_id = settings.detector_group or DetectorSettings.with_overrides().application_id
    hub = Hub(
        recent=settings.recent, client_buffer=settings.client_buffer, history_s=settings.history_s, metrics=metrics,
        queue=settings.queue, catalog=RuleCatalog(topology), health=Health(group_id=group_id),
    )
    roles = TopicRoles(legit=settings.legit_topic, fraud=settings.fraud_topic, alerts=settings.alerts_topic,
                       dlq=settings.dlq_topic)
    decoder = AvroDecoder(registry_client(kafka))
    config = feed_config(kafka, settings.group_id or default_group_id(), from_beginning=settings.from_beginning)
    feed = KafkaFeed(config, roles, decoder.decode, hub, metrics, max_batch=settings.max_batch)
    rules = (RulesFeed(kafka, settings.rules_topic)
             if settings.rules_topic else None)
    probe = Probe(admin_config(kafka), group_id, hub, interval_s=settings.probe_interval_s,
                  rules=rules)
    return create_app(hub, metrics, feed, probe)


def dashboard(
    host: Annotated[str | None, typer.Option(help="Address to listen on. (env FRAUDSTREAM_DASHBOARD_HOST; "
                                             "default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port. (env FRAUDSTREAM_DASHBOARD_PORT; default 5000)")] = None,
    bootstrap_servers: Annotated[str | None, typer.Option(help="Kafka. (env KAFKA_BOOTSTRAP_SERVERS)")] = None,
    schema_registry_url: Annotated[str | None, typer.Option(help="Registry. (env SCHEMA_REGISTRY_URL)")] = None,
    from_beginning: Annotated[
        bool | None, typer.Option("--from-beginning/--from-end", help="Replay the topics, or start at their end "
                                  "(default). (env FRAUDSTREAM_DASHBOARD_FROM_BEGINNING)")
    ] = None,
    legit_topic: Annotated[str | None, typer.Option(help="(env FRAUDSTREAM_DASHBOARD_LEGIT_TOPIC)")] = None,
    fraud_topic: Annotated[str | None, typer.Option(help="(env FRAUDSTREAM_DASHBOARD_FRAUD_TOPIC)")] = None,
    alerts_topic: Annotated[str | None, typer.Option(help="Shown when it exists. "
                                                     "(env FRAUDSTREAM_DASHBOARD_ALERTS_TOPIC)")] = None,
) -> None:
    """Serve the live dashboard: decisions as they commit, counters, tx/s and fraud rate, hits per rule.

    Also serves /healthz and /metrics (Prometheus) on the same port.
    """
    setup_logging()
    settings = DashboardSettings.with_overrides(
        host=host, port=port, from_beginning=from_beginning,
        legit_topic=legit_topic, fraud_topic=fraud_topic, alerts_topic=alerts_topic,
    )
    kafka = connection(bootstrap_servers, schema_registry_url)
    app = build_app(settings, kafka)
    typer.echo(f"dashboard: http://{settings.host}:{settings.port}/  (Kafka {kafka.bootstrap_servers}, "
               f"registry {kafka.schema_registry_url})")
    web.run_app(app, host=settings.host, port=settings.port, print=None, shutdown_timeout=5.0,
                access_log=None)

"""The connection options several commands share (``--bootstrap-servers``, ``--registry-url``), and their settings."""

from __future__ import annotations

from typing import Annotated

import typer

from services.config import KafkaSettings

BootstrapServers = Annotated[str | None, typer.Option(help="Kafka (env KAFKA_BOOTSTRAP_SERVERS).")]
RegistryUrl = Annotated[str | None, typer.Option(help="Schema Registry (env SCHEMA_REGISTRY_URL).")]


def connection(bootstrap_servers: str | None, registry_url: str | None) -> KafkaSettings:
    """The connection section from the environment, with the options given on top."""
    return KafkaSettings.with_overrides(bootstrap_servers=bootstrap_servers, schema_registry_url=registry_url)

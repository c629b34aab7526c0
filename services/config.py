"""All configuration, typed, in one place.

Every setting is read from an environment variable (12-factor) and may be
overridden by a CLI flag: commands build a settings object with
``Settings.with_overrides(flag=value, ...)``; ``None`` flags keep the env/default.
Environment names are ``FRAUDSTREAM_<SECTION>_<FIELD>`` (for example
``FRAUDSTREAM_STACK_KAFKA_PORT``), except the two endpoints every Kafka tool
knows: ``KAFKA_BOOTSTRAP_SERVERS`` and ``SCHEMA_REGISTRY_URL``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class _Section(BaseSettings):
    """Base of every settings section: env first, then explicit overrides."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    @classmethod
    def with_overrides(cls, **overrides: Any) -> Self:
        """Settings from the environment, with the non-``None`` overrides (CLI flags) on top."""
        return cls(**{k: v for k, v in overrides.items() if v is not None})


class KafkaSettings(_Section):
    """Where the broker and the Schema Registry are."""

    bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "bootstrap_servers"),
    )
    schema_registry_url: str = Field(
        "http://127.0.0.1:8081",
        validation_alias=AliasChoices("SCHEMA_REGISTRY_URL", "schema_registry_url"),
    )


class Topics(BaseModel):
    """Topic names (the tutorial's, plus the ones this project adds)."""

    model_config = {"frozen": True}

    transactions: str = "queueing.transactions"
    labels: str = "queueing.transactions.labels"
    legit: str = "streaming.transactions.legit"
    fraud: str = "streaming.transactions.fraud"
    dlq: str = "streaming.transactions.dlq"
    alerts: str = "streaming.transactions.alerts"
    rules: str = "fraudstream.rules"


TOPICS = Topics()


class StackSettings(_Section):
    """The Docker-free local stack (`fraudstream stack ...`)."""

    model_config = SettingsConfigDict(env_prefix="FRAUDSTREAM_STACK_", extra="ignore", frozen=True)

    data_dir: Path = Path(".stack")
    cache_dir: Path = Path.home() / ".cache" / "fraudstream"
    host: str = "127.0.0.1"
    kafka_port: int = 9092
    controller_port: int = 9093
    registry_port: int = 8081
    # Apicurio's own HTTP and management ports; the Confluent-API proxy listens on registry_port.
    apicurio_port: int = 8085
    apicurio_management_port: int = 9095
    kafka_heap: str = "1g"
    registry_heap: str = "512m"
    partitions: int = 6
    start_timeout_s: float = 180.0

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def registry_url(self) -> str:
        return f"http://{self.host}:{self.registry_port}"

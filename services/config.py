"""All configuration, typed, in one place.

Every setting is read from an environment variable (12-factor) and may be
overridden by a CLI flag: commands build a settings object with
``Settings.with_overrides(flag=value, ...)``; ``None`` flags keep the env/default.
Environment names are ``FRAUDSTREAM_<SECTION>_<FIELD>`` (for example
``FRAUDSTREAM_STACK_KAFKA_PORT``), except the connection (``KafkaSettings``), named
as Kafka tools name it: ``KAFKA_BOOTSTRAP_SERVERS``, ``SCHEMA_REGISTRY_URL``,
``KAFKA_SASL_USERNAME``, ``KAFKA_CONFIG_<PROPERTY>``, ...
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import AliasChoices, BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.client_properties import from_env, is_secret, redact
from services.client_properties import load as load_properties
from services.generator.scenarios import DEFAULT_RATES
from topology.runtime.collector import DEFAULT_YOUNG_THRESHOLD


class _Section(BaseSettings):
    """Base of every settings section: env first, then explicit overrides."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    @classmethod
    def with_overrides(cls, **overrides: Any) -> Self:
        """Settings from the environment, with the non-``None`` overrides (CLI flags) on top."""
        return cls(**{k: v for k, v in overrides.items() if v is not None})


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"]


def _env(*names: str) -> Any:
    """An optional field read from the environment variable ``names[0]`` (or a flag named ``names[1]``)."""
    return Field(None, validation_alias=AliasChoices(*names))


# Secret fields, and the variable whose ``_FILE`` twin may name a file holding the secret.
_SECRET_ENV = {
    "sasl_password": "KAFKA_SASL_PASSWORD",
    "ssl_key_password": "KAFKA_SSL_KEY_PASSWORD",
    "sasl_oauthbearer_client_secret": "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
    "registry_basic_auth_user_info": "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
    "registry_ssl_key_password": "SCHEMA_REGISTRY_SSL_KEY_PASSWORD",
}


# The typed fields of ``KafkaSettings`` that set a property: of every Kafka client (property -> field) ...
_CLIENT_FIELDS = {
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.username": "sasl_username",
    "sasl.password": "sasl_password",
    "ssl.ca.location": "ssl_ca_location",
    "ssl.certificate.location": "ssl_certificate_location",
    "ssl.key.location": "ssl_key_location",
    "ssl.key.password": "ssl_key_password",
    "sasl.oauthbearer.method": "sasl_oauthbearer_method",
    "sasl.oauthbearer.client.id": "sasl_oauthbearer_client_id",
    "sasl.oauthbearer.client.secret": "sasl_oauthbearer_client_secret",
    "sasl.oauthbearer.token.endpoint.url": "sasl_oauthbearer_token_endpoint_url",
    "sasl.oauthbearer.scope": "sasl_oauthbearer_scope",
    "sasl.oauthbearer.extensions": "sasl_oauthbearer_extensions",
}
# ... and of the Schema Registry client.
_REGISTRY_FIELDS = {
    "basic.auth.user.info": "registry_basic_auth_user_info",
    "ssl.ca.location": "registry_ssl_ca_location",
    "ssl.certificate.location": "registry_ssl_certificate_location",
    "ssl.key.location": "registry_ssl_key_location",
    "ssl.key.password": "registry_ssl_key_password",
}


class KafkaSettings(_Section):
    """Where the broker and the Schema Registry are, and how every client connects and authenticates.

    The one connection section: ``client_config()`` is the base of every Kafka client's config and
    ``registry_config()`` of every registry client. Secrets come from the environment, or from a file
    named by the variable's ``_FILE`` twin (``KAFKA_SASL_PASSWORD_FILE``); never from flags.
    """

    bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "bootstrap_servers"),
    )
    startup_wait_s: float = Field(
        300.0, ge=0, validation_alias=AliasChoices("KAFKA_STARTUP_WAIT_S", "startup_wait_s"),
        description="How long a command waits at start for a missing or restarting broker or registry.",
    )  # fmt: skip
    schema_registry_url: str = Field(
        "http://127.0.0.1:8081",
        validation_alias=AliasChoices("SCHEMA_REGISTRY_URL", "schema_registry_url"),
    )
    security_protocol: SecurityProtocol | None = _env("KAFKA_SECURITY_PROTOCOL", "security_protocol")
    sasl_mechanism: SaslMechanism | None = _env("KAFKA_SASL_MECHANISM", "sasl_mechanism")
    sasl_username: str | None = _env("KAFKA_SASL_USERNAME", "sasl_username")
    sasl_password: SecretStr | None = _env("KAFKA_SASL_PASSWORD", "sasl_password")
    ssl_ca_location: str | None = _env("KAFKA_SSL_CA_LOCATION", "ssl_ca_location")
    ssl_certificate_location: str | None = _env("KAFKA_SSL_CERTIFICATE_LOCATION", "ssl_certificate_location")
    ssl_key_location: str | None = _env("KAFKA_SSL_KEY_LOCATION", "ssl_key_location")
    ssl_key_password: SecretStr | None = _env("KAFKA_SSL_KEY_PASSWORD", "ssl_key_password")
    sasl_oauthbearer_method: Literal["default", "oidc"] | None = _env(
        "KAFKA_SASL_OAUTHBEARER_METHOD", "sasl_oauthbearer_method")
    sasl_oauthbearer_client_id: str | None = _env("KAFKA_SASL_OAUTHBEARER_CLIENT_ID", "sasl_oauthbearer_client_id")
    sasl_oauthbearer_client_secret: SecretStr | None = _env(
        "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET", "sasl_oauthbearer_client_secret")
    sasl_oauthbearer_token_endpoint_url: str | None = _env(
        "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL", "sasl_oauthbearer_token_endpoint_url")
    sasl_oauthbearer_scope: str | None = _env("KAFKA_SASL_OAUTHBEARER_SCOPE", "sasl_oauthbearer_scope")
    sasl_oauthbearer_extensions: str | None = _env("KAFKA_SASL_OAUTHBEARER_EXTENSIONS", "sasl_oauthbearer_extensions")
    # Any other librdkafka property: a Java-style properties file, then KAFKA_CONFIG_<NAME> variables.
    client_properties: Path | None = _env("KAFKA_CLIENT_PROPERTIES", "client_properties")
    config_env: dict[str, str] = Field(default_factory=lambda: from_env(os.environ), exclude=True, repr=False)
    registry_basic_auth_user_info: SecretStr | None = _env(
        "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "registry_basic_auth_user_info")
    registry_ssl_ca_location: str | None = _env("SCHEMA_REGISTRY_SSL_CA_LOCATION", "registry_ssl_ca_location")
    registry_ssl_certificate_location: str | None = _env(
        "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION", "registry_ssl_certificate_location")
    registry_ssl_key_location: str | None = _env("SCHEMA_REGISTRY_SSL_KEY_LOCATION", "registry_ssl_key_location")
    registry_ssl_key_password: SecretStr | None = _env(
        "SCHEMA_REGISTRY_SSL_KEY_PASSWORD", "registry_ssl_key_password")

    @classmethod
    def only(cls, **fields: Any) -> KafkaSettings:
        """These fields and the defaults, nothing from the environment (the local stack's own clients)."""
        return cls.model_construct(config_env={}, **fields)

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, values: Any) -> Any:
        """Fill each secret missing from the environment from the file its ``<VAR>_FILE`` names."""
        if not isinstance(values, dict):
            return values
        for field, env in _SECRET_ENV.items():
            path = os.environ.get(f"{env}_FILE")
            if path and values.get(field) is None and values.get(env) is None:
                try:
                    values[field] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
                except OSError as exc:
                    raise ValueError(f"{env}_FILE={path!r}: cannot read the secret file ({exc.strerror})") from None
        return values

    def client_config(self) -> dict[str, Any]:
        """librdkafka properties every client gets: the properties file, then ``KAFKA_CONFIG_*``, then
        the typed fields that are set (bootstrap.servers: the file's unless set by env or flag)."""
        config: dict[str, Any] = {}
        if self.client_properties is not None:
            config.update(load_properties(self.client_properties))
        config.update(self.config_env)
        if "bootstrap_servers" in self.model_fields_set or "bootstrap.servers" not in config:
            config["bootstrap.servers"] = self.bootstrap_servers
        config.update(self._properties(_CLIENT_FIELDS))
        return config

    def registry_config(self) -> dict[str, Any]:
        """The ``SchemaRegistryClient`` config: URL, basic auth, CA and client certificate."""
        return {"url": self.schema_registry_url, **self._properties(_REGISTRY_FIELDS)}

    def _properties(self, fields: dict[str, str]) -> dict[str, Any]:
        """The properties of ``fields`` (property -> field) whose field is set, secrets revealed."""
        values = {prop: getattr(self, name) for prop, name in fields.items()}
        return {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in values.items() if v is not None}

    def secrets(self) -> list[str]:
        """Every secret value of this section (for redaction)."""
        found = [v.get_secret_value() for v in (getattr(self, f) for f in _SECRET_ENV) if v is not None]
        user_info = self.registry_basic_auth_user_info
        if user_info is not None:
            found.append(user_info.get_secret_value().partition(":")[2])
        extra = load_properties(self.client_properties) if self.client_properties is not None else {}
        found += [str(v) for k, v in {**extra, **self.config_env}.items() if is_secret(k)]
        return [s for s in found if s]

    def redact(self, text: str) -> str:
        """``text`` with this section's secrets and any URL credentials replaced by ``***``."""
        return redact(text, self.secrets())


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
    # SASL_SSL (SCRAM-SHA-512) listener, ACLs and registry basic auth (services/stack/secure.py). A data
    # dir set up secured stays secured.
    secure: bool = False

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def registry_url(self) -> str:
        return f"http://{self.host}:{self.registry_port}"


class DashboardSettings(_Section):
    """The live dashboard (`fraudstream dashboard`)."""

    model_config = SettingsConfigDict(env_prefix="FRAUDSTREAM_DASHBOARD_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = 5000
    legit_topic: str = TOPICS.legit
    fraud_topic: str = TOPICS.fraud
    # Shown when it exists; a missing alerts topic is tolerated (and picked up once created).
    alerts_topic: str = TOPICS.alerts
    # A viewer, not a worker: its own group (default: per host and process), never commits.
    group_id: str | None = None
    from_beginning: bool = False  # replay the topics instead of starting at their end
    recent: int = Field(200, ge=1)  # events kept for a newly connected browser
    client_buffer: int = Field(1000, ge=1)  # events queued per browser before the oldest are dropped
    history_s: int = Field(300, ge=10)  # seconds of tx/s and fraud-rate history
    max_batch: int = Field(500, ge=1)  # records per consume() call
    # The analyst's view: the dead-letter topic for the health panel ("" = not watched), the alert
    # queue's length, where rule descriptions come from, and whose lag is shown.
    dlq_topic: str = TOPICS.dlq
    queue: int = Field(5000, ge=1)  # fraud transactions kept in the alert queue
    topology_file: Path | None = None  # None = the packaged services/detector/fraud.yaml
    rules_topic: str = TOPICS.rules  # rules changed at run time ("" = not read)
    detector_group: str | None = None  # None = the detector's application id (DetectorSettings)
    probe_interval_s: float = Field(5.0, gt=0)  # how often the detector group's lag is asked for


class AlertsSettings(_Section):
    """Webhook alerts for fraud decisions (`fraudstream alerts`)."""

    model_config = SettingsConfigDict(env_prefix="FRAUDSTREAM_ALERTS_", extra="ignore", frozen=True)

    webhook_url: str | None = None  # Slack-compatible incoming webhook (JSON {"text": ...})
    topic: str = TOPICS.fraud
    group_id: str = "fraudstream-alerts"
    # Alerts given up on go here (original key, value and headers plus error headers); "" = log only.
    dead_letter_topic: str = "streaming.transactions.alerts.dlq"
    max_attempts: int = Field(6, ge=1)
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    # Total time spent on one alert before giving up; stays under the consumer's max.poll.interval.ms.
    give_up_after_s: float = Field(120.0, gt=0)
    request_timeout_s: float = Field(10.0, gt=0)
    from_beginning: bool = False  # where a new group starts
    metrics_port: int | None = None  # serve /metrics on this port (unset = off)
    metrics_host: str = "0.0.0.0"


CompatibilityLevel = Literal[
    "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE"
]


class SchemaSettings(_Section):
    """Registry subjects' compatibility levels (`fraudstream schemas ...`)."""

    model_config = SettingsConfigDict(env_prefix="FRAUDSTREAM_SCHEMAS_", extra="ignore", frozen=True)

    compatibility: CompatibilityLevel = "BACKWARD"  # every subject without an override
    # Per subject, e.g. FRAUDSTREAM_SCHEMAS_SUBJECT_COMPATIBILITY='{"queueing.transactions-value": "FULL"}'
    subject_compatibility: dict[str, CompatibilityLevel] = Field(default_factory=dict)

    def level(self, subject: str) -> CompatibilityLevel:
        """The compatibility level of ``subject``."""
        return self.subject_compatibility.get(subject, self.compatibility)


class GeneratorSettings(_Section):
    """The labelled transaction generator (`fraudstream generate`)."""

    model_config = SettingsConfigDict(env_prefix="FRAUDSTREAM_GENERATOR_", extra="ignore", frozen=True)

    topic: str = TOPICS.transactions
    labels_topic: str = TOPICS.labels  # ground truth, keyed by transaction id; the detector never reads it
    rate: float = Field(100.0, ge=0)  # transactions per second; 0 = as fast as possible
    count: int | None = Field(None, ge=0)  # None = run until Ctrl-C
    seed: int | None = None  # same seed (and flags) = same transactions, ids and event times
    # Simulated transactions per event-time second (default: `rate`, or 10 when rate is 0).
    event_rate: float | None = Field(None, gt=0)
    start: datetime | None = None  # first event time (default: now; 2026-01-01T00:00Z when seeded)
    # Default: 5,000 per simulated tx/s (at least 10,000), the density the rules were tuned on.
    accounts: int | None = Field(None, ge=100)
    merchants: int = Field(2_000, ge=10)
    # Fraud incidents started per 1,000 transactions, per scenario (0 turns one off); fraud_<scenario>.
    fraud_large_amount: float = Field(DEFAULT_RATES.large_amount, ge=0)
    fraud_card_testing: float = Field(DEFAULT_RATES.card_testing, ge=0)
    fraud_velocity: float = Field(DEFAULT_RATES.velocity, ge=0)
    fraud_fan_in: float = Field(DEFAULT_RATES.fan_in, ge=0)
    fraud_fan_out: float = Field(DEFAULT_RATES.fan_out, ge=0)
    fraud_structuring: float = Field(DEFAULT_RATES.structuring, ge=0)
    partitions: int = Field(6, ge=1)  # when the generator creates a missing topic
    replication_factor: int = Field(1, ge=1)
    compression: Literal["lz4", "zstd", "none"] = "lz4"
    linger_ms: int = Field(20, ge=0)
    metrics_port: int | None = None  # serve /metrics on this port (unset = off)
    metrics_host: str = "0.0.0.0"


def _hostname() -> str:
    import socket

    return socket.gethostname()


class DetectorSettings(_Section):
    """The exactly-once fraud detector (`fraudstream detect`)."""

    model_config = SettingsConfigDict(env_prefix="FRAUDSTREAM_DETECTOR_", extra="ignore", frozen=True)

    application_id: str = "fraudstream-detector"  # consumer group; prefix of the transactional.id
    # transactional.id = "<application_id>-<instance_id>": stable across restarts so a restart fences its
    # zombie. Every instance running at the same time needs its own (default: the host name).
    instance_id: str = Field(default_factory=_hostname)
    topology_file: Path | None = None  # None = the packaged services/detector/fraud.yaml
    rules_topic: str = TOPICS.rules  # compacted rules topic applied at run time ("" = off)
    # Stateless topologies route whole consumed batches (polars decode + vectorised rules): ~2x faster.
    # One difference from the per-record path: a corrupt [null, T] union index that leaves the rest of
    # the value well-formed is read as T instead of dead-lettered (topology/batch/decode.py). false = strict.
    batch_decode: bool = True
    # 25 ms, not Kafka Streams' 100: fraud.yaml's end-to-end p99 at 5,000 tx/s is 117-147 ms at 25 ms against
    # 154-165 ms at 50 ms and ~260 ms at 100 ms (2026-12-07, docs/benchmarks.md run 9: a record that crosses the
    # repartition topic waits for two commits). On a backlog 100 ms reads up to ~10 % more tx/s (run 9).
    commit_interval_ms: int = Field(25, ge=1)
    max_batch: int = Field(10_000, ge=1)  # records per transaction at most
    consume_batch: int = Field(2_000, ge=1)  # records per consume() call at most
    transaction_timeout_ms: int = Field(60_000, ge=1_000)
    session_timeout_ms: int = Field(10_000, ge=1_000)
    max_retries: int = Field(3, ge=0)  # failures of one record before it is dead-lettered
    # A broker outage is waited out this long by each transactional call (the producer's init included)
    # before the detector stops with exit 2.
    outage_patience_s: float = Field(240.0, gt=0)
    # Event-time skew guard (stateful topologies): a source record dated more than this ahead of the wall
    # clock, or of its partition's stream time, is dead-lettered (event-time-skew) before it moves stream
    # time. 0 = not checked. Off by default over stream time: a partition quiet for longer would refuse its
    # next record.
    max_event_lead_s: float = Field(86_400.0, ge=0)
    max_stream_lead_s: float = Field(0.0, ge=0)
    # A topology with a later stage (fraud.yaml's fan-in) reads its input partitions in event-time order, so
    # a backlog decides as the offline evaluation does; it waits this long at most for a partition that has
    # more to read. -1 = fetch order (a backlog's later stage then sees much of its input late).
    max_task_idle_ms: int = Field(2_000, ge=-1)
    # Python's young-generation GC threshold while the detector runs (0 = Python's own, 700): fewer full
    # collections over the window state (topology.runtime.collector: fraud.yaml in process 60 -> 40 µs per
    # record at 10,000, and 3.5 µs per record less again at 100,000).
    gc_threshold: int = Field(DEFAULT_YOUNG_THRESHOLD, ge=0)
    on_error: Literal["dead-letter", "fail"] = "dead-letter"
    static_membership: bool = False  # group.instance.id = transactional.id (restart without rebalance)
    partitions: int | None = Field(None, ge=1)  # for missing sink topics (None = as the input topic)
    stats_interval_s: float = Field(10.0, gt=0)
    metrics_port: int | None = None  # serve /metrics on this port (unset = off)
    metrics_host: str = "0.0.0.0"
    # Window stores: "memory" (default), or "rocksdb" (embedded, under state_dir/<application>/<instance>,
    # wiped and restored from the changelog on every assignment; a cache of store_cache_keys keys per partition).
    store: Literal["memory", "rocksdb"] = "memory"
    state_dir: Path = Path("/tmp/fraudstream-state")
    store_cache_keys: int = Field(100_000, ge=0)

"""Session fixtures: one real Kafka broker and one Schema Registry for all integration tests.

Where they come from, in order:
1. ``KAFKA_BOOTSTRAP_SERVERS`` and ``SCHEMA_REGISTRY_URL`` when both are set;
2. testcontainers (Kafka in KRaft mode + Confluent Schema Registry) when a Docker engine answers;
3. the Docker-free local stack (``services.stack``) on free ports in a temporary directory.

Nothing is mocked: integration tests marked ``integration`` talk to a real broker.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from services.config import KafkaSettings, StackSettings
from services.stack.secure import SecureFiles

if TYPE_CHECKING:
    from services.stack import LocalStack


@dataclass(frozen=True)
class Endpoints:
    """Where the real broker and registry of this test session are."""

    bootstrap_servers: str
    registry_url: str
    origin: str  # "env", "testcontainers" or "local-jvm"

    @property
    def kafka(self) -> KafkaSettings:
        """The connection section of these endpoints (env security settings, if any, included)."""
        from tests.integration.eos_support import connection

        return connection(self.bootstrap_servers, self.registry_url)


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def free_port() -> int:
    """A local TCP port nothing listens on (closed again when returned)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    """A real Kafka broker and Schema Registry for the whole session."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    registry = os.environ.get("SCHEMA_REGISTRY_URL")
    if bootstrap and registry:
        yield Endpoints(bootstrap, registry, "env")
        return
    if _docker_answers():
        yield from _testcontainers_stack()
        return
    yield from _local_jvm_stack(tmp_path_factory.mktemp("stack"))


def _testcontainers_stack() -> Iterator[Endpoints]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.kafka import KafkaContainer

    with Network() as network:
        kafka = (
            KafkaContainer("confluentinc/cp-kafka:7.8.0")
            .with_kraft()
            .with_network(network)
            .with_network_aliases("kafka")
            .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
            .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
            .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        )
        with kafka:
            registry = (
                DockerContainer("confluentinc/cp-schema-registry:7.8.0")
                .with_network(network)
                .with_env("SCHEMA_REGISTRY_HOST_NAME", "schema-registry")
                .with_env("SCHEMA_REGISTRY_LISTENERS", "http://0.0.0.0:8081")
                .with_env("SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS", "BROKER://kafka:9092")
                .with_exposed_ports(8081)
            )
            with registry:
                wait_for_logs(registry, "Server started", timeout=120)
                host = registry.get_container_host_ip()
                url = f"http://{host}:{registry.get_exposed_port(8081)}"
                yield Endpoints(kafka.get_bootstrap_server(), url, "testcontainers")


def _free_ports_stack(data_dir: Path, **extra: Any) -> StackSettings:
    """Local stack settings on free ports, data under ``data_dir``."""
    return StackSettings.with_overrides(
        data_dir=data_dir,
        kafka_port=free_port(),
        controller_port=free_port(),
        registry_port=free_port(),
        apicurio_port=free_port(),
        apicurio_management_port=free_port(),
        partitions=3,
        **extra,
    )


# Starts of a free-ports stack: a port found free can be taken (by the other test worker) before its daemon
# binds it, and the daemon then exits "in use" at start-up; the stack is started again on other ports.
_STARTS = 3


@contextlib.contextmanager
def _running(data_dir: Path, **extra: Any) -> Iterator[LocalStack]:
    """A local stack on free ports (``_free_ports_stack``), data under ``data_dir``, up until the block ends."""
    from services.stack import LocalStack, StackError

    for start in range(1, _STARTS + 1):
        local = LocalStack(_free_ports_stack(data_dir / f"start-{start}", **extra))
        try:
            local.up(echo=lambda _line: None)
            break
        except StackError as exc:
            local.down()
            if start == _STARTS or "in use" not in str(exc):
                raise
    try:
        yield local
    finally:
        local.down()


def _local_jvm_stack(data_dir: Path) -> Iterator[Endpoints]:
    with _running(data_dir) as local:
        yield Endpoints(local.settings.bootstrap_servers, local.settings.registry_url, "local-jvm")


@dataclass(frozen=True)
class SecureStack:
    """The secured local stack of this session (SASL_SSL, ACLs, registry basic auth)."""

    settings: StackSettings
    files: SecureFiles

    def env(self, principal: str = "detector", **extra: str) -> dict[str, str]:
        """A child process's environment as ``principal`` (secrets as ``_FILE`` paths)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "SCHEMA_REGISTRY_"))}
        return {**base, **self.files.client_env(self.settings, principal), "PYTHONUNBUFFERED": "1", **extra}

    def connection(self, principal: str = "detector") -> KafkaSettings:
        return self.files.connection(self.settings, principal)

    def secrets(self) -> list[str]:
        """Every password and the registry's user info (none may appear in a log)."""
        found = [self.files.password(p) for p in ("admin", "detector", "reader", "store")]
        return [*found, self.files.registry_user_info.read_text(encoding="utf-8").strip().partition(":")[2]]


@pytest.fixture(scope="session")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    """``fraudstream stack up --secure`` on free ports, once per session (always local: it tests the stack)."""
    with _running(tmp_path_factory.mktemp("secure-stack"), secure=True) as local:
        yield SecureStack(local.settings, SecureFiles.of(local.settings))


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[LocalStack]:
    """A local stack of one test's own, on free ports (always local: the test stops and starts its parts)."""
    with _running(tmp_path / "stack") as local:
        yield local


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and transactional ids of one test."""
    return uuid.uuid4().hex[:10]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under the compiled engine, deselect the tests marked ``python_sources`` (they patch, profile or
    duck-type the engine's Python functions): ``make test`` runs them in its second unit pass, on the
    sources (``FRAUDSTREAM_PURE_PYTHON=1``)."""
    from topology.build import compiled_modules

    if not compiled_modules():
        return
    keep = [item for item in items if item.get_closest_marker("python_sources") is None]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep


def pytest_report_header(config: pytest.Config) -> str:
    import topology.processor
    import topology.serde.projection  # noqa: F401  (with the processor: every engine module, before it is counted)
    from topology.build import PURE_PYTHON_ENV, engine_label

    return f"fraudstream: {engine_label()} ({PURE_PYTHON_ENV}=1 runs the sources)"

"""docker-compose.yml, docker-compose.kafka.yml and the services' Dockerfiles, checked without a Docker engine.

1. Both compose files validate against the Compose Specification JSON schema (vendored:
   tests/data/compose-spec.json, see tests/data/README.md).
2. Semantic checks the schema cannot make: the external ``kafka-network``, a KRaft broker
   with single-broker transaction settings, a detector that scales (no container_name, no
   host port), configuration by environment only, and every ``FRAUDSTREAM_*`` variable
   naming a real settings field (a typo would otherwise be silently ignored).
3. The one Dockerfile: a target per service on shared stages (slim Python base, non-root user, pinned
   deps via pyproject), each with a HEALTHCHECK and a command the ``fraudstream`` CLI really has.
Nothing here runs a container: no Docker engine on this machine.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
from jsonschema import Draft202012Validator
from pydantic_settings import BaseSettings
from ruamel.yaml import YAML

from services import config
from services.cli import app

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
SERVICES = {"generator": "generate", "detector": "detect", "dashboard": "dashboard", "alerts": "alerts"}
SECTIONS: dict[str, type[BaseSettings]] = {
    "FRAUDSTREAM_GENERATOR_": config.GeneratorSettings,
    "FRAUDSTREAM_DETECTOR_": config.DetectorSettings,
    "FRAUDSTREAM_DASHBOARD_": config.DashboardSettings,
    "FRAUDSTREAM_ALERTS_": config.AlertsSettings,
}


def load(name: str) -> dict[str, Any]:
    doc = YAML(typ="safe").load((ROOT / name).read_text())
    assert isinstance(doc, dict)
    return doc


def schema_errors(doc: Any) -> list[str]:
    validator = Draft202012Validator(SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_vendored_schema_is_a_valid_2020_12_schema() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["title"] == "Compose Specification"


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.kafka.yml"])
def test_compose_file_validates_against_the_compose_spec(name: str) -> None:
    assert schema_errors(load(name)) == []


def test_the_schema_check_rejects_a_broken_file() -> None:
    doc = load("docker-compose.yml")
    doc["services"]["detector"]["deploy"] = {"replicas": "three"}
    doc["services"]["detector"]["healthcheck"] = {"test": 42}
    doc["services"]["dashboard"]["portz"] = ["5000:5000"]
    errors = schema_errors(doc)
    assert len(errors) >= 3, errors


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.kafka.yml"])
def test_every_service_is_on_the_external_kafka_network(name: str) -> None:
    doc = load(name)
    assert doc["networks"] == {"kafka-network": {"name": "kafka-network", "external": True}}
    for service_name, service in doc["services"].items():
        assert service.get("networks") == ["kafka-network"], service_name


def test_kafka_is_kraft_with_single_broker_transaction_settings() -> None:
    doc = load("docker-compose.kafka.yml")
    assert set(doc["services"]) == {"kafka", "schema-registry"}  # no ZooKeeper
    kafka = doc["services"]["kafka"]
    env = kafka["environment"]
    assert not any("ZOOKEEPER" in key for svc in doc["services"].values() for key in svc["environment"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    for key in ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
                "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"):
        assert env[key] == "1", key
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert "INTERNAL://kafka:29092" in env["KAFKA_ADVERTISED_LISTENERS"]
    registry = doc["services"]["schema-registry"]
    assert registry["image"].startswith("confluentinc/cp-schema-registry:")
    assert registry["environment"]["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"] == "PLAINTEXT://kafka:29092"
    assert registry["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    for name, service in doc["services"].items():
        assert "healthcheck" in service, name
        assert re.search(r":\d+\.\d+\.\d+$", service["image"]), f"{name}: pin the image version"


def test_services_reach_the_cluster_by_its_network_names() -> None:
    kafka = load("docker-compose.kafka.yml")["services"]
    for name, service in load("docker-compose.yml")["services"].items():
        env = service["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "${KAFKA_BOOTSTRAP_SERVERS:-kafka:29092}", name
        assert env["SCHEMA_REGISTRY_URL"] == "${SCHEMA_REGISTRY_URL:-http://schema-registry:8081}", name
    assert kafka["kafka"]["hostname"] == "kafka" and kafka["schema-registry"]["hostname"] == "schema-registry"


def test_host_ports_bind_to_loopback_by_default() -> None:
    for file in ("docker-compose.yml", "docker-compose.kafka.yml"):
        for name, service in load(file)["services"].items():
            for port in service.get("ports", []):
                assert str(port).startswith("${HOST_BIND:-127.0.0.1}:"), f"{file}: {name} publishes {port}"


def test_detector_scales() -> None:
    services = load("docker-compose.yml")["services"]
    assert set(services) == set(SERVICES)
    detector = services["detector"]
    assert "container_name" not in detector and "ports" not in detector and "hostname" not in detector
    # The instance id (hence transactional.id) must differ per replica: left to the container's host name.
    assert "FRAUDSTREAM_DETECTOR_INSTANCE_ID" not in detector["environment"]
    assert not any("container_name" in s for s in services.values())
    assert services["dashboard"]["ports"] == ["${HOST_BIND:-127.0.0.1}:${DASHBOARD_PORT:-5000}:5000"]
    assert services["alerts"]["profiles"] == ["alerts"]


def test_configuration_is_by_environment_only_and_names_real_settings() -> None:
    for name, service in load("docker-compose.yml")["services"].items():
        assert "command" not in service and "entrypoint" not in service, f"{name}: configure by environment"
        assert "env_file" not in service and "volumes" not in service, name
        for key, value in service["environment"].items():
            assert isinstance(value, str), f"{name}: {key} should be a string"
            if key in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL"):
                continue
            prefix = next((p for p in SECTIONS if key.startswith(p)), None)
            assert prefix is not None, f"{name}: {key} is no fraudstream setting"
            field = key.removeprefix(prefix).lower()
            assert field in SECTIONS[prefix].model_fields, f"{name}: {key} names no field of {SECTIONS[prefix]}"


def dockerfile(service: str) -> str:
    """The shared stages of the one Dockerfile, then ``service``'s target."""
    text = (ROOT / "Dockerfile").read_text()
    targets = re.split(r"^(?=FROM )", text, flags=re.M)
    shared = [t for t in targets if re.match(r"FROM python:3\.11-slim AS (build|base)\b", t)]
    mine = [t for t in targets if re.match(rf"FROM base AS {service}\b", t)]
    assert len(shared) == 2 and len(mine) == 1, f"no target {service!r} on the shared stages"
    return "".join(shared + mine)


def cli_commands() -> set[str]:
    group = typer.main.get_command(app)
    return set(getattr(group, "commands", {}))


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_dockerfile(service: str) -> None:
    text = dockerfile(service)
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages and all(s in ("python:3.11-slim", "base") for s in stages)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "run as a non-root user"
    assert re.search(r"^HEALTHCHECK .*\n?.*services\.healthcheck\", \"" + service, text, re.M)
    assert "COPY pyproject.toml" in text and "pip wheel" in text and "--no-index" in text
    command = re.search(r'^CMD \["([a-z]+)"\]', text, re.M)
    assert command and command.group(1) == SERVICES[service]
    assert command.group(1) in cli_commands()
    compose = load("docker-compose.yml")["services"][service]
    assert compose["build"] == {"context": ".", "target": service}


def test_pyproject_pins_every_runtime_dependency() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert deps and all("==" in d for d in deps), deps


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)

"""The local stack's pure parts: broker config, the registry path proxy, clear errors."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.config import StackSettings
from services.stack.kafka import server_properties
from services.stack.proxy import CCOMPAT_PREFIX, make_app
from services.stack.secure import SecureFiles, acl_bindings


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_server_properties_make_transactions_work_on_one_node(tmp_path: Path) -> None:
    settings = StackSettings.with_overrides(kafka_port=19092, controller_port=19093)
    props = _props(server_properties(settings, tmp_path))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr"):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.dirs"] == str(tmp_path)
    assert "zookeeper.connect" not in props


def test_settings_read_env_and_flags_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_STACK_KAFKA_PORT", "29092")
    monkeypatch.delenv("FRAUDSTREAM_STACK_REGISTRY_PORT", raising=False)
    assert StackSettings().kafka_port == 29092
    assert StackSettings.with_overrides(kafka_port=39092, registry_port=None).kafka_port == 39092
    assert StackSettings.with_overrides(registry_port=None).registry_port == 8081


def test_proxy_serves_the_ccompat_api_at_the_root() -> None:
    seen: list[tuple[str, str, bytes]] = []

    async def upstream_handler(request: web.Request) -> web.Response:
        seen.append((request.method, request.rel_url.path_qs, await request.read()))
        return web.json_response({"id": 7}, status=200)

    async def scenario() -> None:
        upstream_app = web.Application()
        upstream_app.router.add_route("*", "/{tail:.*}", upstream_handler)
        async with TestServer(upstream_app) as upstream:
            base = str(upstream.make_url("")).rstrip("/")
            async with TestClient(TestServer(make_app(base))) as client:
                resp = await client.post("/subjects/t-value/versions?normalize=true", data=b'{"schema":"x"}')
                assert resp.status == 200
                assert await resp.json() == {"id": 7}

    asyncio.run(scenario())
    assert seen == [("POST", f"{CCOMPAT_PREFIX}/subjects/t-value/versions?normalize=true", b'{"schema":"x"}')]


def test_a_missing_tool_says_what_to_install_or_to_use_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from services.stack import toolchain

    monkeypatch.setattr(shutil, "which", lambda _name: None)
    docker = ", or use Docker: docker compose -f docker-compose.kafka.yml up"
    with pytest.raises(toolchain.StackError) as java:
        toolchain.java()
    assert str(java.value) == (
        "Java not found: the local stack runs Kafka and the Schema Registry on a JVM. "
        "Install JDK 17+ (Debian/Ubuntu: apt-get install openjdk-17-jdk-headless)" + docker
    )
    with pytest.raises(toolchain.StackError) as mvn:
        toolchain.maven()
    assert str(mvn.value) == (
        "Maven not found: the local stack resolves pinned Kafka and registry jars with it. "
        "Install Maven 3.8+ (Debian/Ubuntu: apt-get install maven)" + docker
    )


def test_missing_java_gives_one_actionable_message(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path), "FRAUDSTREAM_STACK_DATA_DIR": str(tmp_path / "d")}
    proc = subprocess.run([sys.executable, "-m", "services.cli", "stack", "up"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert "Java not found" in proc.stderr and "JDK 17" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def _basic(user_info: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(user_info.encode()).decode()}


def test_proxy_with_basic_auth_refuses_requests_without_it() -> None:
    async def upstream_handler(request: web.Request) -> web.Response:
        assert "Authorization" not in request.headers  # the credentials stop at the proxy
        return web.json_response([], status=200)

    async def scenario() -> None:
        upstream_app = web.Application()
        upstream_app.router.add_route("*", "/{tail:.*}", upstream_handler)
        async with TestServer(upstream_app) as upstream:
            base = str(upstream.make_url("")).rstrip("/")
            async with TestClient(TestServer(make_app(base, "sr:pw"))) as client:
                assert (await client.get("/subjects")).status == 401
                assert (await client.get("/subjects", headers=_basic("sr:wrong"))).status == 401
                assert (await client.get("/subjects", headers=_basic("sr:pw"))).status == 200

    asyncio.run(scenario())


def test_secured_broker_has_sasl_ssl_scram_and_the_standard_authorizer(tmp_path: Path) -> None:
    settings = StackSettings.with_overrides(kafka_port=19092, controller_port=19093, data_dir=tmp_path)
    files = SecureFiles.of(settings)
    files.root.mkdir(parents=True)
    for name in ("admin", "detector", "reader", "store"):
        files.password_file(name).write_text(f"{name}-pw\n")
    props = _props(server_properties(settings, tmp_path, files.server_properties(settings)))
    assert props["advertised.listeners"] == "SASL_SSL://127.0.0.1:19092"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert "--add-scram" in files.format_arguments()
    reader = [b for b in acl_bindings() if b[0] == "reader"]
    assert {(b[1], b[3], b[4]) for b in reader if b[1] == "TOPIC"} == {
        ("TOPIC", "streaming.transactions.fraud", "READ"), ("TOPIC", "streaming.transactions.fraud", "DESCRIBE")}


def test_stacks_started_at_once_on_an_empty_cache_resolve_the_jars_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two test workers once unpacked the registry into one directory at the same time and one failed."""
    import threading
    import time

    from services.stack import toolchain

    calls: list[str] = []

    def slow_mvn(args: list[str], what: str) -> None:
        calls.append(what)
        time.sleep(0.3)  # long enough for the other caller to find nothing resolved yet

    monkeypatch.setattr(toolchain, "_mvn", slow_mvn)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(toolchain.kafka_classpath(tmp_path))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [f"Apache Kafka {toolchain.KAFKA_VERSION}"]
    assert results == [tmp_path / f"kafka-{toolchain.KAFKA_VERSION}" / "libs"] * 2

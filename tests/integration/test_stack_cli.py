"""`fraudstream stack up | status | down` on its own ports and data dir: a second, real stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.conftest import free_port

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "services.cli"]


def _run(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_stack_lifecycle(tmp_path: Path) -> None:
    data_dir = tmp_path / "stack"
    kafka_port, registry_port = free_port(), free_port()
    env = {
        **os.environ,
        "FRAUDSTREAM_STACK_DATA_DIR": str(data_dir),
        "FRAUDSTREAM_STACK_KAFKA_PORT": str(kafka_port),
        "FRAUDSTREAM_STACK_CONTROLLER_PORT": str(free_port()),
        "FRAUDSTREAM_STACK_REGISTRY_PORT": str(registry_port),
        "FRAUDSTREAM_STACK_APICURIO_PORT": str(free_port()),
        "FRAUDSTREAM_STACK_APICURIO_MANAGEMENT_PORT": str(free_port()),
    }
    bootstrap = f"127.0.0.1:{kafka_port}"
    try:
        up = _run(["stack", "up"], env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "stack is up" in up.stdout
        again = _run(["stack", "up"], env)  # idempotent
        assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr

        status = _run(["stack", "status"], env)
        assert status.returncode == 0 and status.stdout.count("healthy") == 2, status.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{registry_port}/subjects", timeout=10) as resp:
            assert isinstance(json.loads(resp.read()), list)

        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce("survives", value=b"still here", partition=0)
        assert producer.flush(30) == 0
        pids = [int(p.read_text()) for p in (data_dir / "run").glob("*.pid")]
        assert len(pids) == 3

        down = _run(["stack", "down"], env)
        assert down.returncode == 0, down.stderr
        assert not [pid for pid in pids if _alive(pid)], "a stack process survived `stack down`"
        assert _run(["stack", "status"], env).returncode == 1

        assert _run(["stack", "up"], env).returncode == 0
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "survives", "enable.auto.commit": False})
        consumer.assign([TopicPartition("survives", 0, 0)])
        msg = consumer.poll(30)
        consumer.close()
        assert msg is not None and msg.value() == b"still here", "data did not survive down/up"
    finally:
        _run(["stack", "down", "--clean"], env)
    assert not data_dir.exists()

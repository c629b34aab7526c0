"""``fraudstream demo`` (what ``make demo`` runs): it starts a local stack of its own, registers the
schemas, runs detector, dashboard and generator against that stack, and Ctrl-C (SIGINT) stops
every process it started, the stack included.

The demo gets a data dir and ports of its own; the caller's KAFKA_BOOTSTRAP_SERVERS and
SCHEMA_REGISTRY_URL point at nothing, so the test fails if a child talks to anything but the
stack the demo started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from services.config import TOPICS
from tests.conftest import free_port

NO_JVM = shutil.which("java") is None or shutil.which("mvn") is None
pytestmark = [pytest.mark.integration, pytest.mark.skipif(NO_JVM, reason="the demo's stack needs a JDK and Maven")]
ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and " Z " not in Path(f"/proc/{pid}/stat").read_text()


def _wait(condition: object, what: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s:.0f} s; demo output:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)


def _decisions(bootstrap: str, at_least: int, timeout_s: float) -> int:
    """Committed decisions on the legit and fraud topics (read_committed), once ``at_least`` are there."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"demo-test-{os.getpid()}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                         "enable.auto.commit": False})  # fmt: skip
    seen = 0
    try:
        consumer.subscribe([TOPICS.legit, TOPICS.fraud])
        deadline = time.monotonic() + timeout_s
        while seen < at_least and time.monotonic() < deadline:
            seen += sum(1 for m in consumer.consume(500, timeout=1.0) if m.error() is None)
    finally:
        consumer.close()
    return seen


def test_demo_runs_the_pipeline_and_ctrl_c_stops_everything_it_started(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("KAFKA", "CONTROLLER", "REGISTRY", "APICURIO", "APICURIO_MANAGEMENT")}
    dashboard_port = free_port()
    env = {
        **os.environ,
        **{f"FRAUDSTREAM_STACK_{name}_PORT": str(port) for name, port in ports.items()},
        "FRAUDSTREAM_STACK_DATA_DIR": str(tmp_path / "stack"),
        "FRAUDSTREAM_STACK_PARTITIONS": "3",
        "FRAUDSTREAM_DASHBOARD_PORT": str(dashboard_port),
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # nothing listens there
        "SCHEMA_REGISTRY_URL": "http://127.0.0.1:1",
        "PYTHONUNBUFFERED": "1",
    }
    bootstrap = f"127.0.0.1:{ports['KAFKA']}"
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen([sys.executable, "-m", "services", "demo", "--rate", "100"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        _wait(lambda: "fraudstream demo is running" in log.read_text() or demo.poll() is not None,
              "the demo did not start", log, 240)  # fmt: skip
        assert demo.poll() is None, f"the demo exited with {demo.returncode}:\n{log.read_text()[-4000:]}"
        assert f"dashboard: http://127.0.0.1:{dashboard_port}" in log.read_text()

        # Transactions flow generator -> detector -> legit/fraud, committed, on the demo's own stack.
        assert _decisions(bootstrap, 200, timeout_s=120) >= 200, log.read_text()[-4000:]

        def dashboard_up() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{dashboard_port}/", timeout=2) as resp:
                    return resp.status == 200 and b"fraudstream" in resp.read()
            except OSError:
                return False

        _wait(dashboard_up, "the dashboard did not answer", log, 60)

        stack_pids = [int(p.read_text()) for p in (tmp_path / "stack" / "run").glob("*.pid")]
        assert len(stack_pids) == 3 and all(_alive(p) for p in stack_pids), stack_pids  # Kafka, registry, proxy
        services = [p for p in _children(demo.pid) if p not in stack_pids]  # detector, dashboard, generator
        assert len(services) == 3, services

        demo.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends the demo
        assert demo.wait(120) == 0, log.read_text()[-4000:]
        text = log.read_text()
        assert "stopping ..." in text and "stack stopped" in text, text[-4000:]
        left = [p for p in [*services, *stack_pids] if _alive(p)]
        assert left == [], f"still running after Ctrl-C: {left}"
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
        subprocess.run([sys.executable, "-m", "services", "stack", "down"], cwd=ROOT, env=env,
                       capture_output=True, timeout=120, check=False)  # fmt: skip

"""`fraudstream generate` stopped by a signal flushes, and reports exactly what it sent."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import Endpoints, free_port
from tests.integration.eos_support import read_all

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_flushes_and_reports_what_was_sent(stack: Endpoints, unique: str, signum: signal.Signals) -> None:
    topic = f"gen-int-{unique}"
    metrics_port = free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
           "SCHEMA_REGISTRY_URL": stack.registry_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "services", "generate", "--rate", "0", "--topic", topic,
         "--labels-topic", f"{topic}.labels", "--partitions", "3", "--metrics-port", str(metrics_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    time.sleep(6)  # running at full speed, records in flight
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
        scraped = resp.read().decode()
    produced = re.search(r"^fraudstream_generator_records_total(?:\{[^}]*\})? ([0-9.e+]+)$", scraped, re.M)
    assert produced and float(produced.group(1)) > 0, scraped[:2000]
    assert re.search(r"^fraudstream_generator_target_rate(?:\{[^}]*\})? 0\.0$", scraped, re.M), scraped[:2000]
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "SystemError" not in out
    match = re.search(r"interrupted: sent ([\d,]+) transactions .* ([\d,]+) records delivered .* (\d+) failed", out)
    assert match, out
    sent = int(match.group(1).replace(",", ""))
    assert sent > 0 and int(match.group(2).replace(",", "")) == 2 * sent and match.group(3) == "0"
    assert len(read_all(stack.bootstrap_servers, (topic,), "read_committed")) == sent
    assert len(read_all(stack.bootstrap_servers, (f"{topic}.labels",), "read_committed")) == sent

"""A command started before its broker is reachable waits for it, then proceeds (real Kafka).

The broker is reached through a bootstrap address that refuses connections for the first seconds,
then forwards to the session's real broker (as a broker restarting behind a fixed address would);
clients then follow the broker's advertised listener.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from services.config import KafkaSettings
from services.kafka import check_broker
from tests.conftest import Endpoints, free_port

pytestmark = pytest.mark.integration


def _pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            s.close()


@pytest.fixture
def late_bootstrap(stack: Endpoints) -> Iterator[str]:
    """``127.0.0.1:PORT`` that refuses for 4 s, then forwards to the real broker."""
    host, _, port = stack.bootstrap_servers.split(",")[0].rpartition(":")
    listen = free_port()
    stop = threading.Event()

    def serve() -> None:
        if stop.wait(4.0):
            return
        with socket.create_server(("127.0.0.1", listen)) as server:
            server.settimeout(0.2)
            while not stop.is_set():
                try:
                    client, _ = server.accept()
                except TimeoutError:
                    continue
                upstream = socket.create_connection((host, int(port)))
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listen}"
    stop.set()
    thread.join(5)


def test_a_missing_broker_is_waited_for_then_used(late_bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="fraudstream.kafka"):
        admin = check_broker(KafkaSettings.only(bootstrap_servers=late_bootstrap), timeout_s=1.0, wait_s=60.0)
    assert time.monotonic() - started >= 3.5  # it did wait
    waits = [r.getMessage() for r in caplog.records if r.name == "fraudstream.kafka"]
    assert waits and all(w.startswith(f"waiting for the Kafka broker at {late_bootstrap}") for w in waits)
    assert admin.list_topics(timeout=10).topics  # and then it works

"""The dashboard's lag probe: no admin request while its own admin client finds the broker unreachable."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from services.dashboard import probe as probe_module
from services.dashboard.probe import Probe
from topology.runtime.outage import KafkaOutage


class _Admin:
    """An AdminClient whose broker goes away: ``poll`` serves the queued errors to ``error_cb``; a metadata
    request fails while ``down``."""

    def __init__(self) -> None:
        self.error_cb: Any = None
        self.queued: list[KafkaError] = []
        self.down = False
        self.metadata_requests = 0

    def poll(self, timeout: float) -> int:
        queued, self.queued = self.queued, []
        for err in queued:
            self.error_cb(err)
        return len(queued)

    def list_topics(self, timeout: float) -> object:
        self.metadata_requests += 1
        if self.down:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata"))
        return object()


def test_the_probe_sends_no_admin_request_while_its_own_client_finds_the_broker_unreachable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    probed: list[str] = []

    def probe_group(admin: Any, group: str, now_ms: int) -> dict[str, Any]:
        probed.append(group)  # admin requests: only here
        return {"ok": 1}

    monkeypatch.setattr(probe_module, "probe_group", probe_group)
    admin = _Admin()
    probe = Probe({}, "detectors", None, admin=admin)  # type: ignore[arg-type]  # no rules feed: its own gate
    now = [0.0]
    probe.outage = KafkaOutage(logging.getLogger("services.dashboard.probe"), clock=lambda: now[0])
    admin.error_cb = probe.outage.client_error
    with caplog.at_level(logging.WARNING, logger="services.dashboard.probe"):
        assert probe._once()[0] == {"ok": 1} and probed == ["detectors"]
        admin.down = True
        admin.queued = [KafkaError(KafkaError._TRANSPORT, "127.0.0.1:9092/1: Disconnected"),
                        KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down")]  # fmt: skip
        for _ in range(3):
            now[0] += 5
            group, _records = probe._once()
            assert group["error"] == "the Kafka broker is unreachable"
        assert probed == ["detectors"] and admin.metadata_requests == 3  # asked whether it is back, nothing else
        admin.down = False
        admin.queued = [KafkaError(KafkaError._TRANSPORT, "127.0.0.1:9092/bootstrap: Connect failed")]  # stale
        now[0] += 5
        assert probe._once()[0] == {"ok": 1} and probed == ["detectors", "detectors"]
        now[0] += 5
        assert probe._once()[0] == {"ok": 1} and admin.metadata_requests == 4
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0].startswith("the Kafka broker unreachable (127.0.0.1:9092/1: Disconnected)")
    assert lines[1] == "the Kafka broker reachable again after 15.0 s"  # from the round that saw it

"""services.healthcheck: the containers' HEALTHCHECK, against real local endpoints."""

from __future__ import annotations

import pytest

from services.healthcheck import main, probe_url
from services.metrics import Metrics
from tests.conftest import free_port


def test_probe_urls_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_DASHBOARD_PORT", "5555")
    monkeypatch.setenv("FRAUDSTREAM_ALERTS_METRICS_PORT", "9104")
    monkeypatch.setenv("FRAUDSTREAM_DETECTOR_METRICS_PORT", "9102")
    monkeypatch.delenv("FRAUDSTREAM_GENERATOR_METRICS_PORT", raising=False)
    assert probe_url("dashboard") == "http://127.0.0.1:5555/healthz"
    assert probe_url("alerts") == "http://127.0.0.1:9104/healthz"
    assert probe_url("detector") == "http://127.0.0.1:9102/metrics"
    with pytest.raises(SystemExit):
        probe_url("nope")


def test_healthy_while_the_endpoint_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    with Metrics("detector").serve(0, addr="127.0.0.1") as server:
        monkeypatch.setenv("FRAUDSTREAM_DETECTOR_METRICS_PORT", str(server.port))
        assert main(["healthcheck", "detector"]) == 0
    assert main(["healthcheck", "detector"]) == 1  # stopped


def test_without_a_port_the_broker_must_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAUDSTREAM_GENERATOR_METRICS_PORT", raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    assert main(["healthcheck", "generator"]) == 1
    assert main(["healthcheck"]) == 2

"""``fraudstream topology validate --broker`` against a real broker: the source must exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.detector import FRAUD_TOPOLOGY
from services.topology_cli import app
from tests.conftest import Endpoints
from tests.integration.eos_support import create_topics

pytestmark = pytest.mark.integration


def test_validate_checks_the_source_topic_on_the_broker(
    stack: Endpoints, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", stack.bootstrap_servers)
    source = f"in-{unique}"
    file = tmp_path / "t.yaml"
    file.write_text(FRAUD_TOPOLOGY.read_text().replace("topic: queueing.transactions", f"topic: {source}"))
    r = CliRunner().invoke(app, ["validate", "--file", str(file), "--broker"])
    assert r.exit_code == 1, r.output
    assert f"{file}: source.topic: topic '{source}' does not exist on {stack.bootstrap_servers}" in r.stderr
    create_topics(stack.bootstrap_servers, [source], 1)
    r = CliRunner().invoke(app, ["validate", "--file", str(file), "--broker"])
    assert r.exit_code == 0, r.output
    assert "ok (6 rules" in r.stdout

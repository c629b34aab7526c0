"""describe (text and Mermaid) and the `fraudstream topology` commands."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from services.config import TOPICS
from services.detector import FRAUD_TOPOLOGY, load_topology
from services.topology_cli import app
from tests.unit.topology_support import stream
from topology.plan.describe import describe_mermaid, describe_text


def test_text_lists_sources_processors_branches_sinks() -> None:
    t = stream("in", dlq="dead", name="app").split().branch("amount >= 900", to="big", name="fraud").default_branch(
        to="rest", name="legit"
    )
    text = describe_text(t)
    assert text.splitlines()[:5] == [
        "Topology: app",
        "Topologies:",
        "   Sub-topology: 0",
        "    Source: source-0 (topics: [in], key: source_account)",
        "      --> decode-0",
    ]
    assert "    Processor: split (first match wins; each rule evaluated once)" in text
    assert "      --> branch-fraud, branch-legit, dlq" in text
    assert "    Processor: branch-fraud (rules: [fraud@1])" in text
    assert "    Sink: sink-fraud (topic: big)\n      <-- branch-fraud" in text
    assert "    Sink: dlq (topic: dead)\n      <-- decode-0, split" in text
    assert "    fraud@1 [fraud]: amount >= 900" in text


def test_fraud_topology_shows_the_repartition_stage_and_stores() -> None:
    text = describe_text(load_topology(FRAUD_TOPOLOGY))
    assert "   Sub-topology: 1" in text
    assert "Sink: repartition-1 (topic: fraud-detector-by-target_account-amount-repartition" in text
    assert "changelog: fraud-detector-by-source_account-changelog" in text
    assert "Sink: sink-alerts (topic: streaming.transactions.alerts (FraudAlert per decision))" in text
    assert "Processor: branch-fraud (rules: [" in text and "--> sink-fraud, sink-alerts" in text


def test_mermaid() -> None:
    m = describe_mermaid(load_topology(FRAUD_TOPOLOGY))
    assert m.startswith("flowchart LR\n")
    assert '  T0[("queueing.transactions")]' in m
    assert "  T0 --> N0_source_0" in m
    assert "  N1_sink_fraud --> " in m
    assert "-. error .->" in m


def test_cli_describe_and_validate(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["describe"])
    assert r.exit_code == 0 and r.stdout.startswith("Topology: fraud-detector\n")
    r = runner.invoke(app, ["describe", "--format", "mermaid"])
    assert r.exit_code == 0 and r.stdout.startswith("flowchart LR")
    r = runner.invoke(app, ["validate", "--file", str(FRAUD_TOPOLOGY)])
    assert r.exit_code == 0 and "ok (6 rules" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(FRAUD_TOPOLOGY.read_text().replace("to: streaming.transactions.fraud", "to: streaming.fraud"))
    r = runner.invoke(app, ["validate", "--file", str(bad)])
    assert r.exit_code == 0  # any topic name is accepted
    declared = [a for t in TOPICS.model_dump().values() for a in ("--topic", t)]
    r = runner.invoke(app, ["validate", "--file", str(bad), *declared])
    assert r.exit_code == 1
    assert f"{bad}:" in r.stderr and "branches[0].to: unknown topic 'streaming.fraud'" in r.stderr
    r = runner.invoke(app, ["validate", "--file", str(FRAUD_TOPOLOGY), *declared])
    assert r.exit_code == 0

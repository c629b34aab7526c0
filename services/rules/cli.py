"""``fraudstream rules put|delete|list``: manage the compacted rules topic the detector applies at run time."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated, Any

import typer
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from services.config import DetectorSettings, KafkaSettings
from services.detector import parse_rule
from topology.plan.rules import RuleError

app = typer.Typer(help="Add, change, remove and list run-time rules (the rules topic).", no_args_is_help=True)

TopicOpt = Annotated[str | None, typer.Option("--topic", help="Rules topic (default: the detector's).")]


def _topic(topic: str | None) -> str:
    return topic or DetectorSettings().rules_topic


def rule_value(text: str, source: str) -> tuple[str, dict[str, Any]]:
    """The rules-topic value of a rule file (a ``rules:`` entry: id, version, description, when); validated."""
    try:
        doc = YAML(typ="safe").load(text)
    except YAMLError as exc:
        raise typer.BadParameter(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        raise typer.BadParameter(f"{source}: expected a mapping with an 'id'")
    enabled = doc.pop("enabled", True)
    definition = {k: v for k, v in doc.items() if k not in ("id", "version", "description")}
    buf = io.StringIO()
    YAML(typ="safe").dump(definition, buf)
    value = {
        "id": doc["id"],
        "version": doc.get("version", 1),
        "definition": buf.getvalue(),
        "enabled": bool(enabled),
        "description": doc.get("description"),
    }
    try:
        parse_rule(doc["id"], value)
    except RuleError as exc:
        raise typer.BadParameter(f"{source}: {exc}") from exc
    return doc["id"], value


@app.command("put")
def put(file: Annotated[Path, typer.Option("--file", help="Rule YAML.")], topic: TopicOpt = None) -> None:
    """Validate a rule locally, then publish it keyed by its id."""
    from services.rules.feed import publish

    rule_id, value = rule_value(file.read_text(encoding="utf-8"), str(file))
    kafka = KafkaSettings()
    publish(kafka, _topic(topic), rule_id, value)
    typer.echo(f"rule {rule_id}@{value['version']} published")


@app.command("delete")
def delete(rule_id: str, topic: TopicOpt = None) -> None:
    """Publish a tombstone: the detector removes the rule."""
    from services.rules.feed import publish

    kafka = KafkaSettings()
    publish(kafka, _topic(topic), rule_id, None)
    typer.echo(f"rule {rule_id} deleted")


@app.command("list")
def list_rules(topic: TopicOpt = None) -> None:
    """Read the rules topic to its end and print each live rule as ``id@version enabled``."""
    from services.rules.feed import RulesFeed

    kafka = KafkaSettings()
    feed = RulesFeed(kafka, _topic(topic))
    try:
        live: dict[str, dict[str, Any] | None] = dict(feed.read_to_end())
    finally:
        feed.close()
    for rule_id, value in sorted(live.items()):
        if value is not None:
            typer.echo(f"{rule_id}@{value['version']} {'enabled' if value['enabled'] else 'disabled'}")

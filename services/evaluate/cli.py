"""``fraudstream evaluate``: read labels and decisions from Kafka, print detection quality."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Annotated

import typer
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition
from rich.console import Console
from rich.table import Table

from services.config import TOPICS, KafkaSettings
from services.connection_options import connection
from services.evaluate.score import Decision, Label, Report, Scores, evaluate, related_from_alerts, with_related
from services.kafka import consumer_config, end_offsets, not_at_end, registry_client
from topology.records import H_RULES
from topology.serde.decoder import AvroDecoder, DecodeError


def drain(
    kafka: KafkaSettings, topic: str, *, idle_timeout_s: float = 10.0, missing_ok: bool = False
) -> Iterator[Message]:
    """Every committed record of ``topic`` from the beginning to the end offsets seen at the start
    (none when the topic does not exist and ``missing_ok``)."""
    consumer = Consumer(consumer_config(kafka, "fraudstream-evaluate"))
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            if missing_ok:
                return
            raise KafkaException(f"topic {topic} does not exist")
        ends = {p: end for p, end in end_offsets(consumer, topic, metadata.partitions).items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        last_progress = time.monotonic()
        while ends and time.monotonic() - last_progress < idle_timeout_s:
            batch = consumer.consume(10_000, timeout=0.5)
            if batch:
                last_progress = time.monotonic()
            for msg in batch:
                if msg.error() is None:
                    yield msg
            ends = not_at_end(consumer, topic, ends)
    finally:
        consumer.close()


def _rules(msg: Message) -> tuple[str, ...]:
    for header in msg.headers() or []:
        key, value = header[0], header[1]
        if key == H_RULES and isinstance(value, bytes):
            return tuple(r.split("@", 1)[0] for r in value.decode().split(",") if r)
    return ()


def collect(settings: KafkaSettings, labels_topic: str, legit_topic: str, fraud_topic: str, alerts_topic: str = ""
            ) -> tuple[list[Label], dict[str, Decision], dict[str, tuple[str, ...]]]:
    """Labels, decisions and (when ``alerts_topic`` is set) the transactions alerts named as related."""
    decoder = AvroDecoder(registry_client(settings))
    labels = []
    for msg in drain(settings, labels_topic):
        v = decoder.decode(msg.value())
        labels.append(Label(v["transaction_id"], v["scenario"], v["is_fraud"], v.get("incident_id")))
    decisions: dict[str, Decision] = {}
    for topic, fraud in ((legit_topic, False), (fraud_topic, True)):
        for msg in drain(settings, topic):
            try:
                tx_id = decoder.decode(msg.value())["transaction_id"]
            except DecodeError:
                continue  # not ours to judge: the detector dead-letters what it cannot decode
            decisions[tx_id] = Decision(tx_id, fraud, _rules(msg) if fraud else ())
    alert_messages = drain(settings, alerts_topic, missing_ok=True) if alerts_topic else iter(())
    alerts = (decoder.decode(msg.value()) for msg in alert_messages)
    return labels, decisions, related_from_alerts(alerts)


def print_report(report: Report, console: Console, title: str = "Detection quality (transaction level)") -> None:
    table = Table(title=title)
    for col in ("", "precision", "recall", "F1", "TP", "FP", "FN", "TN"):
        table.add_column(col, justify="right" if col else "left")

    def row(name: str, s: Scores) -> None:
        table.add_row(name, f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}",
                      str(s.tp), str(s.fp), str(s.fn), str(s.tn))

    row("overall", report.overall)
    for name, scores in sorted(report.by_rule.items()):
        row(f"rule {name}", scores)
    for name, scores in sorted(report.by_scenario.items()):
        row(f"scenario {name}", scores)
    console.print(table)
    o = report.overall
    console.print(f"confusion: predicted fraud/actual fraud {o.tp}, predicted fraud/actual legit {o.fp}, "
                  f"predicted legit/actual fraud {o.fn}, predicted legit/actual legit {o.tn}")
    for scenario, (caught, total) in sorted(report.incident_recall.items()):
        console.print(f"incidents {scenario}: caught {caught}/{total} ({caught / total:.1%})")
    if report.undecided or report.unlabelled:
        console.print(f"[yellow]{report.undecided} labelled transactions have no decision yet; "
                      f"{report.unlabelled} decisions have no label[/yellow]")


def evaluate_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (overall, by_rule, by_scenario).")]
    = False,
    bootstrap_servers: Annotated[str | None, typer.Option(help="[env: KAFKA_BOOTSTRAP_SERVERS]")] = None,
    schema_registry_url: Annotated[str | None, typer.Option(help="[env: SCHEMA_REGISTRY_URL]")] = None,
    labels_topic: Annotated[str, typer.Option(help="Ground-truth labels topic.")] = TOPICS.labels,
    legit_topic: Annotated[str, typer.Option()] = TOPICS.legit,
    fraud_topic: Annotated[str, typer.Option()] = TOPICS.fraud,
    alerts_topic: Annotated[str, typer.Option(
        help="FraudAlert topic: transactions its alerts name as related count as detected ('' = routing only)."
    )] = TOPICS.alerts,
) -> None:
    """Join the detector's decisions with the generator's labels: precision, recall, F1 per rule and scenario.

    Two views: ROUTING (the branch each transaction was sent to on arrival; the top-level JSON keys) and
    DETECTION (routed to fraud, or named as related by a later alert: the first payments of a pattern
    that a windowed rule could only see afterwards; JSON key ``detection``).
    """
    settings = connection(bootstrap_servers, schema_registry_url)
    try:
        labels, decisions, related = collect(settings, labels_topic, legit_topic, fraud_topic, alerts_topic)
    except KafkaException as err:
        typer.secho(f"error: {err.args[0]} (is Kafka up at {settings.bootstrap_servers}? "
                    "try `fraudstream stack up`)", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    report = evaluate(labels, decisions)
    detection = evaluate(labels, with_related(decisions, related))
    if as_json:
        typer.echo(json.dumps({**report.as_dict(), "detection": detection.as_dict(), "related": len(related)}))
    else:
        console = Console()
        print_report(report, console, "ROUTING: the branch each transaction was sent to on arrival")
        print_report(detection, console, f"DETECTION: routed to fraud, or one of {len(related)} transactions "
                                         "later alerts named as related")

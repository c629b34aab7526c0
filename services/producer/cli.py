"""`fraudstream produce --topic T`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from confluent_kafka import KafkaException
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from rich.console import Console

from services.connection_options import BootstrapServers, RegistryUrl, connection
from services.kafka import NotAuthorized, Unreachable, check_broker, check_registry, topic_partitions
from services.producer import LineError, produce
from topology.serde.decoder import AvroEncoder, RegistryError

# The options whose declaration is too long for a line of produce_command's signature.
SchemaFile = Annotated[
    Path | None, typer.Option(help="Value schema (.avsc), registered under <topic>-value; "
                              "default: the subject's latest registered version.")
]
KeyField = Annotated[
    str | None, typer.Option(help="Record field whose value is the key (default: an envelope's 'key').")
]


def produce_command(
    topic: Annotated[str, typer.Option(help="Topic to write (it must exist).")],
    schema_file: SchemaFile = None,
    key_field: KeyField = None,
    bootstrap_servers: BootstrapServers = None,
    registry_url: RegistryUrl = None,
) -> None:
    """Write JSON lines from stdin (as `consume` prints them) to a topic as Avro; a line that does not fit
    the schema stops the run, reported with its line number and field, and is not sent."""
    console = Console(stderr=True)
    kafka = connection(bootstrap_servers, registry_url)
    try:
        admin = check_broker(kafka)
        registry = check_registry(kafka)
        if topic_partitions(admin, topic) is None:
            console.print(f"[red]error:[/red] topic {topic!r} does not exist on {kafka.bootstrap_servers}")
            raise typer.Exit(1)
        encoder, schema = _encoder(registry, topic, schema_file)
        result = produce(kafka, topic, sys.stdin, encoder, schema, key_field=key_field)
    except LineError as exc:
        console.print(f"[red]error:[/red] {exc} (not sent; the lines before it were)", highlight=False,
                      soft_wrap=True)
        raise typer.Exit(1) from None
    except (Unreachable, NotAuthorized, RegistryError, KafkaException, OSError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if result.failed:
        console.print(f"[red]error:[/red] {result.failed} of {result.sent + result.failed} records not delivered: "
                      f"{result.errors[0]}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"sent {result.sent} records to {topic}", highlight=False)


def _encoder(registry: SchemaRegistryClient, topic: str, schema_file: Path | None) -> tuple[AvroEncoder, object]:
    """The value encoder of ``topic`` and its parsed schema (from the file, or the latest registered)."""
    subject = f"{topic}-value"
    if schema_file is not None:
        text = schema_file.read_text(encoding="utf-8")
        return AvroEncoder(registry, text, subject), json.loads(text)
    try:
        text = registry.get_latest_version(subject).schema.schema_str or ""
    except SchemaRegistryError as exc:
        raise RegistryError(f"no schema registered under {subject!r} ({exc.error_message}); "
                            "pass --schema-file") from None
    return AvroEncoder(registry, text, subject, auto_register=False), json.loads(text)

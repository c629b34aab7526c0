"""The ``fraudstream`` command: one entry point, one sub-command per job."""

from __future__ import annotations

import io
import sys
from typing import TextIO

import typer
from pydantic import ValidationError

from services.alerts.cli import alerts
from services.bench.cli import app as bench_app
from services.client_properties import PropertiesError, redact
from services.config import KafkaSettings
from services.consumer.cli import consume_command
from services.dashboard.cli import dashboard
from services.demo import demo_command
from services.detector.cli import detect_command
from services.evaluate.cli import evaluate_command
from services.generator.cli import generate
from services.producer.cli import produce_command
from services.rules.cli import app as rules_app
from services.schemas.cli import app as schemas_app
from services.stack.cli import app as stack_app
from services.topology_cli import app as topology_app

app = typer.Typer(
    name="fraudstream",
    help="Real-time fraud detection on Apache Kafka: generate, detect, watch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(stack_app, name="stack")
app.add_typer(topology_app, name="topology")
app.add_typer(schemas_app, name="schemas")
app.add_typer(bench_app, name="bench")
app.add_typer(rules_app, name="rules")
app.command("generate")(generate)
app.command("consume")(consume_command)
app.command("produce")(produce_command)
app.command("demo")(demo_command)
app.command("detect")(detect_command)
app.command("dashboard")(dashboard)
app.command("alerts")(alerts)
app.command("evaluate")(evaluate_command)


def main() -> None:
    """Run the CLI; a bad setting (env var or flag) is one clear line naming it, not a traceback.
    Everything written to stderr (logs, errors) has the connection's secrets redacted."""
    try:
        sys.stderr = RedactingStream(sys.stderr, KafkaSettings().secrets())
        app()
    except PropertiesError as err:
        typer.secho(f"configuration error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except ValidationError as err:
        typer.secho(f"configuration error: {describe_settings_error(err)}", fg=typer.colors.RED, err=True)
        sys.exit(2)


def describe_settings_error(err: ValidationError) -> str:
    """``FRAUDSTREAM_<SECTION>_<FIELD>='value': what is wrong`` for each invalid setting."""
    from services import config

    section = getattr(config, err.title, None)
    prefix = str(section.model_config.get("env_prefix", "")) if section is not None else ""
    parts = []
    for e in err.errors():
        name = ".".join(str(x) for x in e["loc"])
        env = f"{prefix}{name}".upper() if prefix else name
        parts.append(f"{env}={e.get('input')!r}: {e['msg']}")
    return "; ".join(parts)


class RedactingStream(io.TextIOBase):
    """A text stream writing to ``inner`` with secrets and URL credentials replaced by ``***``."""

    def __init__(self, inner: TextIO, secrets: list[str]) -> None:
        self.inner, self.secrets = inner, secrets

    def write(self, text: str) -> int:
        self.inner.write(redact(text, self.secrets))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()


if __name__ == "__main__":
    main()

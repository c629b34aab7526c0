"""The ``fraudstream`` command: one entry point, one sub-command per job."""

from __future__ import annotations

import typer

from services.alerts.cli import alerts
from services.bench.cli import app as bench_app
from services.consumer.cli import consume_command
from services.dashboard.cli import dashboard
from services.demo import demo_command
from services.detector.cli import detect_command
from services.evaluate.cli import evaluate_command
from services.generator.cli import generate
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
app.command("generate")(generate)
app.command("consume")(consume_command)
app.command("demo")(demo_command)
app.command("detect")(detect_command)
app.command("dashboard")(dashboard)
app.command("alerts")(alerts)
app.command("evaluate")(evaluate_command)


if __name__ == "__main__":
    app()

"""``fraudstream stack up | down | status``."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Annotated

import typer

from services.config import StackSettings
from services.stack import LocalStack, StackError

app = typer.Typer(
    help="The Docker-free local stack: Apache Kafka (KRaft) + a Confluent-API Schema Registry on the JVM.",
    no_args_is_help=True,
)

DataDir = Annotated[
    Path | None, typer.Option(help="Where data, logs and pid files live. [env: FRAUDSTREAM_STACK_DATA_DIR]")
]
KafkaPort = Annotated[int | None, typer.Option(help="Broker port. [env: FRAUDSTREAM_STACK_KAFKA_PORT; default 9092]")]
ControllerPort = Annotated[int | None, typer.Option(help="KRaft controller port. [default 9093]")]
RegistryPort = Annotated[
    int | None, typer.Option(help="Schema Registry port. [env: FRAUDSTREAM_STACK_REGISTRY_PORT; default 8081]")
]


def _stack(data_dir: Path | None, kafka_port: int | None, controller_port: int | None,
           registry_port: int | None, secure: bool | None = None) -> LocalStack:
    return LocalStack(StackSettings.with_overrides(
        data_dir=data_dir, kafka_port=kafka_port, controller_port=controller_port, registry_port=registry_port,
        secure=secure or None,
    ))


def _fail(err: Exception) -> typer.Exit:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@app.command()
def up(data_dir: DataDir = None, kafka_port: KafkaPort = None, controller_port: ControllerPort = None,
       registry_port: RegistryPort = None,
       secure: Annotated[bool, typer.Option(
           "--secure", help="SASL_SSL (SCRAM-SHA-512) listener, ACLs and registry basic auth; secrets in files "
           "under the data dir. [env: FRAUDSTREAM_STACK_SECURE]")] = False) -> None:
    """Start Kafka and the registry (if not running) and wait until both answer."""
    stack = _stack(data_dir, kafka_port, controller_port, registry_port, secure)
    started = time.monotonic()
    try:
        status = stack.up(echo=typer.echo)
    except StackError as err:
        raise _fail(err) from None
    s = stack.settings
    typer.secho(f"stack is up in {time.monotonic() - started:.1f}s", fg=typer.colors.GREEN)
    typer.echo(f"  Kafka            {s.bootstrap_servers}  (pid {status.kafka_pid})")
    typer.echo(f"  Schema Registry  {s.registry_url}  (pid {status.registry_pid}, proxy pid {status.proxy_pid})")
    typer.echo(f"  data and logs    {s.data_dir.resolve()}")
    if not stack.kafka.secure:
        typer.echo(f"  export KAFKA_BOOTSTRAP_SERVERS={s.bootstrap_servers} SCHEMA_REGISTRY_URL={s.registry_url}")
        return
    typer.echo("  secured: SASL_SSL (SCRAM-SHA-512), ACLs, registry basic auth. The detector principal's env:")
    for name, value in stack.kafka.files.client_env(s).items():
        typer.echo(f"  export {name}={shlex.quote(value)}")
    typer.echo(f"  (read-only principal: KAFKA_SASL_USERNAME=reader "
               f"KAFKA_SASL_PASSWORD_FILE={shlex.quote(str(stack.kafka.files.password_file('reader')))})")


@app.command()
def down(
    data_dir: DataDir = None,
    clean: Annotated[bool, typer.Option("--clean", help="Also delete all data (topics, schemas).")] = False,
) -> None:
    """Stop what `up` started; data survives unless --clean."""
    stack = _stack(data_dir, None, None, None)
    stopped = stack.down(clean=clean)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    if clean:
        typer.echo(f"removed {stack.settings.data_dir.resolve()}")


@app.command()
def status(data_dir: DataDir = None, kafka_port: KafkaPort = None, registry_port: RegistryPort = None) -> None:
    """Show what runs and whether it answers; exit 1 unless both are healthy."""
    stack = _stack(data_dir, kafka_port, None, registry_port)
    st = stack.status()
    s = stack.settings

    def line(name: str, where: str, pid: int | None, healthy: bool) -> None:
        state = "healthy" if healthy else ("running, not answering" if pid else "stopped")
        color = typer.colors.GREEN if healthy else typer.colors.RED
        typer.echo(f"  {name:<16} {where:<24} pid {pid or '-':<8} ", nl=False)
        typer.secho(state, fg=color)

    line("Kafka", s.bootstrap_servers, st.kafka_pid, st.kafka_healthy)
    line("Schema Registry", s.registry_url, st.registry_pid, st.registry_healthy)
    if not st.up:
        raise typer.Exit(1)

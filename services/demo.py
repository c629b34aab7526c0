"""``fraudstream demo``: the whole pipeline on the local stack, in one command; Ctrl-C stops what it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Annotated

import typer

from services.config import DashboardSettings, StackSettings
from services.stack import LocalStack, StackError


@dataclass
class Child:
    """One service of the demo, run as ``python -m services <args>``."""

    name: str
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # Own session: a terminal's Ctrl-C reaches only the demo, which stops the children in order.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services", *self.args], env=self.env, start_new_session=True
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def demo_command(
    rate: Annotated[float, typer.Option(help="Generator rate in transactions per second.")] = 200.0,
    keep_stack: Annotated[bool, typer.Option(help="Leave the stack running on exit.")] = False,
) -> None:
    """Start the local stack, register schemas, run generator + detector + dashboard; Ctrl-C stops them."""
    stack = LocalStack(StackSettings())
    was_up = stack.status().up
    try:
        stack.up(echo=typer.echo)
    except StackError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    env_note = f"KAFKA_BOOTSTRAP_SERVERS={stack.settings.bootstrap_servers}"
    # Every child talks to the stack this demo runs, whatever the caller's environment points at.
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.settings.bootstrap_servers,
           "SCHEMA_REGISTRY_URL": stack.settings.registry_url}  # fmt: skip
    register = subprocess.run([sys.executable, "-m", "services", "schemas", "register"], env=env, check=False)
    if register.returncode != 0:
        typer.secho("error: registering schemas failed (see above)", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    dashboard = DashboardSettings()
    children = [
        Child("detector", ["detect"], env),
        Child("dashboard", ["dashboard"], env),
        Child("generator", ["generate", "--rate", str(rate)], env),  # last started, first stopped
    ]
    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for child in children:
            child.start()
        typer.secho(f"\nfraudstream demo is running ({env_note})", fg=typer.colors.GREEN)
        typer.secho(f"  dashboard: http://{dashboard.host}:{dashboard.port}", fg=typer.colors.GREEN, bold=True)
        typer.echo("  Ctrl-C stops everything this demo started.\n")
        while not stopping:
            for child in children:
                if child.proc is not None and child.proc.poll() is not None:
                    typer.secho(f"{child.name} exited with {child.proc.returncode}; stopping the demo",
                                fg=typer.colors.RED, err=True)
                    stopping = True
            time.sleep(0.5)
    finally:
        typer.echo("stopping ...")
        for child in reversed(children):
            child.stop()
        if not was_up and not keep_stack:
            stack.down()
            kept = stack.settings.data_dir
            typer.echo(f"stack stopped (data kept in {kept}; `fraudstream stack down --clean` wipes it)")

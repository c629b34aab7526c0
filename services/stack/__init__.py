"""The Docker-free local stack: real Apache Kafka (KRaft) and a Confluent-API Schema Registry on the JVM."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.config import StackSettings
from services.stack.kafka import KafkaNode
from services.stack.registry import Registry
from services.stack.secure import apply_acls
from services.stack.toolchain import StackError, java, maven

__all__ = ["LocalStack", "StackError", "StackStatus"]


@dataclass(frozen=True)
class StackStatus:
    """What is running, and whether it answers."""

    kafka_pid: int | None
    kafka_healthy: bool
    registry_pid: int | None
    proxy_pid: int | None
    registry_healthy: bool

    @property
    def up(self) -> bool:
        return self.kafka_healthy and self.registry_healthy


class LocalStack:
    """Start (idempotently), check and stop the local broker and registry."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.kafka = KafkaNode(settings)
        self.registry = Registry(settings)

    def up(self, echo: Callable[[str], None] = print) -> StackStatus:
        """Start whatever is not running, wait until both really answer; returns the status."""
        java()
        maven()
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + s.start_timeout_s
        if self.kafka.daemon.pid() is None:
            echo(f"starting Kafka on {s.bootstrap_servers} (data in {s.data_dir / 'kafka'})")
            self.kafka.start()
        else:
            echo(f"Kafka already running (pid {self.kafka.daemon.pid()})")
        if self.registry.apicurio.pid() is None or self.registry.proxy.pid() is None:
            echo(f"starting Schema Registry on {s.registry_url}")
        else:
            echo(f"Schema Registry already running (pid {self.registry.apicurio.pid()})")
        if self.kafka.secure:
            self.kafka.files.ensure(s.host)  # the registry's basic auth too, before the proxy starts
        self.registry.start()
        self.kafka.wait_healthy(deadline)
        if self.kafka.secure:
            apply_acls(self.kafka.connection())
        self.registry.wait_healthy(deadline)
        self.registry.ensure_backward_default()
        return self.status()

    def status(self) -> StackStatus:
        return StackStatus(
            kafka_pid=self.kafka.daemon.pid(),
            kafka_healthy=self.kafka.daemon.pid() is not None and self.kafka.healthy(timeout_s=3.0),
            registry_pid=self.registry.apicurio.pid(),
            proxy_pid=self.registry.proxy.pid(),
            registry_healthy=self.registry.healthy(),
        )

    def down(self, *, clean: bool = False) -> list[str]:
        """Stop what ``up`` started (by pid); ``clean`` also wipes the data dir. Returns what was stopped."""
        stopped = [
            d.name
            for d in (self.registry.proxy, self.registry.apicurio, self.kafka.daemon)
            if d.stop()
        ]
        if clean:
            shutil.rmtree(self.settings.data_dir, ignore_errors=True)
        return stopped

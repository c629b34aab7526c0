"""A single-node Apache Kafka in KRaft mode (combined broker + controller), run from Maven jars."""

from __future__ import annotations

import base64
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from services.config import KafkaSettings, StackSettings
from services.kafka import QUIET_LOGGER, admin_config
from services.stack.process import Daemon
from services.stack.secure import SecureFiles
from services.stack.toolchain import StackError, java, kafka_classpath

HEALTH_TOPIC = "_fraudstream_health"

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def server_properties(s: StackSettings, log_dir: Path, overrides: dict[str, str] | None = None) -> str:
    """The broker's configuration: one node, transactions work with replication factor 1
    (``overrides``: the secured listener's settings)."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{s.host}:{s.controller_port}",
        "listeners": f"PLAINTEXT://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{s.host}:{s.kafka_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": str(s.partitions),
        "auto.create.topics.enable": "true",
        # One broker: internal topics must not ask for more replicas than exist.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "6",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "6",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Fast aborts of a crashed producer's open transaction in development.
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "5000",
        "log.retention.hours": "168",
        **(overrides or {}),
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


class KafkaNode:
    """Start, stop and health-check the local broker."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.home = settings.data_dir / "kafka"
        self.daemon = Daemon("kafka", settings.data_dir / "run")
        self.files = SecureFiles.of(settings)

    @property
    def secure(self) -> bool:
        """Secured: asked for, or this data dir was set up secured."""
        return self.settings.secure or self.files.exists()

    def connection(self) -> KafkaSettings:
        """How the stack's own clients (probes, ACL setup) connect: as ``admin`` when secured."""
        if self.secure:
            return self.files.connection(self.settings, "admin")
        return KafkaSettings.only(bootstrap_servers=self.settings.bootstrap_servers)

    def start(self) -> None:
        """Resolve jars, write config, format storage on first start, launch the broker."""
        s = self.settings
        libs = kafka_classpath(s.cache_dir)
        self.home.mkdir(parents=True, exist_ok=True)
        formatted = (self.home / "data" / "meta.properties").exists()
        extra_format: list[str] = []
        overrides: dict[str, str] = {}
        if self.secure:
            if formatted and not self.files.exists():
                raise StackError(f"{s.data_dir} holds a stack set up without --secure: use another --data-dir")
            self.files.ensure(s.host)
            overrides, extra_format = self.files.server_properties(s), self.files.format_arguments()
        config = self.home / "server.properties"
        config.touch(mode=0o600)  # the secured one holds the key store passwords
        config.write_text(server_properties(s, (self.home / "data").resolve(), overrides))
        (self.home / "log4j2.properties").write_text(LOG4J2)
        base = [
            java(), "-cp", f"{libs}/*",
            f"-Dlog4j2.configurationFile={(self.home / 'log4j2.properties').resolve()}",
            f"-Dkafka.logs.dir={self.daemon.run_dir.resolve()}",
        ]
        if not formatted:
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            fmt = subprocess.run(
                [*base, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                 "-c", str(config.resolve()), "--ignore-formatted", *extra_format],
                capture_output=True, text=True, check=False,
            )
            if fmt.returncode != 0:
                raise StackError(self.files.redact(f"Formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}"))
        self.daemon.start(
            [*base, f"-Xmx{s.kafka_heap}", f"-Xms{s.kafka_heap}", "-XX:+UseG1GC", "kafka.Kafka", str(config.resolve())],
            cwd=self.home,
        )

    def healthy(self, timeout_s: float = 5.0) -> bool:
        """True when the broker answers metadata and a produce/consume round trip succeeds."""
        try:
            return _round_trip(self.connection(), timeout_s)
        except KafkaException:
            return False

    def wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.daemon.exited_early():
                raise StackError(f"Kafka exited during start-up. Last log lines:\n{self.daemon.log_tail()}")
            if self.healthy():
                return
            time.sleep(1.0)
        raise StackError(f"Kafka did not become healthy in time. Last log lines:\n{self.daemon.log_tail()}")


def _round_trip(kafka: KafkaSettings, timeout_s: float) -> bool:
    # Quiet clients: while the broker starts, every refused connection would otherwise print a line.
    quiet: dict[str, Any] = {**kafka.client_config(), "logger": QUIET_LOGGER}
    admin = AdminClient(admin_config(kafka, **{"socket.timeout.ms": int(timeout_s * 1000)}))
    if not admin.list_topics(timeout=timeout_s).brokers:
        return False
    token = uuid.uuid4().bytes
    written: list[int] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        offset = msg.offset()
        if err is None and offset is not None:
            written.append(offset)

    producer = Producer({**quiet, "message.timeout.ms": int(timeout_s * 1000)})
    producer.produce(HEALTH_TOPIC, value=token, partition=0, on_delivery=delivered)
    if producer.flush(timeout_s) != 0 or not written:
        return False
    consumer = Consumer({
        **quiet, "group.id": f"_fraudstream_health_{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
    })
    try:
        consumer.assign([TopicPartition(HEALTH_TOPIC, 0, written[0])])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.value() == token:
                return True
        return False
    finally:
        consumer.close()

"""services.kafka: config builders, and one clear message when nothing answers (closed local ports)."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from services.cli import app
from services.config import KafkaSettings
from services.kafka import Unreachable, check_broker, check_registry, consumer_config, producer_config
from tests.conftest import free_port


def _at(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap)



def test_producer_is_idempotent_compressed_and_batched() -> None:
    config = producer_config(_at("b:9092"), **{"compression.type": "zstd"})
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    assert config["compression.type"] == "zstd" and config["linger.ms"] > 0


def test_consumer_reads_committed_by_default() -> None:
    config = consumer_config(_at("b:9092"), "g", from_beginning=True)
    assert config["isolation.level"] == "read_committed" and config["auto.offset.reset"] == "earliest"
    assert consumer_config(_at("b:1"), "g", read_committed=False)["isolation.level"] == "read_uncommitted"


def test_unreachable_broker_is_one_clear_message() -> None:
    port = free_port()
    start = time.monotonic()
    with pytest.raises(Unreachable, match=rf"Kafka broker at 127.0.0.1:{port} is unreachable after 2 attempts"):
        check_broker(_at(f"127.0.0.1:{port}"), timeout_s=1.0, attempts=2)
    assert time.monotonic() - start < 10


def test_unreachable_registry_is_one_clear_message() -> None:
    port = free_port()
    with pytest.raises(Unreachable, match=rf"Schema Registry at http://127.0.0.1:{port} is unreachable"):
        check_registry(KafkaSettings(schema_registry_url=f"http://127.0.0.1:{port}"), attempts=2)


@pytest.mark.parametrize(
    "args",
    [
        ["consume", "--topic", "t"],
        ["generate", "--count", "1"],
    ],
)
def test_commands_exit_2_without_a_traceback_when_the_broker_is_down(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_STARTUP_WAIT_S", "0")  # no wait: the first refusal ends it
    result = CliRunner().invoke(app, [*args, "--bootstrap-servers", f"127.0.0.1:{free_port()}"])
    assert result.exit_code == 2, result.output
    assert "is unreachable" in result.output and "Traceback" not in result.output


def test_schemas_register_exits_2_when_the_registry_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_STARTUP_WAIT_S", "0")
    result = CliRunner().invoke(app, ["schemas", "register", "--registry-url", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 2 and "Schema Registry at" in result.output


def test_schemas_check_exits_2_when_the_registry_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_STARTUP_WAIT_S", "0")
    result = CliRunner().invoke(app, ["schemas", "check", "--registry-url", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 2 and "Schema Registry at" in result.output


def test_a_missing_broker_is_waited_for_with_one_line_per_wait(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    with caplog.at_level("WARNING", logger="fraudstream.kafka"), pytest.raises(Unreachable) as info:
        check_broker(_at(f"127.0.0.1:{port}"), timeout_s=0.5, wait_s=2.0)
    waits = [r.getMessage() for r in caplog.records if r.name == "fraudstream.kafka"]
    assert len(waits) >= 2, waits  # it kept trying for the whole wait, saying so each time
    assert all(w.startswith(f"waiting for the Kafka broker at 127.0.0.1:{port} (") for w in waits)
    assert all("retrying in" in w and "KAFKA_STARTUP_WAIT_S" in w for w in waits)
    assert "KAFKA_STARTUP_WAIT_S" in str(info.value)


def test_the_startup_wait_is_a_typed_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert KafkaSettings().startup_wait_s == 300.0
    monkeypatch.setenv("KAFKA_STARTUP_WAIT_S", "12.5")
    assert KafkaSettings().startup_wait_s == 12.5
    monkeypatch.setenv("KAFKA_STARTUP_WAIT_S", "-1")
    with pytest.raises(ValueError):
        KafkaSettings()


def test_end_offsets_wait_out_a_partition_without_a_leader_yet() -> None:
    """Right after a topic is created (or a broker restarts) a watermark query may find no leader yet."""
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    from services.kafka import end_offsets

    class Leaderless:
        def __init__(self, failures: int, code: int) -> None:
            self.failures, self.code, self.calls = failures, code, 0

        def get_watermark_offsets(self, tp: TopicPartition, timeout: float, cached: bool = False) -> tuple[int, int]:
            self.calls += 1
            if self.calls <= self.failures:
                raise KafkaException(KafkaError(self.code))
            return 0, 42

    c = Leaderless(2, KafkaError.NOT_LEADER_FOR_PARTITION)
    assert end_offsets(c, "t", [0]) == {0: 42} and c.calls == 3  # type: ignore[arg-type]
    other = Leaderless(1, KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        end_offsets(other, "t", [0])  # type: ignore[arg-type]
    assert other.calls == 1  # not retried


def test_a_decode_is_tried_again_while_the_registry_is_down_with_one_line_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio
    import logging

    from services.kafka import until_registry_answers
    from topology.runtime.outage import Outage
    from topology.serde.decoder import RegistryError

    failures = iter([RegistryError("lookup of schema id 1 failed"), RegistryError("not asked again for 1.0 s")])
    errors: list[str] = []

    async def attempt() -> str:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return "record"

    outage = Outage("the Schema Registry", logging.getLogger("test.registry"))
    with caplog.at_level(logging.WARNING, logger="test.registry"):
        got = asyncio.run(until_registry_answers(attempt, outage, asyncio.Event(), pause_s=0.01,
                                                 on_error=lambda e: errors.append(str(e))))  # fmt: skip
    assert got == "record" and len(errors) == 2 and not outage.down
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "unreachable (lookup of schema id 1 failed)" in lines[0]
    assert lines[1].startswith("the Schema Registry reachable again")


def test_a_stop_ends_the_wait_for_the_registry_with_nothing() -> None:
    import asyncio
    import logging

    from services.kafka import until_registry_answers
    from topology.runtime.outage import Outage
    from topology.serde.decoder import RegistryError

    async def attempt() -> str:
        raise RegistryError("down")

    async def run() -> str | None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        return await until_registry_answers(attempt, Outage("r", logging.getLogger("test.r")), stop, pause_s=10.0)

    assert asyncio.run(asyncio.wait_for(run(), timeout=5)) is None  # the 10 s pause ended by the stop

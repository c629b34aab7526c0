"""One log line when the broker (or the registry) stops answering, one when it is back."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError, KafkaException

from tests.unit.runtime.support import Counter, cluster, drain, put, runtime, values
from topology.runtime.outage import CLIENT_LOGGER, KafkaOutage, Outage

LOG = logging.getLogger("test.outage")


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    o = Outage("the registry", LOG, clock=lambda: now[0])
    o.back()  # nothing was down: silent
    for _ in range(5):
        o.lost("connection refused")
    now[0] = 142.5
    o.back()
    o.back()
    assert _lines(caplog, "unreachable") == ["the registry unreachable (connection refused): waiting for it, retrying"]
    assert _lines(caplog, "reachable again") == ["the registry reachable again after 42.5 s"]
    assert not o.down and o.outages == 1
    o.lost("again")
    assert o.down and o.outages == 2 and len(_lines(caplog, "unreachable (again)")) == 1


def test_late_reports_neither_end_an_outage_nor_begin_one_within_settle_s(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    o = KafkaOutage(LOG, clock=lambda: now[0], settle_s=1.0)
    o.lost("down")
    now[0] = 0.3
    o.back()  # a delivery report of a record sent before the outage
    assert o.down
    now[0] = 40.0
    o.back()
    now[0] = 40.2
    o.lost("an error callback queued during the outage")
    assert not o.down and o.outages == 1
    now[0] = 41.5
    o.lost("down again")
    assert o.down and o.outages == 2
    assert len(_lines(caplog, "unreachable")) == 2 and len(_lines(caplog, "reachable again")) == 1


def test_kafka_outage_starts_on_transport_errors_and_warns_on_others(caplog: pytest.LogCaptureFixture) -> None:
    o = KafkaOutage(LOG)
    o.client_error(KafkaError(KafkaError._TRANSPORT, "Connection refused"))
    o.client_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert o.down and len(_lines(caplog, "unreachable")) == 1
    o.client_error(KafkaError(KafkaError._TIMED_OUT_QUEUE, "queue timed out"))
    assert _lines(caplog, "kafka client") == ["kafka client: _TIMED_OUT_QUEUE: queue timed out"]


def test_the_client_logger_drops_connection_noise_and_keeps_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=CLIENT_LOGGER.name)
    # As confluent-kafka logs librdkafka's lines: log(level, "%s [%s] %s", facility, client, message).
    CLIENT_LOGGER.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", "Connect to ipv4#127.0.0.1:9 failed")
    CLIENT_LOGGER.log(logging.ERROR, "%s [%s] %s", "ERROR", "rdkafka#producer-1", "1/1 brokers are down")
    CLIENT_LOGGER.log(logging.WARNING, "%s [%s] %s", "CONFWARN", "rdkafka#producer-1", "unknown property")
    assert [r.getMessage() for r in caplog.records] == ["CONFWARN [rdkafka#producer-1] unknown property"]


def test_a_commit_in_a_broker_outage_replaces_the_producer_and_logs_the_outage_once_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """librdkafka may hang in a transactional call repeated after a lost connection: the runtime replaces
    the producer instead (the new one's ``init_transactions`` waits the outage out)."""
    c = cluster(1)
    put(c, (0, b"a", b"x"))
    rt = runtime(c, Counter())
    rt.open()
    rt.step()  # assigned: paused until restored
    rt.step()  # restored, resumed, processed
    rt._on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))  # as the error callback says
    down = KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down", retriable=True))
    c.fail("send_offsets_to_transaction", down)
    c.fail("init_transactions", KafkaException(KafkaError(KafkaError._TRANSPORT, "still down", retriable=True)))
    rt.outage._settle_s = 0.0  # the new producer's init succeeds 0.5 s into the outage: take that as its end
    assert not rt.commit()  # given up: the new producer's init waited, then the input is read again
    drain(rt)
    assert values(c, "out") == [b"a=1"] and c.epochs["app-one"] == 1
    assert len(_lines(caplog, "the Kafka broker unreachable")) == 1
    assert len(_lines(caplog, "the Kafka broker reachable again")) == 1
    assert not rt.outage.down and rt.outage.outages == 1


def test_after_a_broker_outage_the_next_transaction_starts_on_a_new_producer() -> None:
    c = cluster(1)
    put(c, (0, b"a", b"x"))
    rt = runtime(c, Counter())
    rt.open()
    drain(rt)
    assert c.epochs["app-one"] == 0
    rt._on_error(KafkaError(KafkaError._TRANSPORT, "Connection refused"))  # between transactions
    put(c, (0, b"b", b"x"))
    drain(rt)
    assert c.epochs["app-one"] == 1  # replaced once, before its next transaction: not per transaction
    put(c, (0, b"c", b"x"))
    drain(rt)
    assert c.epochs["app-one"] == 1 and values(c, "out") == [b"a=1", b"b=1", b"c=1"]


def test_a_probe_is_due_only_during_an_outage_and_at_most_once_per_interval() -> None:
    now = [10.0]
    o = Outage("the broker", LOG, clock=lambda: now[0])
    assert not o.probe_due(1.0)  # reachable: nothing to ask
    o.lost("down")
    assert o.probe_due(1.0) and not o.probe_due(1.0)
    now[0] = 10.9
    assert not o.probe_due(1.0)
    now[0] = 11.0
    assert o.probe_due(1.0)
    o.back()
    now[0] = 20.0
    assert not o.probe_due(1.0)

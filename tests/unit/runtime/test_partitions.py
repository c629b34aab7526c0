"""``topology.runtime.partitions``: the end offset of a partition, asked again through transient errors."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from topology.runtime.partitions import end_offset


class _Watermarks:
    """Raises ``errors`` one call after the other, then answers 42."""

    def __init__(self, *errors: int, fatal: bool = False) -> None:
        self.errors, self.fatal, self.calls = list(errors), fatal, 0

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float, cached: bool) -> tuple[int, int]:
        self.calls += 1
        assert (partition.topic, partition.partition, cached) == ("t", 3, False)  # asked of the broker
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0), fatal=self.fatal))
        return 0, 42


def test_a_partition_without_a_leader_yet_and_a_broker_not_answering_are_waited_out() -> None:
    c = _Watermarks(KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError._ALL_BROKERS_DOWN)
    assert end_offset(c, ("t", 3), 10.0) == 42 and c.calls == 4


def test_a_refusal_or_a_fatal_error_raises_at_once() -> None:
    for c in (_Watermarks(KafkaError.TOPIC_AUTHORIZATION_FAILED), _Watermarks(KafkaError._FATAL, fatal=True)):
        with pytest.raises(KafkaException):
            end_offset(c, ("t", 3), 10.0)
        assert c.calls == 1


def test_an_error_that_outlasts_the_timeout_is_raised() -> None:
    c = _Watermarks(*[KafkaError.LEADER_NOT_AVAILABLE] * 100)
    with pytest.raises(KafkaException) as info:
        end_offset(c, ("t", 3), 0.3)
    assert info.value.args[0].code() == KafkaError.LEADER_NOT_AVAILABLE and 2 <= c.calls <= 4

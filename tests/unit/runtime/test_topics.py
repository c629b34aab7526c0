"""Topics at start: missing sinks and changelogs created, partition counts of changelogs checked (fake clients)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from tests.unit.runtime.support import Counter, cluster, drain, put, runtime, values
from topology.runtime import FatalRuntimeError, PartitionCountError


def test_a_missing_changelog_is_created_compacted_with_its_input_topics_partition_count() -> None:
    c = cluster(3)
    rt = runtime(c, Counter())
    rt.open()
    assert c.partitions["counts-changelog"] == 3 and c.partitions["out"] == 3
    rt.close()


@pytest.mark.parametrize("changelog_partitions", [2, 4])
def test_a_changelog_whose_partition_count_differs_from_its_inputs_stops_the_runtime(
    changelog_partitions: int,
) -> None:
    c = cluster(3)  # the input topic grew (or shrank) after the changelog was made
    c.create("counts-changelog", changelog_partitions)
    rt = runtime(c, Counter())
    with pytest.raises(FatalRuntimeError) as exc:
        rt.open()
    text = str(exc.value)
    assert f"in has 3 partitions but its changelog counts-changelog has {changelog_partitions}" in text
    assert "start the application anew" in text
    assert "out" not in c.partitions  # nothing was created


def test_an_input_that_gains_partitions_while_running_stops_the_runtime_before_any_record_of_them() -> None:
    c = cluster(2)
    rt = runtime(c, Counter())
    rt.open()
    put(c, (0, b"a", b"1"), (1, b"b", b"1"))
    drain(rt)  # committed: out has a=1, b=1; the group's offsets are past both
    committed = dict(c.group_offsets["app"])
    put(c, (0, b"a", b"2"))
    rt.step()  # a transaction is open with a=2 in it
    assert rt.txn is not None
    c.grow("in", 3)  # create_partitions: the group assigns the new partition
    put(c, (2, b"c", b"1"))
    consumer = rt.clients.consumers[0]  # type: ignore[attr-defined]
    consumer.reassign()
    with pytest.raises(PartitionCountError) as exc:
        rt.step()
    rt.close(exc.value)
    text = str(exc.value)
    assert exc.value.exit_code == 4 and exc.value.exit_code != FatalRuntimeError.exit_code
    assert "added to an input topic while the detector ran" in text
    assert "in has 3 partitions but its changelog counts-changelog has 2" in text
    assert values(c, "out") == [b"a=1", b"b=1"]  # the open transaction was aborted, nothing else committed
    assert c.group_offsets["app"] == committed and not c.open_txns
    assert ("in", 2) in consumer.paused and ("in", 2) not in rt.processor.counts  # type: ignore[attr-defined]
    assert c.partitions["counts-changelog"] == 2 and all(p < 2 for p, _, _ in c.records("counts-changelog"))


def test_an_assigned_partition_beyond_its_changelog_stops_the_runtime_when_metadata_cannot_be_read() -> None:
    c = cluster(2)
    rt = runtime(c, Counter())
    rt.open()
    drain(rt, 2)  # first assignment: the changelog's count is remembered
    c.grow("in", 3)
    c.fail("partitions", KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down")))
    rt.clients.consumers[0].reassign()  # type: ignore[attr-defined]
    with pytest.raises(PartitionCountError, match="in has 3 partitions but its changelog counts-changelog has 2"):
        rt.step()
    rt.close()

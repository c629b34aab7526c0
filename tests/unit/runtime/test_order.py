"""Timestamp-synchronised reading (``topology.runtime.order``): alone, and in the runtime over fake clients."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import TopicPartition

from tests.unit.runtime.support import Counter, cluster, drain, runtime
from topology.records import TP, OutRecord, RawRecord
from topology.runtime.clients import MessageLike
from topology.runtime.order import TimeOrder
from topology.testing.fakes import Entry, FakeCluster, FakeMessage

T = "in"


class _Consumer:
    """What ``TimeOrder`` asks a consumer: positions, cached high watermarks, pause and resume."""

    def __init__(self) -> None:
        self.positions: dict[TP, int] = {}
        self.high: dict[TP, int] = {}
        self.paused: set[TP] = set()

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float, cached: bool) -> tuple[int, int]:
        return 0, self.high.get((partition.topic, partition.partition), -1001)

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(p.topic, p.partition, self.positions.get((p.topic, p.partition), -1001))
                for p in partitions]  # fmt: skip

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.update((p.topic, p.partition) for p in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused.difference_update((p.topic, p.partition) for p in partitions)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _event_time(value: bytes | None) -> int | None:
    return None if value is None or not value.isdigit() else int(value)


def _fetched(consumer: _Consumer, partition: int, times: Sequence[int | None], start: int = 0) -> list[FakeMessage]:
    """Messages of ``partition`` as a fetch returns them; the consumer's position and high watermark follow."""
    tp = (T, partition)
    out = [FakeMessage(T, partition, start + i, Entry(b"k", None if t is None else str(t).encode(), (), 0))
           for i, t in enumerate(times)]  # fmt: skip
    consumer.positions[tp] = start + len(times)
    consumer.high[tp] = max(consumer.high.get(tp, 0), start + len(times))
    return out


def _times(messages: Sequence[MessageLike]) -> list[int | None]:
    return [_event_time(m.value()) for m in messages]


PARTS = [(T, 0), (T, 1)]


def _order(clock: _Clock | None = None, **kw: int) -> TimeOrder:
    return TimeOrder([T], _event_time, 500, clock=clock or _Clock(), **kw)


def test_partitions_fetched_one_after_the_other_come_out_in_event_time_order() -> None:
    c, order = _Consumer(), _order()
    first = order.take(_fetched(c, 0, [10, 30, 50]), PARTS, (), c)
    assert first == []  # partition 1 has not been fetched yet: its position is not known
    out = order.take(_fetched(c, 1, [20, 40, 60]), PARTS, (), c)
    assert _times(out) == [10, 20, 30, 40, 50, 60]
    assert order.held == 0


def test_a_partition_behind_its_high_watermark_is_waited_for_then_given_up_after_max_idle() -> None:
    c, clock = _Consumer(), _Clock()
    order = _order(clock)
    c.positions[(T, 1)], c.high[(T, 1)] = 5, 100  # partition 1 has 95 records still to fetch
    assert order.take(_fetched(c, 0, [10, 20]), PARTS, (), c) == []
    clock.now = 0.4
    assert order.take([], PARTS, (), c) == []
    clock.now = 0.5
    assert _times(order.take([], PARTS, (), c)) == [10, 20]
    assert order.idle_passes == 1


def test_a_caught_up_partition_never_blocks_and_one_transaction_marker_counts_as_caught_up() -> None:
    c, order = _Consumer(), _order()
    c.positions[(T, 1)], c.high[(T, 1)] = 7, 8  # only a commit marker left to read
    assert _times(order.take(_fetched(c, 0, [30, 10]), PARTS, (), c)) == [30, 10]
    assert order.idle_passes == 0


def test_a_partition_that_catches_up_while_waited_for_stops_blocking() -> None:
    c, order = _Consumer(), _order()
    c.positions[(T, 1)], c.high[(T, 1)] = 0, 3
    assert order.take(_fetched(c, 0, [10]), PARTS, (), c) == []
    c.high[(T, 1)] = 0  # (say) the records were deleted: nothing is left to read there
    assert _times(order.take([], PARTS, (), c)) == [10]


def test_at_most_limit_records_are_handed_out_and_the_rest_stay_held() -> None:
    c, order = _Consumer(), _order()
    order.take(_fetched(c, 0, [10, 30, 50]), PARTS, (), c, limit=2)
    assert _times(order.take(_fetched(c, 1, [20, 40, 60]), PARTS, (), c, limit=2)) == [10, 20]
    assert _times(order.take([], PARTS, (), c, limit=1)) == [30]  # a transaction bisecting a refusal
    assert _times(order.take([], PARTS, (), c)) == [40, 50, 60] and order.held == 0


def test_a_record_without_event_time_goes_first() -> None:
    c, order = _Consumer(), _order()
    order.take(_fetched(c, 0, [10, None]), PARTS, (), c)
    out = order.take(_fetched(c, 1, [None, 5]), PARTS, (), c)
    assert _times(out) == [None, 5, 10, None]  # a head without event time first; the rest keep their order


def test_a_record_whose_event_time_cannot_be_read_now_goes_first_and_the_order_goes_on() -> None:
    def registry_down(value: bytes | None) -> int | None:
        if value == b"7":
            raise ConnectionError("the registry is down")  # e.g. a schema id not seen yet
        return _event_time(value)

    c = _Consumer()
    order = TimeOrder([T], registry_down, 500, clock=_Clock())
    order.take(_fetched(c, 0, [7, 10]), PARTS, (), c)
    out = order.take(_fetched(c, 1, [5]), PARTS, (), c)
    assert _times(out) == [7, 5, 10]  # processing meets the error again, and retries it as a transient one


def test_other_topics_and_restoring_partitions_pass_through_and_a_restoring_one_is_waited_for() -> None:
    c, order = _Consumer(), _order()
    other = FakeMessage("repartition", 0, 0, Entry(b"k", b"99", (), 0))
    restoring = _fetched(c, 1, [1])  # fetched before the pause of the restore: the runtime skips it
    c.positions.pop((T, 1))
    out = order.take([other, *restoring, *_fetched(c, 0, [10])], PARTS, {(T, 1)}, c)
    assert out == [other, *restoring]
    assert order.held == 1  # partition 0's record waits for partition 1's restore


def test_a_partition_holding_many_records_is_paused_until_half_of_them_are_out() -> None:
    c, order = _Consumer(), _order(per_partition=4)
    c.positions[(T, 1)], c.high[(T, 1)] = 0, 10
    order.take(_fetched(c, 0, [1, 2, 3, 4, 5]), PARTS, (), c)
    assert c.paused == {(T, 0)}  # the fetcher now serves partition 1
    c.high[(T, 0)] = 20  # partition 0 has more to read
    out = order.take(_fetched(c, 1, [3, 100]), PARTS, (), c)
    assert _times(out) == [1, 2, 3, 3, 4, 5]  # 100 waits for partition 0's next records
    assert c.paused == set() and order.held == 1


def test_dropping_a_partition_forgets_what_it_held_and_resumes_it() -> None:
    c, order = _Consumer(), _order(per_partition=2)
    c.positions[(T, 1)], c.high[(T, 1)] = 0, 10
    order.take(_fetched(c, 0, [1, 2, 3]), PARTS, (), c)
    assert order.held == 3 and c.paused == {(T, 0)}
    order.drop([(T, 0)], c)
    assert order.held == 0 and c.paused == set()
    out = order.take(_fetched(c, 0, [1, 2, 3]) + _fetched(c, 1, [2]), PARTS, (), c)
    assert _times(out)[:2] == [1, 2]  # read again from the start; nothing twice


class _Recording(Counter):
    """``Counter`` that feeds a later stage (so its source partitions are read in event time)."""

    ordered_topics = ("in",)

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def event_time(self, value: bytes | None) -> int | None:
        return _event_time(value)

    def process(self, record: RawRecord) -> list[OutRecord]:
        self.seen.append(int(record.value or b"0"))
        return super().process(record)


def _two_partitions() -> tuple[FakeCluster, _Recording]:
    c = cluster(2)
    for p, times in ((0, [0, 20, 40]), (1, [10, 30, 50])):
        for t in times:
            c.append(("in", p), Entry(b"k%d" % p, str(t).encode(), (), 1))
    return c, _Recording()


def test_the_runtime_processes_source_partitions_in_event_time_order() -> None:
    c, p = _two_partitions()
    rt = runtime(c, p)
    rt.open()
    drain(rt)
    assert p.seen == [0, 10, 20, 30, 40, 50]  # the fake fetches partition 0, then partition 1
    assert c.group_offsets["app"] == {("in", 0): 3, ("in", 1): 3}


def test_with_max_task_idle_ms_minus_one_the_runtime_processes_in_fetch_order() -> None:
    c, p = _two_partitions()
    rt = runtime(c, p, max_task_idle_ms=-1)
    rt.open()
    drain(rt)
    assert p.seen == [0, 20, 40, 10, 30, 50]

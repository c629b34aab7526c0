"""In-memory windowed state stores with a changelog.

One ``WindowStore`` per windowed aggregate, partitioned like its input topic.
Each partition maps a group key (bytes) to that key's windows. Every change
returns the key's new serialized state (JSON bytes) or ``None`` (a tombstone)
for the compacted changelog topic; ``restore`` applies such a record, so the
last changelog value per key rebuilds the state exactly.

Stream time is per (store, partition): the largest event time the store has
aggregated. A window closes when its end + grace <= stream time; a record whose
windows are all closed is late: it is not aggregated and its condition is false.
Stream time can be rebuilt from the changelog because each key's value carries
its own largest event time, and stream time only moves when a key is written.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from topology.plan import Aggregate

AggValue = int | Decimal

NO_TIME = -(2**62)


@dataclass(slots=True)
class _Win:
    """One tumbling/hopping window of one key."""

    count: int = 0
    total: Decimal = Decimal(0)
    distinct: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _KeyState:
    max_time: int = NO_TIME
    windows: dict[int, _Win] = field(default_factory=dict)  # tumbling/hopping: start -> window
    times: list[int] = field(default_factory=list)  # sliding: event times, sorted
    events: list[tuple[Decimal | None, str | None]] = field(default_factory=list)  # parallel to times


@dataclass(slots=True)
class _Partition:
    keys: dict[bytes, _KeyState] = field(default_factory=dict)
    stream_time: int = NO_TIME
    next_sweep: int = NO_TIME


class WindowStore:
    """The state of one windowed aggregate, for every partition this instance owns."""

    def __init__(self, name: str, aggregate: Aggregate, changelog_topic: str) -> None:
        self.name = name
        self.aggregate = aggregate
        self.changelog_topic = changelog_topic
        w = aggregate.window
        self._kind = w.kind
        self._size = w.size_ms
        self._grace = w.grace_ms
        self._advance = w.advance_ms or w.size_ms
        self._function = aggregate.function
        self._retention = w.size_ms + w.grace_ms
        # Idle keys are swept when stream time passes next_sweep; the interval only bounds memory.
        self._sweep_every = max(self._retention // 4, 1000)
        self._partitions: dict[int, _Partition] = {}

    # ------------------------------------------------------------ partitions

    def partitions(self) -> tuple[int, ...]:
        return tuple(sorted(self._partitions))

    def drop(self, partition: int) -> None:
        """Forget a partition (revoked); its state lives on in the changelog."""
        self._partitions.pop(partition, None)

    def clear(self, partition: int) -> None:
        """Start a partition empty (assigned; ``restore`` fills it from the changelog)."""
        self._partitions[partition] = _Partition()

    def size(self, partition: int | None = None) -> int:
        """Number of keys held (in one partition, or all)."""
        parts = self._partitions.values() if partition is None else [self._partitions.get(partition, _Partition())]
        return sum(len(p.keys) for p in parts)

    def stream_time(self, partition: int) -> int:
        p = self._partitions.get(partition)
        return NO_TIME if p is None else p.stream_time

    # ------------------------------------------------------------ update

    def add(
        self, partition: int, key: bytes, time_ms: int, value: Any
    ) -> tuple[tuple[AggValue, ...], list[tuple[bytes, bytes | None]]]:
        """Aggregate one record; returns (values of its open windows, changelog entries).

        ``value`` is the field to sum (a Decimal) or count distinct (any; compared as text);
        ignored for ``count``. No open window (a late record) gives ``()`` and no change.
        """
        p = self._partitions.get(partition)
        if p is None:
            p = self._partitions[partition] = _Partition()
        st = max(p.stream_time, time_ms)
        close = st - self._grace  # windows ending at or before this are closed
        ks = p.keys.get(key)
        result: tuple[AggValue, ...]
        if self._kind == "sliding":
            if time_ms + 1 <= close:
                return (), []
            if ks is None:
                ks = p.keys[key] = _KeyState()
            result = (self._add_sliding(ks, time_ms, value, close),)
        else:
            starts = self._window_starts(time_ms, close)
            if not starts:
                return (), []
            if ks is None:
                ks = p.keys[key] = _KeyState()
            result = self._add_windows(ks, starts, value, close)
        if time_ms > ks.max_time:
            ks.max_time = time_ms
        p.stream_time = st
        changes: list[tuple[bytes, bytes | None]] = [(key, self._encode(ks))]
        if st >= p.next_sweep:
            changes.extend(self._sweep(p, st))
        return result, changes

    def _window_starts(self, t: int, close: int) -> list[int]:
        size, adv = self._size, self._advance
        last = t - t % adv
        return [s for s in range(last, max(t - size, -1), -adv) if s + size > close][::-1]

    def _add_windows(self, ks: _KeyState, starts: list[int], value: Any, close: int) -> tuple[AggValue, ...]:
        fn = self._function
        out: list[AggValue] = []
        windows = ks.windows
        for s in starts:
            w = windows.get(s)
            if w is None:
                w = windows[s] = _Win()
            w.count += 1
            if fn == "sum":
                w.total += value
                out.append(w.total)
            elif fn == "distinct_count":
                w.distinct.add(str(value))
                out.append(len(w.distinct))
            else:
                out.append(w.count)
        size = self._size
        for s in [s for s in windows if s + size <= close]:
            del windows[s]
        return tuple(out)

    def _add_sliding(self, ks: _KeyState, t: int, value: Any, close: int) -> AggValue:
        fn = self._function
        times, events = ks.times, ks.events
        ev = (value if fn == "sum" else None, str(value) if fn == "distinct_count" else None)
        if not times or t >= times[-1]:
            times.append(t)
            events.append(ev)
            hi = len(times)
        else:
            hi = bisect_right(times, t)
            times.insert(hi, t)
            events.insert(hi, ev)
            hi += 1
        # drop events no open window can reach: time <= close - size
        cut = bisect_right(times, close - self._size)
        if cut:
            del times[:cut]
            del events[:cut]
            hi -= cut
        lo = bisect_right(times, t - self._size)
        if fn == "count":
            return hi - lo
        if fn == "sum":
            total = Decimal(0)
            for amount, _ in events[lo:hi]:
                total += amount  # type: ignore[operator]
            return total
        return len({d for _, d in events[lo:hi]})

    def _sweep(self, p: _Partition, st: int) -> list[tuple[bytes, bytes | None]]:
        """Delete keys whose every window is closed (tombstones for the changelog)."""
        p.next_sweep = st + self._sweep_every
        horizon = st - self._retention
        dead = [k for k, ks in p.keys.items() if ks.max_time <= horizon]
        for k in dead:
            del p.keys[k]
        return [(k, None) for k in dead]

    # ------------------------------------------------------------ changelog

    def _encode(self, ks: _KeyState) -> bytes:
        doc: dict[str, Any] = {"t": ks.max_time}
        if self._kind == "sliding":
            doc["e"] = [[t, None if a is None else str(a), d] for t, (a, d) in zip(ks.times, ks.events, strict=True)]
        else:
            doc["w"] = [[s, w.count, str(w.total), sorted(w.distinct)] for s, w in ks.windows.items()]
        return json.dumps(doc, separators=(",", ":")).encode()

    def restore(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Apply one changelog record (``value=None`` deletes the key)."""
        p = self._partitions.get(partition)
        if p is None:
            p = self._partitions[partition] = _Partition()
        if value is None:
            p.keys.pop(key, None)
            return
        doc = json.loads(value)
        ks = _KeyState(max_time=int(doc["t"]))
        if "e" in doc:
            for t, a, d in doc["e"]:
                ks.times.append(int(t))
                ks.events.append((None if a is None else Decimal(a), d))
        else:
            for s, c, total, distinct in doc["w"]:
                ks.windows[int(s)] = _Win(int(c), Decimal(total), set(distinct))
        p.keys[key] = ks
        p.stream_time = max(p.stream_time, ks.max_time)
        if p.next_sweep == NO_TIME:
            p.next_sweep = p.stream_time + self._sweep_every

    def snapshot(self, partition: int) -> dict[bytes, bytes]:
        """Every key's serialized state in ``partition`` (for tests: equal snapshots mean equal state)."""
        p = self._partitions.get(partition)
        return {} if p is None else {k: self._encode(ks) for k, ks in sorted(p.keys.items())}


def encode_group_key(values: Iterable[Any]) -> bytes:
    """The state/changelog/repartition key of group values: one value as UTF-8 text, several as a JSON list."""
    vals = [v if isinstance(v, str) else str(v) for v in values]
    if len(vals) == 1:
        return vals[0].encode()
    return json.dumps(vals, separators=(",", ":")).encode()


"""In-memory windowed state stores with a write-back cache in front of a compacted changelog.

One ``WindowStore`` per windowed aggregate, partitioned like its stage's input topic; each
partition maps a group key (bytes) to that key's windows. A ``StateGroup`` holds the stores of
one stage and their one changelog topic (Kafka Streams' record cache idea):

- ``add`` changes the store in memory and marks the key dirty; nothing is encoded;
- ``flush`` returns one changelog entry per dirty (partition, key) since the last flush: the
  key's state in every store of the group as one compact JSON document, or ``None`` (a
  tombstone) when no store holds the key any more. The runtime produces them in the same
  transaction as the outputs and offsets, right before it commits;
- ``restore`` applies such an entry, so the last changelog value per key rebuilds the state.

A store's entry in the document is named by its ``state_id`` (store name and a digest of what
it keeps: function, field, grouping, window kind and size, filter), so a store whose definition
changed at run time does not load state kept under the old one.

Stream time is per (store, partition): the largest event time the store has aggregated. A
window closes when its end + grace <= stream time; a record whose windows are all closed is
late: it is not aggregated and its condition is false. Stream time can be rebuilt from the
changelog because each key's entry carries its own largest event time, and stream time only
moves when a key is written.
"""

from __future__ import annotations

import json
import zlib
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from topology.plan.model import Aggregate

AggValue = int | Decimal

NO_TIME = -(2**62)
_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode


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
    values: list[Any] = field(default_factory=list)  # sliding sum/distinct_count: parallel to times
    ids: list[str] = field(default_factory=list)  # sliding, related: transaction ids parallel to times


@dataclass(slots=True)
class _Partition:
    keys: dict[bytes, _KeyState] = field(default_factory=dict)
    dirty: set[bytes] = field(default_factory=set)  # written since the last flush
    expired: set[bytes] = field(default_factory=set)  # swept since the last flush
    stream_time: int = NO_TIME
    next_sweep: int = NO_TIME


def state_id(name: str, aggregate: Aggregate) -> str:
    """``name#digest`` of what a store keeps (not its threshold or grace, which read the same state)."""
    a, w = aggregate, aggregate.window
    what = f"{a.function}|{a.field}|{','.join(a.group_by)}|{w.kind}|{w.size_ms}|{w.advance_ms}|{a.filter}"
    if aggregate.related:
        what += "|ids"
    return f"{name}#{zlib.crc32(what.encode()):08x}"


class WindowStore:
    """The state of one windowed aggregate, for every partition this instance owns."""

    def __init__(self, name: str, aggregate: Aggregate, changelog_topic: str) -> None:
        self.name = name
        self.aggregate = aggregate
        self.changelog_topic = changelog_topic
        self.state_id = state_id(name, aggregate)
        w = aggregate.window
        self._kind = w.kind
        self._size = w.size_ms
        self._grace = w.grace_ms
        self._advance = w.advance_ms or w.size_ms
        self._function = aggregate.function
        self.related = aggregate.related  # keeps transaction ids (sliding windows only)
        self._retention = w.size_ms + w.grace_ms
        # Idle keys are swept when stream time passes next_sweep; the interval only bounds memory.
        self._sweep_every = max(self._retention // 4, 1000)
        self._partitions: dict[int, _Partition] = {}

    def with_aggregate(self, aggregate: Aggregate) -> WindowStore:
        """A store for ``aggregate`` (same ``state_id``: e.g. another threshold or grace) taking over this state."""
        new = type(self)(self.name, aggregate, self.changelog_topic)
        if new.state_id != self.state_id:
            raise ValueError(f"store {self.name}: {aggregate} keeps other state than {self.aggregate}")
        new._partitions = self._partitions
        return new

    # ------------------------------------------------------------ partitions

    def partitions(self) -> tuple[int, ...]:
        return tuple(sorted(self._partitions))

    def drop(self, partition: int) -> None:
        """Forget a partition (revoked, or rebuilt after an abort), unflushed changes included."""
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

    def add(self, partition: int, key: bytes, time_ms: int, value: Any, ident: str = "") -> tuple[AggValue, ...]:
        """Aggregate one record; returns the values of its open windows (``()``: late, nothing changed).

        ``value`` is the field to sum (a Decimal) or count distinct (any; compared as text);
        ignored for ``count``. ``ident`` is the record's transaction id, kept when the store is
        ``related``. The key (and any key swept as expired) is marked dirty.
        """
        p = self._partitions.get(partition)
        if p is None:
            p = self._partitions[partition] = _Partition()
        st = p.stream_time if p.stream_time > time_ms else time_ms
        close = st - self._grace  # windows ending at or before this are closed
        ks = p.keys.get(key)
        result: tuple[AggValue, ...]
        if self._kind == "sliding":
            if time_ms + 1 <= close:
                return ()
            if ks is None:
                ks = p.keys[key] = _KeyState()
            result = (self._add_sliding(ks, time_ms, value, close, ident),)
        else:
            starts = self._window_starts(time_ms, close)
            if not starts:
                return ()
            if ks is None:
                ks = p.keys[key] = _KeyState()
            result = self._add_windows(ks, starts, value, close)
        if time_ms > ks.max_time:
            ks.max_time = time_ms
        p.stream_time = st
        p.dirty.add(key)
        if st >= p.next_sweep:
            self._sweep(p, st)
        return result

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

    def _add_sliding(self, ks: _KeyState, t: int, value: Any, close: int, ident: str) -> AggValue:
        fn = self._function
        times, values, ids = ks.times, ks.values, ks.ids
        keep = fn != "count"
        related = self.related
        v = value if fn == "sum" else str(value)
        if not times or t >= times[-1]:
            times.append(t)
            if keep:
                values.append(v)
            if related:
                ids.append(ident)
            hi = len(times)
        else:
            hi = bisect_right(times, t)
            times.insert(hi, t)
            if keep:
                values.insert(hi, v)
            if related:
                ids.insert(hi, ident)
            hi += 1
        # drop events no open window can reach: time <= close - size
        if times[0] <= close - self._size:
            cut = bisect_right(times, close - self._size)
            del times[:cut]
            if keep:
                del values[:cut]
            if related:
                del ids[:cut]
            hi -= cut
        lo = bisect_right(times, t - self._size)
        if fn == "count":
            return hi - lo
        if fn == "sum":
            return sum(values[lo:hi], Decimal(0))
        return len(set(values[lo:hi]))

    def earlier_ids(self, partition: int, key: bytes, time_ms: int, ident: str, limit: int) -> tuple[list[str], int]:
        """``related_ids`` without the record's own (newest) occurrence: the newest ``limit``, and how many."""
        window = self.related_ids(partition, key, time_ms)
        if ident in window:
            del window[len(window) - 1 - window[::-1].index(ident)]
        return window[-limit:], len(window)

    def related_ids(self, partition: int, key: bytes, time_ms: int) -> list[str]:
        """The transaction ids kept for ``key`` in the sliding window ending at ``time_ms``
        ((time - size, time], oldest first); empty unless the store is ``related``."""
        p = self._partitions.get(partition)
        ks = None if p is None else p.keys.get(key)
        if ks is None or not self.related:
            return []
        lo = bisect_right(ks.times, time_ms - self._size)
        hi = bisect_right(ks.times, time_ms)
        return ks.ids[lo:hi]

    def _sweep(self, p: _Partition, st: int) -> None:
        """Delete keys whose every window is closed (``expired``: their changelog record may go)."""
        p.next_sweep = st + self._sweep_every
        horizon = st - self._retention
        dead = [k for k, ks in p.keys.items() if ks.max_time <= horizon]
        for k in dead:
            del p.keys[k]
        p.expired.update(dead)

    # ------------------------------------------------------------ changelog documents

    def take_dirty(self) -> dict[int, tuple[set[bytes], set[bytes]]]:
        """Per partition, the keys written and the keys swept since the last call (and forget them)."""
        out: dict[int, tuple[set[bytes], set[bytes]]] = {}
        for n, p in self._partitions.items():
            if p.dirty or p.expired:
                out[n] = (p.dirty, p.expired)
                p.dirty, p.expired = set(), set()
        return out

    def holds(self, partition: int, key: bytes) -> bool:
        p = self._partitions.get(partition)
        return p is not None and key in p.keys

    def entry(self, partition: int, key: bytes) -> list[Any] | None:
        """The JSON-ready state of ``key`` (None: the store does not hold it)."""
        p = self._partitions.get(partition)
        ks = None if p is None else p.keys.get(key)
        if ks is None:
            return None
        return self._entry(ks)

    def _entry(self, ks: _KeyState) -> list[Any]:
        fn = self._function
        if self._kind == "sliding":
            if fn == "count":
                doc = [ks.max_time, ks.times]
            elif fn == "sum":
                doc = [ks.max_time, ks.times, [str(v) for v in ks.values]]
            else:
                doc = [ks.max_time, ks.times, ks.values]
            if self.related:
                doc.append(ks.ids)  # last: the transaction ids
            return doc
        if fn == "count":
            return [ks.max_time, [[s, w.count] for s, w in ks.windows.items()]]
        if fn == "sum":
            return [ks.max_time, [[s, w.count, str(w.total)] for s, w in ks.windows.items()]]
        return [ks.max_time, [[s, w.count, sorted(w.distinct)] for s, w in ks.windows.items()]]

    def load(self, partition: int, key: bytes, entry: Sequence[Any] | None) -> None:
        """Set ``key`` to a state read back from the changelog (``None`` deletes it); not dirty."""
        p = self._partitions.get(partition)
        if p is None:
            p = self._partitions[partition] = _Partition()
        if entry is None:
            p.keys.pop(key, None)
            return
        fn = self._function
        ks = _KeyState(max_time=int(entry[0]))
        if self._kind == "sliding":
            ks.times = [int(t) for t in entry[1]]
            if fn == "sum":
                ks.values = [Decimal(v) for v in entry[2]]
            elif fn == "distinct_count":
                ks.values = [str(v) for v in entry[2]]
            if self.related:
                ks.ids = [str(v) for v in entry[-1]]
        else:
            for w in entry[1]:
                win = _Win(int(w[1]))
                if fn == "sum":
                    win.total = Decimal(w[2])
                elif fn == "distinct_count":
                    win.distinct = set(w[2])
                ks.windows[int(w[0])] = win
        p.keys[key] = ks
        if ks.max_time > p.stream_time:
            p.stream_time = ks.max_time
        if p.next_sweep == NO_TIME:
            p.next_sweep = p.stream_time + self._sweep_every

    def snapshot(self, partition: int) -> dict[bytes, str]:
        """Every live key's state in ``partition`` as text (for tests: equal snapshots mean equal
        state). Keys that expired but were not swept yet (e.g. restored) are left out."""
        p = self._partitions.get(partition)
        if p is None:
            return {}
        horizon = p.stream_time - self._retention
        return {k: _DUMPS(self._entry(ks)) for k, ks in sorted(p.keys.items()) if ks.max_time > horizon}


class StateGroup:
    """The stores of one stage and their one compacted changelog topic (keyed by group key)."""

    def __init__(self, changelog_topic: str, stores: Iterable[WindowStore]) -> None:
        self.changelog_topic = changelog_topic
        self.stores = tuple(stores)
        self._by_id = {s.state_id: s for s in self.stores}

    def drop(self, partition: int) -> None:
        for s in self.stores:
            s.drop(partition)

    def clear(self, partition: int) -> None:
        for s in self.stores:
            s.clear(partition)

    def flush(self) -> list[tuple[int, bytes, bytes | None]]:
        """(partition, key, value or None) for every key written since the last flush, and a
        tombstone for every key swept from the last store that held it.

        A key swept from one store while another still holds it keeps its (now partly stale)
        record: the stale entry is restored as expired state and swept again, which decides the
        same, and saves a changelog record per key and window expiry.
        """
        written: dict[int, set[bytes]] = {}
        swept: dict[int, set[bytes]] = {}
        for s in self.stores:
            for n, (d, e) in s.take_dirty().items():
                if d:
                    if n in written:
                        written[n] |= d
                    else:
                        written[n] = d
                if e:
                    swept.setdefault(n, set()).update(e)
        stores = self.stores
        out: list[tuple[int, bytes, bytes | None]] = []
        for n, keys in written.items():
            parts = [(s, s._partitions.get(n)) for s in stores]
            for key in keys:
                doc = {}
                for s, p in parts:
                    ks = None if p is None else p.keys.get(key)
                    if ks is not None:
                        doc[s.state_id] = s._entry(ks)
                out.append((n, key, _DUMPS(doc).encode() if doc else None))
        for n, keys in swept.items():
            done = written.get(n, set())
            for key in keys:
                if key not in done and not any(s.holds(n, key) for s in stores):
                    out.append((n, key, None))
        return out

    def restore(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Apply one changelog record: every store of the group gets its entry (or loses the key)."""
        doc: dict[str, Any] = {} if value is None else json.loads(value)
        for s in self.stores:
            s.load(partition, key, doc.get(s.state_id))


class StateBackend(Protocol):
    """Makes the stores of a processor: ``InMemoryState`` (the default), or
    ``topology.kvstate.KVState`` (an embedded store such as RocksDB). ``group`` is called again for
    the same changelog topic when rules change at run time (the stores are regrouped)."""

    def store(self, name: str, aggregate: Aggregate, changelog_topic: str) -> WindowStore: ...

    def group(self, changelog_topic: str, stores: Iterable[WindowStore]) -> StateGroup: ...


class InMemoryState:
    """Stores in memory (plain ``WindowStore``/``StateGroup``)."""

    def store(self, name: str, aggregate: Aggregate, changelog_topic: str) -> WindowStore:
        return WindowStore(name, aggregate, changelog_topic)

    def group(self, changelog_topic: str, stores: Iterable[WindowStore]) -> StateGroup:
        return StateGroup(changelog_topic, stores)


def encode_group_key(values: Iterable[Any]) -> bytes:
    """The state/changelog/repartition key of group values: one value as UTF-8 text, several as a
    compact JSON list of their texts (``["mule","1000.00"]``)."""
    vals = [v if isinstance(v, str) else str(v) for v in values]
    if len(vals) == 1:
        return vals[0].encode()
    for v in vals:
        if '"' in v or "\\" in v or not v.isprintable():
            return _DUMPS(vals).encode()  # needs escapes
    return ('["' + '","'.join(vals) + '"]').encode()

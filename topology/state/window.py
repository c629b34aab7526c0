"""In-memory windowed state stores with a write-back cache in front of a compacted changelog.

One ``WindowStore`` per windowed aggregate, partitioned like its stage's input topic; each
partition maps a group key (bytes) to that key's windows. A ``StateGroup`` holds the stores of
one stage and their one changelog topic (Kafka Streams' record cache idea):

- ``add`` changes the store in memory and marks the key dirty; nothing is encoded;
- ``flush`` returns one changelog entry per dirty (partition, key) since the last flush: the
  key's state in every store of the group as one compact JSON document, or ``None`` (a
  tombstone) when no store holds the key any more. The runtime produces them in the same
  transaction as the outputs and offsets, right before it commits;
- ``restore`` keeps such an entry as it is, undecoded (the last changelog value per key rebuilds the
  state): a key is decoded into every store of its group when it is first used, or a few per flush
  (``StateGroup``), so a restore costs a dict insert and a scan for each store's largest event time.

A store's entry in the document is named by its ``state_id`` (store name and a digest of what
it keeps: function, field, grouping, window kind and size, filter), so a store whose definition
changed at run time does not load state kept under the old one.

Stream time is per (store, partition): the largest event time the store has aggregated. A
window closes when its end + grace <= stream time; a record whose windows are all closed is
late: it is not aggregated and its condition is false. Stream time can be rebuilt from the
changelog because each key's entry carries its own largest event time as its first number
(``entry_max_time`` reads it without decoding), and stream time only moves when a key is written.

What a key keeps is bounded by its aggregate's caps (``topology.state.bounds``), and its changes
can be undone to the last commit (``aborted``; ``topology.state.keys``). The partitions, their keys'
changelog entries and the undecoded restored keys are ``StorePartitions`` (``topology.state.partitions``);
this module is the window math over them.
"""

from __future__ import annotations

import zlib
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from topology.plan.model import Aggregate
from topology.serde.documents import dumps
from topology.state.bounds import Bounds, Entry, bounded_text
from topology.state.keys import NO_TIME, KeyState, Partition, Win
from topology.state.partitions import StorePartitions

__all__ = [
    "NO_TIME", "AggValue", "WindowStore", "encode_group_key", "entry_max_time", "entry_tag", "kept_state",
    "state_id",
]  # fmt: skip

AggValue = int | Decimal

def state_id(name: str, aggregate: Aggregate) -> str:
    """``name#digest`` of what a store keeps: function, field, grouping, window kind and size,
    filter, and the caps that bound it (not its threshold or grace, which read the same state)."""
    return f"{name}#{kept_state(aggregate)}"


def kept_state(aggregate: Aggregate) -> str:
    """The digest of ``state_id``: equal for two aggregates whose stores keep the same state."""
    a, w = aggregate, aggregate.window
    what = f"{a.function}|{a.field}|{','.join(a.group_by)}|{w.kind}|{w.size_ms}|{w.advance_ms}|{a.filter}"
    if aggregate.related:
        what += "|ids"
    what += Bounds.of(aggregate).tag()
    return f"{zlib.crc32(what.encode()):08x}"


def entry_tag(state_id: str) -> bytes:
    """What precedes a store's entry in a changelog document: ``"state_id":[``."""
    return b'"' + state_id.encode() + b'":['


def entry_max_time(document: bytes, tag: bytes) -> int | None:
    """The largest event time of the entry that ``tag`` (``entry_tag``) opens in a changelog document, or
    None when the document has no such entry; the document is not decoded.

    Sound on any compact JSON document (``topology.serde.documents``): a state id ends in a hex digit, and
    inside a JSON string every quote is escaped (preceded by a backslash), so ``<hex digit>":[`` only occurs
    after a key."""
    i = document.find(tag)
    if i < 0:
        return None
    i += len(tag)
    return int(document[i : document.find(b",", i)])


class WindowStore(StorePartitions):
    """The state of one windowed aggregate, for every partition this instance owns: the window math over
    its partitions' keys (``StorePartitions``)."""

    def __init__(self, name: str, aggregate: Aggregate, changelog_topic: str) -> None:
        w = aggregate.window
        super().__init__(w.kind, aggregate.function, aggregate.related, w.size_ms + w.grace_ms)
        self.name = name
        self.aggregate = aggregate
        self.changelog_topic = changelog_topic
        self.state_id = state_id(name, aggregate)
        self.bounds = Bounds.of(aggregate)
        self.inexact = 0  # reductions that may make a late record's decision differ (see bounds)
        self._size = w.size_ms
        self._grace = w.grace_ms
        self._advance = w.advance_ms or w.size_ms

    def with_aggregate(self, aggregate: Aggregate) -> WindowStore:
        """A store for ``aggregate`` (same ``state_id``: e.g. another threshold or grace) taking over this state."""
        new = type(self)(self.name, aggregate, self.changelog_topic)
        if new.state_id != self.state_id:
            raise ValueError(f"store {self.name}: {aggregate} keeps other state than {self.aggregate}")
        new._partitions = self._partitions
        new.undecoded, new._decode = self.undecoded, self._decode
        return new

    # ------------------------------------------------------------ update

    def add(self, partition: int, key: bytes, time_ms: int, value: Any, ident: str = "") -> tuple[AggValue, ...]:
        """Aggregate one record; returns the values of its open windows (``()``: late, nothing changed).

        ``value`` is the field to sum (a Decimal) or count distinct (any; compared as text);
        ignored for ``count``. ``ident`` is the record's transaction id, kept when the store is
        ``related``. The key (and any key swept as expired) is marked dirty.
        """
        p = self._partitions.get(partition)
        if p is None:
            p = self._partitions[partition] = Partition()
        st = p.stream_time if p.stream_time > time_ms else time_ms
        close = st - self._grace  # windows ending at or before this are closed
        ks = p.keys.get(key)
        if ks is None and self.undecoded:  # restored, not decoded yet?
            todo = self.undecoded.get(partition)
            if todo is not None and key in todo:
                self._decode(partition, key)
                ks = p.keys.get(key)
        result: tuple[AggValue, ...]
        if self._kind == "sliding":
            if time_ms + 1 <= close:
                return ()
            if key not in p.undo:
                p.touch(key, ks)
            if ks is None:
                ks = p.keys[key] = KeyState()
            result = (self._add_sliding(ks, time_ms, value, close, ident),)
        else:
            starts = self._window_starts(time_ms, close)
            if not starts:
                return ()
            if key not in p.undo:
                p.touch(key, ks)
            if ks is None:
                ks = p.keys[key] = KeyState()
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

    def _add_windows(self, ks: KeyState, starts: list[int], value: Any, close: int) -> tuple[AggValue, ...]:
        fn = self._function
        out: list[AggValue] = []
        windows = ks.windows
        cap = self.bounds.cap
        for s in starts:
            w = windows.get(s)
            if w is None:
                w = windows[s] = Win()
            w.count += 1
            if fn == "sum":
                w.total += value
                out.append(w.total)
            elif fn == "distinct_count":
                if len(w.distinct) < cap:  # saturates at the cap
                    w.distinct.add(bounded_text(value))
                out.append(len(w.distinct))
            else:
                out.append(w.count)
        size = self._size
        for s in [s for s in windows if s + size <= close]:
            del windows[s]
        return tuple(out)

    def _add_sliding(self, ks: KeyState, t: int, value: Any, close: int, ident: str) -> AggValue:
        fn = self._function
        times, values, ids = ks.times, ks.values, ks.ids
        keep = fn != "count"
        related = self.related
        v = value if fn == "sum" else bounded_text(value) if keep else None
        if related:
            ident = bounded_text(ident)
        if not times or t >= times[-1]:
            times.append(t)
            if keep:
                values.append(v)
            if related:
                ids.append(ident)
        else:
            i = bisect_right(times, t)
            times.insert(i, t)
            if keep:
                values.insert(i, v)
            if related:
                ids.insert(i, ident)
        # drop events no open window can reach: time <= close - size
        if times[0] <= close - self._size:
            cut = bisect_right(times, close - self._size)
            del times[:cut]
            if keep:
                del values[:cut]
            if related:
                del ids[:cut]
        hi = bisect_right(times, t)
        lo = bisect_right(times, t - self._size)
        result: AggValue
        if fn == "count":
            result = min(hi - lo, self.bounds.cap)
        elif fn == "sum":
            result = sum(values[lo:hi], Decimal(0))
        else:
            result = min(len(set(values[lo:hi])), self.bounds.cap)
        if len(times) > self.bounds.high:
            self._reduce(ks, close)
        return result

    def _reduce(self, ks: KeyState, close: int) -> None:
        """Keep what the key's windows need (``Bounds.reduce``)."""
        n = len(ks.times)
        vals: Sequence[Any] = ks.values or [None] * n
        idents: Sequence[str] = ks.ids or [""] * n
        entries: list[Entry] = list(zip(ks.times, vals, idents, strict=True))
        kept, inexact = self.bounds.reduce(entries, close)
        self.inexact += inexact
        ks.times = [e[0] for e in kept]
        if ks.values:
            ks.values = [e[1] for e in kept]
        if ks.ids:
            ks.ids = [e[2] for e in kept]

    def related_ids(self, partition: int, key: bytes, time_ms: int) -> list[str]:
        """The transaction ids kept for ``key`` in the sliding window ending at ``time_ms``
        ((time - size, time], oldest first); empty unless the store is ``related``."""
        p = self._partitions.get(partition)
        ks = None if p is None else p.keys.get(key)
        if ks is None and key in self.undecoded.get(partition, ()):
            self._decode(partition, key)
            p = self._partitions.get(partition)
            ks = None if p is None else p.keys.get(key)
        if ks is None or not self.related:
            return []
        lo = bisect_right(ks.times, time_ms - self._size)
        hi = bisect_right(ks.times, time_ms)
        return ks.ids[lo:hi]

    def earlier_ids(self, partition: int, key: bytes, time_ms: int, ident: str, limit: int) -> tuple[list[str], int]:
        """The newest ``limit`` of ``related_ids`` other than the record ``ident`` itself (its newest
        occurrence), and how many there are: without copying the window's ids (a hot key keeps hundreds)."""
        if ident:
            p = self._partitions.get(partition)
            ks = None if p is None else p.keys.get(key)
            if ks is not None and self.related:
                hi = bisect_right(ks.times, time_ms)
                lo = bisect_right(ks.times, time_ms - self._size)
                ids = ks.ids
                if hi > lo and ids[hi - 1] == ident:  # in order: the record is the window's newest
                    return ids[max(lo, hi - 1 - limit) : hi - 1], hi - lo - 1
        window = self.related_ids(partition, key, time_ms)
        if ident in window:
            del window[len(window) - 1 - window[::-1].index(ident)]
        return window[-limit:], len(window)

    def _sweep(self, p: Partition, st: int) -> None:
        """Delete keys whose every window is closed (``expired``: their changelog record may go)."""
        p.next_sweep = st + self._sweep_every
        horizon = st - self._retention
        dead = [k for k, ks in p.keys.items() if ks.max_time <= horizon]
        keys = p.keys
        for k in dead:
            p.touch_removed(k, keys.pop(k))
        p.expired.update(dead)


def encode_group_key(values: Iterable[Any]) -> bytes:
    """The state/changelog/repartition key of group values: one value as UTF-8 text, several as a
    compact JSON list of their texts (``["mule","1000.00"]``)."""
    vals = [v if isinstance(v, str) else str(v) for v in values]
    if len(vals) == 1:
        return vals[0].encode()
    for v in vals:
        if '"' in v or "\\" in v or not v.isprintable():
            return dumps(vals)  # needs escapes
    return ('["' + '","'.join(vals) + '"]').encode()

"""Per-key state of a window store, one partition's keys, and the partition's undo log.

Transactions: the first time a key is changed (or swept) after the last ``commit``/``rollback``,
the partition keeps an undo copy of its state (``None``: it was absent), and the partition's
stream time and sweep bookkeeping as they were. ``rollback`` puts them back, so the partition
holds exactly its state at the last ``commit``, at a cost of one entry per key touched since
(a key's state is bounded, see ``topology.state.bounds``); ``commit`` forgets them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

NO_TIME = -(2**62)


@dataclass(slots=True)
class Win:
    """One tumbling/hopping window of one key."""

    count: int = 0
    total: Decimal = Decimal(0)
    distinct: set[str] = field(default_factory=set)


@dataclass(slots=True)
class KeyState:
    max_time: int = NO_TIME
    windows: dict[int, Win] = field(default_factory=dict)  # tumbling/hopping: start -> window
    times: list[int] = field(default_factory=list)  # sliding: event times, sorted
    values: list[Any] = field(default_factory=list)  # sliding sum/distinct_count: parallel to times
    ids: list[str] = field(default_factory=list)  # sliding, related: transaction ids parallel to times

    def saved(self) -> Saved:
        """A copy of this state, cheap to take (``restored`` makes it a ``KeyState`` again)."""
        windows = self.windows
        windows = {s: Win(w.count, w.total, set(w.distinct)) for s, w in windows.items()} if windows else {}
        values, ids = self.values, self.ids
        return (self.max_time, windows, self.times[:], values[:] if values else [], ids[:] if ids else [])


Saved = tuple[int, dict[int, Win], list[int], list[Any], list[str]]


def restored(saved: Saved | KeyState) -> KeyState:
    return saved if isinstance(saved, KeyState) else KeyState(*saved)


@dataclass(slots=True)
class Partition:
    keys: dict[bytes, KeyState] = field(default_factory=dict)
    dirty: set[bytes] = field(default_factory=set)  # written since the last flush
    expired: set[bytes] = field(default_factory=set)  # swept since the last flush
    stream_time: int = NO_TIME
    next_sweep: int = NO_TIME
    undo: dict[bytes, Saved | KeyState | None] = field(default_factory=dict)  # state at the last commit
    base: tuple[int, int] | None = None  # (stream_time, next_sweep) at the last commit, once changed

    def touch(self, key: bytes, ks: KeyState | None) -> None:
        """Before ``key`` (state ``ks``) changes: keep its committed state, once per transaction."""
        if key in self.undo:
            return
        if self.base is None:
            self.base = (self.stream_time, self.next_sweep)
        self.undo[key] = None if ks is None else ks.saved()

    def touch_removed(self, key: bytes, ks: KeyState) -> None:
        """Before ``key`` is deleted (``ks`` is not changed, only dropped: no copy)."""
        if key not in self.undo:
            if self.base is None:
                self.base = (self.stream_time, self.next_sweep)
            self.undo[key] = ks

    def commit(self) -> None:
        if self.undo:
            self.undo = {}
        self.base = None

    def rollback(self) -> int:
        """Back to the state at the last commit (unflushed changes too); the number of keys put back."""
        n = len(self.undo)
        keys = self.keys
        for k, ks in self.undo.items():
            if ks is None:
                keys.pop(k, None)
            else:
                keys[k] = restored(ks)
        if self.base is not None:
            self.stream_time, self.next_sweep = self.base
        self.undo, self.base = {}, None
        self.dirty, self.expired = set(), set()
        return n


def encode_entry(ks: KeyState, kind: str, function: str, related: bool) -> list[Any]:
    """A key's JSON-ready changelog entry: ``[max_time, ...]`` (``decode_entry`` reads it back)."""
    if kind == "sliding":
        if function == "count":
            doc = [ks.max_time, ks.times]
        elif function == "sum":
            doc = [ks.max_time, ks.times, [str(v) for v in ks.values]]
        else:
            doc = [ks.max_time, ks.times, ks.values]
        if related:
            doc.append(ks.ids)  # last: the transaction ids
        return doc
    if function == "count":
        return [ks.max_time, [[s, w.count] for s, w in ks.windows.items()]]
    if function == "sum":
        return [ks.max_time, [[s, w.count, str(w.total)] for s, w in ks.windows.items()]]
    return [ks.max_time, [[s, w.count, sorted(w.distinct)] for s, w in ks.windows.items()]]


def decode_entry(entry: Sequence[Any], kind: str, function: str, related: bool) -> KeyState:
    """The ``KeyState`` of a changelog entry (``entry`` comes from ``json.loads``: its lists are its own).

    Hot during restore (one call per store per changelog record): built in one constructor call, the
    JSON lists kept as they are (times and ids are ints and strings already). Measured 2026-12-03 on
    200,000 fraud.yaml stage-1 changelog records applied in process: 63 -> 55-57 µs per record."""
    if kind == "sliding":
        values: list[Any] = []
        if function == "sum":
            values = [Decimal(v) for v in entry[2]]
        elif function == "distinct_count":
            values = [v if type(v) is str else str(v) for v in entry[2]]
        return KeyState(entry[0], {}, entry[1], values, entry[-1] if related else [])
    ks = KeyState(int(entry[0]))
    for w in entry[1]:
        win = Win(int(w[1]))
        if function == "sum":
            win.total = Decimal(w[2])
        elif function == "distinct_count":
            win.distinct = set(w[2])
        ks.windows[int(w[0])] = win
    return ks

"""The partitions of a window store: the keys each holds, its stream time and undo log
(``topology.state.keys``), the restored keys not decoded yet, and each key's changelog entry.

``WindowStore`` (``topology.state.window``) adds the window math on top: ``add`` changes the keys of
these partitions; ``StateGroup`` reads their entries into changelog documents (``take_dirty``,
``entries``, ``holds``) and loads restored ones back (``load``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from topology.serde.documents import dumps_text
from topology.state.keys import NO_TIME, Partition, decode_entry, encode_entry


def _no_undecoded(partition: int, key: bytes | None) -> None:
    """A store outside any group has no undecoded keys."""


class StorePartitions:
    """The keyed state of one store, for every partition this instance owns, and its changelog entries."""

    def __init__(self, kind: str, function: str, related: bool, retention: int) -> None:
        self._kind = kind
        self._function = function
        self.related = related  # keeps transaction ids (sliding windows only)
        self._retention = retention
        # Idle keys are swept when stream time passes next_sweep; the interval only bounds memory.
        self._sweep_every = max(retention // 4, 1000)
        self._partitions: dict[int, Partition] = {}
        # Restored keys not decoded yet, per partition (shared by the stores of a group; see ``StateGroup``)
        # and the group's decoder: (partition, key) decodes one key into every store, (partition, None) all.
        self.undecoded: dict[int, dict[bytes, bytes]] = {}
        self._decode: Callable[[int, bytes | None], None] = _no_undecoded

    def join_group(self, undecoded: dict[int, dict[bytes, bytes]], decode: Callable[[int, bytes | None], None]) -> None:
        """Work inside a group: its undecoded restored keys and its decoder."""
        self.undecoded = undecoded
        self._decode = decode

    def _decode_all(self, partition: int | None = None) -> None:
        """Decode every undecoded key (of ``partition``, or of all): before reading the whole state."""
        for n in [n for n in self.undecoded if partition is None or n == partition]:
            self._decode(n, None)

    # ------------------------------------------------------------ partitions

    def partitions(self) -> tuple[int, ...]:
        return tuple(sorted(self._partitions))

    def drop(self, partition: int) -> None:
        """Forget a partition (revoked, or rebuilt after an abort), unflushed changes included."""
        self._partitions.pop(partition, None)

    def clear(self, partition: int) -> None:
        """Start a partition empty (assigned; ``restore`` fills it from the changelog)."""
        self._partitions[partition] = Partition()

    def keys(self, partition: int) -> list[bytes]:
        """The keys held in memory for ``partition``."""
        self._decode_all(partition)
        p = self._partitions.get(partition)
        return [] if p is None else list(p.keys)

    def size(self, partition: int | None = None) -> int:
        """Number of keys held (in one partition, or all)."""
        self._decode_all(partition)
        parts = self._partitions.values() if partition is None else [self._partitions.get(partition, Partition())]
        return sum(len(p.keys) for p in parts)

    def keys_decoded(self, partition: int) -> int:
        """Keys of ``partition`` held decoded (restored keys not used yet are not counted, nor decoded)."""
        return len(self.decoded_keys(partition))

    def decoded_keys(self, partition: int) -> Collection[bytes]:
        """Those keys (a live view; ``holds`` also counts the undecoded ones)."""
        p = self._partitions.get(partition)
        return () if p is None else p.keys.keys()

    def stream_time(self, partition: int) -> int:
        p = self._partitions.get(partition)
        return NO_TIME if p is None else p.stream_time

    @property
    def retention(self) -> int:
        """How long after a key's last event its state may still decide (window size + grace)."""
        return self._retention

    @property
    def sweep_every(self) -> int:
        """Stream time between two sweeps of expired keys."""
        return self._sweep_every

    def advance_stream_time(self, partition: int, time_ms: int) -> None:
        """Raise the partition's stream time to ``time_ms`` (restored state carries it)."""
        p = self._partitions.get(partition)
        if p is None:
            p = self._partitions[partition] = Partition()
        if time_ms > p.stream_time:
            p.stream_time = time_ms
        if p.next_sweep == NO_TIME:
            p.next_sweep = p.stream_time + self._sweep_every

    def forget(self, partition: int, keys: Iterable[bytes] | None = None) -> None:
        """Drop ``keys`` (None: all) from memory, not marked (their committed state is kept elsewhere)."""
        p = self._partitions.get(partition)
        if p is None:
            return
        if keys is None:
            p.keys.clear()
            return
        for k in keys:
            p.keys.pop(k, None)

    # ------------------------------------------------------------ transactions

    def committed(self) -> None:
        """The state so far is committed (flushed and in the changelog): forget the undo copies."""
        for p in self._partitions.values():
            p.commit()

    def aborted(self) -> int:
        """Back to the state at the last ``committed`` (or assignment); the number of keys put back."""
        return sum(p.rollback() for p in self._partitions.values())

    def undo_entries(self, partition: int) -> int:
        """Keys with an undo copy in ``partition`` (what an abort would put back)."""
        p = self._partitions.get(partition)
        return 0 if p is None else len(p.undo)

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
        return (p is not None and key in p.keys) or key in self.undecoded.get(partition, ())

    def entries(self, partition: int, keys: Iterable[bytes]) -> dict[bytes, list[Any]]:
        """The JSON-ready state of those of ``keys`` the store holds."""
        p = self._partitions.get(partition)
        if p is None:
            return {}
        held, kind, fn, related = p.keys, self._kind, self._function, self.related
        return {k: encode_entry(ks, kind, fn, related) for k in keys if (ks := held.get(k)) is not None}

    def entry(self, partition: int, key: bytes) -> list[Any] | None:
        """The JSON-ready state of ``key`` (None: the store does not hold it)."""
        if key in self.undecoded.get(partition, ()):
            self._decode(partition, key)
        return self.entries(partition, (key,)).get(key)

    def load(self, partition: int, key: bytes, entry: Sequence[Any] | None) -> None:
        """Set ``key`` to a state read back from the changelog (``None`` deletes it); not dirty."""
        p = self._partitions.get(partition)
        if p is None:
            p = self._partitions[partition] = Partition()
        if entry is None:
            p.keys.pop(key, None)
            return
        ks = p.keys[key] = decode_entry(entry, self._kind, self._function, self.related)
        if ks.max_time > p.stream_time:  # advance_stream_time, inlined: once per store per restored record
            p.stream_time = ks.max_time
        if p.next_sweep == NO_TIME:
            p.next_sweep = p.stream_time + self._sweep_every

    def snapshot(self, partition: int) -> dict[bytes, str]:
        """Every live key's state in ``partition`` as text (for tests: equal snapshots mean equal
        state). Keys that expired but were not swept yet (e.g. restored) are left out."""
        self._decode_all(partition)
        p = self._partitions.get(partition)
        if p is None:
            return {}
        horizon = p.stream_time - self._retention
        live = [k for k, ks in sorted(p.keys.items()) if ks.max_time > horizon]
        return {k: dumps_text(e) for k, e in self.entries(partition, live).items()}

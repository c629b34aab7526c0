"""The stores of one stage and their one changelog topic: changelog documents (flush) and restore.

A key's changelog document is one compact JSON object: ``{state_id: entry}`` for every store of the
group that holds the key (``WindowStore.entry``); ``None`` (a tombstone) when none does. Its size is
bounded by construction (``max_document_bytes``).

Restore keeps each key's last changelog document undecoded (``undecoded``, shared with the stores) and
raises each store's stream time from the document's bytes (``entry_max_time``): per record, a dict
insert and one ``find`` per store. A key is decoded into every store of the group the first time a
store uses it, and ``flush`` decodes ``DECODE_PER_FLUSH`` more, so keys that are never used again
are still decoded, and swept once expired. Reading the whole state (``keys``, ``size``, ``snapshot``)
decodes everything first. Measured 2026-12-03 (``fraudstream bench state``, docs/benchmarks.md run 6).

Transactions: ``committed`` after the commit of the transaction that holds every flush since the
last ``committed``/``aborted``; ``aborted`` puts every store back to its state at the last
``committed`` (or at the end of the restore). In memory, the changelog is replayed from its start
(``restore_from`` is 0) and ``checkpoint`` does nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from topology.plan.model import Aggregate
from topology.serde.documents import dumps, loads
from topology.state.bounds import Bounds
from topology.state.window import WindowStore, entry_max_time, entry_tag, state_id

DECODE_PER_FLUSH = 100  # restored keys decoded per flush besides those used (bounds the work per commit)


def document_bytes(stores: Iterable[tuple[str, Aggregate]]) -> int:
    """The largest changelog value a key of a group of stores (name, aggregate) can have."""
    return 2 + sum(len(state_id(n, a)) + 4 + Bounds.of(a).entry_bytes() for n, a in stores)


class StateGroup:
    """The stores of one stage and their one compacted changelog topic (keyed by group key)."""

    def __init__(self, changelog_topic: str, stores: Iterable[WindowStore]) -> None:
        self.changelog_topic = changelog_topic
        self.stores = tuple(stores)
        self._by_id = {s.state_id: s for s in self.stores}
        self._tags = [(s, entry_tag(s.state_id)) for s in self.stores]
        # Restored keys not decoded yet, per partition: those of a group these stores were regrouped from
        # (rules changed at run time) are still to be decoded, so the dict is taken over.
        self.undecoded: dict[int, dict[bytes, bytes]] = next((s.undecoded for s in self.stores if s.undecoded), {})
        for s in self.stores:
            s.join_group(self.undecoded, self.decode)

    def drop(self, partition: int) -> None:
        self.undecoded.pop(partition, None)
        for s in self.stores:
            s.drop(partition)

    def max_document_bytes(self) -> int:
        """The largest changelog value a key of this group can have (from the stores' caps)."""
        return document_bytes([(s.name, s.aggregate) for s in self.stores])

    def committed(self, *, confirmed: bool = True) -> None:
        """The state so far is committed; ``confirmed=False``: assumed so by a runtime that does not
        tell outcomes (and rebuilds state after an abort)."""
        for s in self.stores:
            s.committed()

    def aborted(self) -> int:
        """Every store back to its last committed state; the number of (store, key) undo entries applied."""
        return sum(s.aborted() for s in self.stores)

    def restore_from(self, partition: int) -> int:
        """The first changelog offset to replay into ``partition`` (in memory: all of it)."""
        return 0

    def checkpoint(self, partition: int, offset: int) -> None:
        """Committed state covers the changelog up to ``offset`` (in memory: nothing to keep)."""

    def clear(self, partition: int) -> None:
        self.undecoded.pop(partition, None)
        for s in self.stores:
            s.clear(partition)

    def flush(self) -> list[tuple[int, bytes, bytes | None]]:
        """(partition, key, value or None) for every key written since the last flush, and a
        tombstone for every key swept from the last store that held it.

        A key swept from one store while another still holds it keeps its (now partly stale)
        record: the stale entry is restored as expired state and swept again, which decides the
        same, and saves a changelog record per key and window expiry.
        """
        self.decode_some(DECODE_PER_FLUSH)
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
            entries = [(s.state_id, s.entries(n, keys)) for s in stores]
            for key in keys:
                doc = {sid: e[key] for sid, e in entries if key in e}
                out.append((n, key, dumps(doc) if doc else None))
        for n, keys in swept.items():
            held = [s.decoded_keys(n) for s in stores]
            undecoded = self.undecoded.get(n, {})
            for key in keys - written.get(n, set()):
                if key not in undecoded and not any(key in h for h in held):  # no store holds it (``holds``)
                    out.append((n, key, None))
        return out

    def restore(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Apply one changelog record: keep its document undecoded (a tombstone drops the key), and raise
        the stream time of every store with an entry in it.

        Restore runs before the partition is processed, so no store holds a decoded copy of ``key``."""
        todo = self.undecoded.get(partition)
        if value is None:
            if todo is not None:
                todo.pop(key, None)
            return
        if todo is None:
            todo = self.undecoded[partition] = {}
        todo[key] = value
        for s, tag in self._tags:
            t = entry_max_time(value, tag)
            if t is not None:
                s.advance_stream_time(partition, t)

    def decode(self, partition: int, key: bytes | None) -> None:
        """Decode ``key`` (None: every key) of ``partition`` from its restored document into every store."""
        todo = self.undecoded.get(partition)
        if todo is None:
            return
        if key is None:
            while todo:
                self._load(partition, *todo.popitem())
        elif key in todo:
            self._load(partition, key, todo.pop(key))
        if not todo:
            del self.undecoded[partition]

    def decode_some(self, n: int) -> None:
        """Decode up to ``n`` restored keys (any partition): spreads the decoding of unused keys over flushes."""
        for partition in list(self.undecoded):
            todo = self.undecoded[partition]
            while todo and n > 0:
                self._load(partition, *todo.popitem())  # popitem: O(1), where popping the first key is not
                n -= 1
            if not todo:
                del self.undecoded[partition]
            if n <= 0:
                return

    def _load(self, partition: int, key: bytes, value: bytes) -> None:
        doc: dict[str, Any] = loads(value)
        for s in self.stores:
            entry = doc.get(s.state_id)
            if entry is not None:
                s.load(partition, key, entry)

"""The stores of one stage and their one changelog topic: changelog documents (flush) and restore.

A key's changelog document is one compact JSON object: ``{state_id: entry}`` for every store of the
group that holds the key (``WindowStore.entry``); ``None`` (a tombstone) when none does. Its size is
bounded by construction (``max_document_bytes``).

Transactions: ``committed`` after the commit of the transaction that holds every flush since the
last ``committed``/``aborted``; ``aborted`` puts every store back to its state at the last
``committed`` (or at the end of the restore). In memory, the changelog is replayed from its start
(``restore_from`` is 0) and ``checkpoint`` does nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from topology.plan.model import Aggregate
from topology.state.bounds import Bounds
from topology.state.window import DUMPS, WindowStore, state_id


def document_bytes(stores: Iterable[tuple[str, Aggregate]]) -> int:
    """The largest changelog value a key of a group of stores (name, aggregate) can have."""
    return 2 + sum(len(state_id(n, a)) + 4 + Bounds.of(a).entry_bytes() for n, a in stores)


class StateGroup:
    """The stores of one stage and their one compacted changelog topic (keyed by group key)."""

    def __init__(self, changelog_topic: str, stores: Iterable[WindowStore]) -> None:
        self.changelog_topic = changelog_topic
        self.stores = tuple(stores)
        self._by_id = {s.state_id: s for s in self.stores}

    def drop(self, partition: int) -> None:
        for s in self.stores:
            s.drop(partition)

    def max_document_bytes(self) -> int:
        """The largest changelog value a key of this group can have (from the stores' caps)."""
        return document_bytes((s.name, s.aggregate) for s in self.stores)

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
            entries = [(s.state_id, s.entries(n, keys)) for s in stores]
            for key in keys:
                doc = {sid: e[key] for sid, e in entries if key in e}
                out.append((n, key, DUMPS(doc).encode() if doc else None))
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

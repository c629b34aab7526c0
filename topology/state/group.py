"""The stores of one stage and their one changelog topic: changelog documents (flush) and restore.

A key's changelog document is one compact JSON object: ``{state_id: entry}`` for every store of the
group that holds the key (``WindowStore.entry``); ``None`` (a tombstone) when none does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from topology.state.window import DUMPS, WindowStore


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

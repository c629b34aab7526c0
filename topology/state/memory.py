"""Where the stores of a processor live: the ``StateBackend`` protocol and the in-memory backend."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from topology.plan.model import Aggregate
from topology.state.group import StateGroup
from topology.state.window import WindowStore


class StateBackend(Protocol):
    """Makes the stores of a processor: ``InMemoryState`` (the default), or
    ``topology.state.rocksdb.KVState`` (an embedded store such as RocksDB). ``group`` is called again for
    the same changelog topic when rules change at run time (the stores are regrouped)."""

    def store(self, name: str, aggregate: Aggregate, changelog_topic: str) -> WindowStore: ...

    def group(self, changelog_topic: str, stores: Iterable[WindowStore]) -> StateGroup: ...


class InMemoryState:
    """Stores in memory (plain ``WindowStore``/``StateGroup``)."""

    def store(self, name: str, aggregate: Aggregate, changelog_topic: str) -> WindowStore:
        return WindowStore(name, aggregate, changelog_topic)

    def group(self, changelog_topic: str, stores: Iterable[WindowStore]) -> StateGroup:
        return StateGroup(changelog_topic, stores)

"""Windowed state stores: window math (``window``), a store's partitions and their keys' changelog
entries (``partitions``), what a key keeps at most (``bounds``), per-key state and its undo log
(``keys``), changelog documents of a stage's stores (``group``), in memory (``memory``) or in RocksDB
(``rocksdb``)."""

from topology.state.group import StateGroup
from topology.state.memory import InMemoryState, StateBackend
from topology.state.window import NO_TIME, AggValue, WindowStore, encode_group_key, state_id

__all__ = [
    "NO_TIME",
    "AggValue",
    "InMemoryState",
    "StateBackend",
    "StateGroup",
    "WindowStore",
    "encode_group_key",
    "state_id",
]

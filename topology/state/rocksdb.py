"""Window stores kept in an embedded key-value store (RocksDB through ``rocksdict``; any ``KeyValue``).

Selected with ``FRAUDSTREAM_DETECTOR_STORE=rocksdb`` (``TopologyProcessor(state=KVState(...))``);
the default stays in memory (``topology.state.memory``): see README, "State stores", for the figures of
``fraudstream bench stores``. Same contract as ``StateGroup``/``WindowStore`` (``add``, ``flush``,
``restore``, ``clear``, ``drop``, ``snapshot``). The changelog stays the source of truth; the
embedded store holds every key's committed state, and memory only a write-back cache of the keys
touched lately (as Kafka Streams' record cache in front of RocksDB):

- ``add`` faults the key in (one ``get``, one JSON decode of its document) the first time it is
  touched while not cached, then updates it in memory like the in-memory store;
- ``flush`` returns the same changelog entries as ``StateGroup.flush`` and writes them, in one
  batch, to the embedded store as they are (the value in the store *is* the changelog value); then
  the cache keeps at most ``cache_keys`` keys per partition (0: none), dropping the first loaded;
- ``restore`` writes a changelog record as it is (no decode): a fast restore;
- keys expired in every store of the group are deleted by a scan of the partition, once per
  sweep interval of the group's longest window (an expired entry read back is harmless: ``add``
  prunes it, as it does restored in-memory state).

Exactly once: local state may run ahead of the committed changelog (it is written at flush, right
before the commit, and the commit may fail), so ``clear`` (assigned, or rebuilt after an abort)
wipes the partition and the changelog is replayed from its start, as Kafka Streams does under EOS
without KIP-892. The detector always does so. ``close(partition, offset)`` after a clean commit
writes a checkpoint (the changelog end offset the local state matches); ``resume`` then keeps the
local state and returns that offset, so only the changelog tail is replayed, and deletes the
checkpoint at once, since from then on local state may again run ahead of what is committed. Only
the benchmark uses these two: the runtime has no hook yet that tells a clean close after a commit.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

from topology.plan import Aggregate
from topology.state.group import StateGroup
from topology.state.window import NO_TIME, AggValue, WindowStore

_META = b"\xff\xffmeta"  # per partition: stream time per store (JSON), not a group key


class KeyValue(Protocol):
    """The few operations the stores need of an embedded key-value store (one per group and partition)."""

    def get(self, key: bytes) -> bytes | None: ...
    def write(self, changes: Iterable[tuple[bytes, bytes | None]]) -> None: ...
    def items(self) -> Iterator[tuple[bytes, bytes]]: ...
    def close(self) -> None: ...


class RocksKV:
    """RocksDB (``rocksdict``), WAL off: the changelog, not the WAL, is what survives a crash."""

    def __init__(self, path: Path) -> None:
        from rocksdict import Options, Rdict, WriteOptions

        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(16 * 2**20)  # Kafka Streams' default memtable size
        options.set_max_write_buffer_number(3)
        self._db = Rdict(str(path), options)
        self._write_options = WriteOptions()
        self._write_options.disable_wal = True  # type: ignore[method-assign,assignment]  # a property
        self._db.set_write_options(self._write_options)

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db.get(key)
        return value

    def write(self, changes: Iterable[tuple[bytes, bytes | None]]) -> None:
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for k, v in changes:
            if v is None:
                batch.delete(k)
            else:
                batch.put(k, v)
        self._db.write(batch, self._write_options)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        yield from self._db.items()  # raw mode: bytes keys and values

    def close(self) -> None:
        self._db.flush()
        self._db.close()


class KVWindowStore(WindowStore):
    """A ``WindowStore`` whose partitions cache the keys touched since the last flush; its
    ``KVStateGroup`` keeps every key's committed state in the embedded store."""

    def __init__(self, name: str, aggregate: Aggregate, changelog_topic: str) -> None:
        super().__init__(name, aggregate, changelog_topic)
        self._group: KVStateGroup | None = None
        self._seen: dict[int, dict[bytes, None]] = {}

    def bind(self, group: KVStateGroup, seen: dict[int, dict[bytes, None]]) -> None:
        """Work inside ``group``: ``seen`` (per partition, the keys it has cached) is the group's."""
        self._group = group
        self._seen = seen

    def add(self, partition: int, key: bytes, time_ms: int, value: Any, ident: str = "") -> tuple[AggValue, ...]:
        seen = self._seen.get(partition)
        if seen is None or key not in seen:
            assert self._group is not None, "a KVWindowStore works inside its KVStateGroup"
            self._group.fault_in(partition, key)
        return super().add(partition, key, time_ms, value, ident)

    def size(self, partition: int | None = None) -> int:
        assert self._group is not None
        return self._group.size(partition)

    def snapshot(self, partition: int) -> dict[bytes, str]:
        """Like ``WindowStore.snapshot``, of the committed state (call it right after a flush)."""
        assert self._group is not None
        if partition not in self.partitions():
            return {}
        horizon = self.stream_time(partition) - self.retention
        out: dict[bytes, str] = {}
        for key, doc in self._group.documents(partition):
            entry = doc.get(self.state_id)
            if entry is not None and int(entry[0]) > horizon:
                out[key] = json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
        return dict(sorted(out.items()))


class KVStateGroup(StateGroup):
    """The stores of one stage in an embedded key-value store (one per partition, under ``directory``)."""

    def __init__(
        self,
        changelog_topic: str,
        stores: Iterable[WindowStore],
        directory: Path,
        open_kv: Callable[[Path], KeyValue] = RocksKV,
        *,
        cache_keys: int = 0,
    ) -> None:
        super().__init__(changelog_topic, stores)
        self._cache_keys = cache_keys  # per partition, kept across flushes (0: emptied at each flush)
        self._kvs: list[KVWindowStore] = [s for s in self.stores if isinstance(s, KVWindowStore)]
        if len(self._kvs) != len(self.stores):
            raise TypeError("a KVStateGroup holds KVWindowStores only")
        self._dir = directory / changelog_topic
        self._open_kv = open_kv
        self._db: dict[int, KeyValue] = {}
        self._seen: dict[int, dict[bytes, None]] = {}  # cached keys, oldest first
        self._next_sweep: dict[int, int] = {}
        self._restoring: dict[int, list[tuple[bytes, bytes | None]]] = {}  # restored, not written yet
        self._sweep_every = max(s.sweep_every for s in self._kvs) if self._kvs else 1000
        for s in self._kvs:
            s.bind(self, self._seen)

    # ------------------------------------------------------------ partitions

    def _path(self, partition: int) -> Path:
        return self._dir / str(partition)

    def _checkpoint(self, partition: int) -> Path:
        return self._dir / f"{partition}.checkpoint"

    def _open(self, partition: int) -> KeyValue:
        db = self._db.get(partition)
        if db is None:
            self._path(partition).parent.mkdir(parents=True, exist_ok=True)
            db = self._db[partition] = self._open_kv(self._path(partition))
            self._seen[partition] = {}
        return db

    def _db_of(self, partition: int) -> KeyValue:
        db = self._db.get(partition)
        if db is None:
            db = self._open(partition)
        pending = self._restoring.pop(partition, None)
        if pending:
            db.write(pending)
        return db

    def clear(self, partition: int) -> None:
        """Assigned (or rebuilt after an abort) under exactly once: wipe local state; replay the changelog."""
        self.drop(partition)
        super().clear(partition)
        self._open(partition)

    def resume(self, partition: int) -> int | None:
        """Assigned after a clean close: keep local state, return the changelog offset to replay from
        (``None``: no checkpoint, the partition was wiped, replay it all). The checkpoint is deleted."""
        checkpoint = self._checkpoint(partition)
        if not checkpoint.exists():
            self.clear(partition)
            return None
        offset = int(checkpoint.read_text())
        checkpoint.unlink()
        self._close_db(partition)
        super().clear(partition)
        db = self._open(partition)
        meta = db.get(_META)
        if meta is not None:
            times = json.loads(meta)
            for s in self._kvs:
                s.advance_stream_time(partition, int(times.get(s.state_id, NO_TIME)))
        return offset

    def drop(self, partition: int) -> None:
        """Revoked (or rebuilt): forget the partition's cache and delete its local state and checkpoint."""
        super().drop(partition)
        self._close_db(partition)
        shutil.rmtree(self._path(partition), ignore_errors=True)
        self._checkpoint(partition).unlink(missing_ok=True)

    def close(self, partition: int, changelog_offset: int) -> None:
        """After a clean commit (nothing unflushed): keep local state with a checkpoint of the changelog
        end offset it matches, so ``resume`` can skip replaying the changelog up to there."""
        self._write_meta(partition)
        self._close_db(partition)
        super().drop(partition)
        self._checkpoint(partition).write_text(str(changelog_offset))

    def release(self, partition: int) -> None:
        """Close the partition's embedded store without a checkpoint (after a fatal error; also what a
        crash leaves): the next ``resume`` wipes it."""
        self._close_db(partition)
        super().drop(partition)

    def adopt(self, old: KVStateGroup) -> None:
        """Take over ``old``'s embedded stores (the processor regroups its stores when rules change
        at run time; ``old`` was flushed). The cache starts empty: keys are read back as needed."""
        self._db, self._restoring, self._next_sweep = old._db, old._restoring, old._next_sweep
        for n in self._db:
            self._seen[n] = {}
        for s in self._kvs:
            for n in s.partitions():
                s.forget(n)

    def _close_db(self, partition: int) -> None:
        if self._restoring.get(partition):
            self._db_of(partition)  # writes what was restored
        self._restoring.pop(partition, None)
        db = self._db.pop(partition, None)
        self._seen.pop(partition, None)
        self._next_sweep.pop(partition, None)
        if db is not None:
            db.close()

    def _write_meta(self, partition: int) -> None:
        times = {s.state_id: s.stream_time(partition) for s in self._kvs}
        self._db_of(partition).write([(_META, json.dumps(times).encode())])

    def write_restored(self) -> None:
        """Write the restored records still batched (they are also written before any read)."""
        for partition in list(self._restoring):
            self._db_of(partition)

    def size(self, partition: int | None = None) -> int:
        parts = list(self._db) if partition is None else [partition]
        return sum(1 for p in parts if p in self._db for k, _ in self._db_of(p).items() if k != _META)

    def documents(self, partition: int) -> Iterator[tuple[bytes, dict[str, Any]]]:
        if partition not in self._db:
            return
        for k, v in self._db_of(partition).items():
            if k != _META:
                yield k, json.loads(v)

    # ------------------------------------------------------------ update

    def fault_in(self, partition: int, key: bytes) -> None:
        """Load ``key``'s committed state into every store's cache (once per key between flushes)."""
        db = self._db_of(partition)
        self._seen[partition][key] = None
        raw = db.get(key)
        if raw is None:
            return
        doc = json.loads(raw)
        for s in self._kvs:
            entry = doc.get(s.state_id)
            if entry is not None and not s.holds(partition, key):
                s.load(partition, key, entry)

    def flush(self) -> list[tuple[int, bytes, bytes | None]]:
        """``StateGroup.flush``'s entries, also written to the embedded store; the cache is emptied."""
        out = super().flush()
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for n, key, value in out:
            by_partition.setdefault(n, []).append((key, value))
        for n, changes in by_partition.items():
            self._db_of(n).write(changes)
        self._evict()
        out.extend(self._sweep_due())
        return out

    def _evict(self) -> None:
        """Forget the first-loaded cached keys beyond ``cache_keys`` per partition (all are flushed now)."""
        for n, seen in self._seen.items():
            extra = len(seen) - self._cache_keys
            if extra <= 0:
                continue
            if extra == len(seen):
                seen.clear()
                for s in self._kvs:
                    s.forget(n)
                continue
            gone = list(islice(seen, extra))
            for k in gone:
                del seen[k]
            for s in self._kvs:
                s.forget(n, gone)

    def _sweep_due(self) -> list[tuple[int, bytes, bytes | None]]:
        """Delete keys expired in every store (a scan), once per sweep interval; their tombstones."""
        out: list[tuple[int, bytes, bytes | None]] = []
        for n in list(self._db):
            st = max((s.stream_time(n) for s in self._kvs), default=NO_TIME)
            if st == NO_TIME:
                continue
            due = self._next_sweep.get(n)
            if due is None:
                self._next_sweep[n] = st + self._sweep_every
                continue
            if st < due:
                continue
            self._next_sweep[n] = st + self._sweep_every
            horizons = {s.state_id: s.stream_time(n) - s.retention for s in self._kvs}
            dead = [
                key
                for key, doc in self.documents(n)
                if all(int(entry[0]) <= horizons.get(sid, NO_TIME) for sid, entry in doc.items())
            ]
            if dead:
                self._db[n].write([(k, None) for k in dead])
                out.extend((n, k, None) for k in dead)
        return out

    def restore(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Write one changelog record as it is (batched); stream time from its entries' largest event times."""
        if partition not in self._db:
            self._open(partition)
        pending = self._restoring.setdefault(partition, [])
        pending.append((key, value))
        if len(pending) >= 10_000:
            self._db_of(partition)
        if value is None:
            return
        for s in self._kvs:
            t = _max_time(value, s.state_id)
            if t is not None:
                s.advance_stream_time(partition, t)


class KVState:
    """Makes ``KVWindowStore``s and their ``KVStateGroup``s under ``directory`` (a ``StateBackend``);
    ``open_kv`` opens one partition's embedded store (RocksDB by default)."""

    def __init__(
        self, directory: Path, open_kv: Callable[[Path], KeyValue] = RocksKV, *, cache_keys: int = 100_000
    ) -> None:
        self.directory = directory
        self.open_kv = open_kv
        self.cache_keys = cache_keys
        self._groups: dict[str, KVStateGroup] = {}

    def store(self, name: str, aggregate: Aggregate, changelog_topic: str) -> WindowStore:
        return KVWindowStore(name, aggregate, changelog_topic)

    def group(self, changelog_topic: str, stores: Iterable[WindowStore]) -> StateGroup:
        group = KVStateGroup(changelog_topic, stores, self.directory, self.open_kv, cache_keys=self.cache_keys)
        old = self._groups.get(changelog_topic)
        if old is not None:
            group.adopt(old)
        self._groups[changelog_topic] = group
        return group


def _max_time(value: bytes, state_id: str) -> int | None:
    """The first number of ``state_id``'s entry in a changelog document (its largest event time), unparsed."""
    tag = b'"' + state_id.encode() + b'":['
    i = value.find(tag)
    if i < 0:
        return None
    i += len(tag)
    j = value.find(b",", i)
    return int(value[i:j])

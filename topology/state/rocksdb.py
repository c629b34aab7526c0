"""Window stores kept in an embedded key-value store (RocksDB through ``rocksdict``; any ``KeyValue``).

Selected with ``FRAUDSTREAM_DETECTOR_STORE=rocksdb`` (``TopologyProcessor(state=KVState(...))``);
the default stays in memory (``topology.state.memory``): see README, "State stores", for the figures of
``fraudstream bench stores``. Same contract as ``StateGroup``/``WindowStore`` (``add``, ``flush``,
``restore``, ``clear``, ``drop``, ``snapshot``, ``committed``, ``aborted``). The changelog stays
the source of truth; the embedded store holds every key's *committed* state, and memory a
write-back cache of the keys touched lately (as Kafka Streams' record cache in front of RocksDB):

- ``add`` faults the key in (one ``get``, one JSON decode of its document) the first time it is
  touched while not cached, then updates it in memory like the in-memory store (with its undo log);
- ``flush`` returns the same changelog entries as ``StateGroup.flush`` and keeps them as the
  transaction's batch (the value in the store *is* the changelog value);
- ``committed`` writes the batch to the embedded store in one write; then the cache keeps at most
  ``cache_keys`` keys per partition (0: none), dropping the first loaded. ``aborted`` drops the
  batch and puts the cached keys back (undo log): the embedded store only ever holds committed state;
- ``restore`` writes a changelog record as it is (no decode): a fast restore;
- keys expired in every store of the group are deleted by a scan of the partition, once per
  sweep interval of the group's longest window (an expired entry read back is harmless: ``add``
  prunes it, as it does restored in-memory state).

Restarts. ``checkpoint(partition, offset)`` (after a commit) flushes the store (the WAL is off, so
memtables first) and then writes ``offset`` atomically (temporary file + rename): the store on disk
now covers the changelog up to there. ``restore_from`` after ``clear`` (assigned) keeps the local
state if a checkpoint file is valid and returns its offset; else it wipes the partition's state
and returns 0. The checkpoint stays valid after later commits and after a crash, because:
replaying changelog records (full per-key documents, last write wins) from any offset <= the true
coverage over a store that holds only committed state gives exactly the committed state. Every
key written after the offset is written again by the replay with its last committed document; every
other key's last document is before the offset and already in the store. A crash loses only
unflushed memtables, which leaves a prefix of the committed writes, still covering the checkpoint.
(A tombstone compacted away after ``delete.retention.ms`` can leave an expired key behind, which is
harmless.) A runtime that never calls ``restore_from`` gets the partition wiped at the first
``restore`` or ``add`` after ``clear``, and a full replay, as before.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

from topology.plan.model import Aggregate
from topology.serde.documents import dumps, dumps_text, loads
from topology.state.group import StateGroup
from topology.state.window import NO_TIME, AggValue, WindowStore, entry_max_time

_META = b"\xff\xffmeta"  # per partition: stream time per store (JSON), not a group key


class KeyValue(Protocol):
    """The few operations the stores need of an embedded key-value store (one per group and partition)."""

    def get(self, key: bytes) -> bytes | None: ...
    def write(self, changes: Iterable[tuple[bytes, bytes | None]]) -> None: ...
    def items(self) -> Iterator[tuple[bytes, bytes]]: ...
    def flush(self) -> None: ...  # make every write so far durable
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

    def flush(self) -> None:
        self._db.flush()

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
                out[key] = dumps_text(entry)
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
        self._cache_keys = cache_keys  # per partition, kept across commits (0: emptied at each commit)
        self._kvs: list[KVWindowStore] = [s for s in self.stores if isinstance(s, KVWindowStore)]
        if len(self._kvs) != len(self.stores):
            raise TypeError("a KVStateGroup holds KVWindowStores only")
        self._dir = directory / changelog_topic
        self._open_kv = open_kv
        self._db: dict[int, KeyValue] = {}
        self._verified: set[int] = set()  # partitions whose local state is known to be committed state
        self._seen: dict[int, dict[bytes, None]] = {}  # cached keys, oldest first
        self._batch: dict[int, dict[bytes, bytes | None]] = {}  # flushed, not committed yet
        self._next_sweep: dict[int, int] = {}
        self._sweep_base: dict[int, int | None] | None = None  # _next_sweep at the last commit, once changed
        self._restoring: dict[int, list[tuple[bytes, bytes | None]]] = {}  # restored, not written yet
        self._sweep_every = max(s.sweep_every for s in self._kvs) if self._kvs else 1000
        for s in self._kvs:
            s.bind(self, self._seen)

    # ------------------------------------------------------------ partitions

    def _path(self, partition: int) -> Path:
        return self._dir / str(partition)

    def _checkpoint_path(self, partition: int) -> Path:
        return self._dir / f"{partition}.checkpoint"

    def _db_of(self, partition: int) -> KeyValue:
        """The partition's store, open (wiped first if ``restore_from`` did not vouch for it)."""
        if partition not in self._verified:
            self._wipe(partition)
        db = self._db.get(partition)
        if db is None:
            self._path(partition).parent.mkdir(parents=True, exist_ok=True)
            db = self._db[partition] = self._open_kv(self._path(partition))
            self._seen[partition] = {}
        pending = self._restoring.pop(partition, None)
        if pending:
            db.write(pending)
        return db

    def _wipe(self, partition: int) -> None:
        self._restoring.pop(partition, None)
        self._close_db(partition)
        shutil.rmtree(self._path(partition), ignore_errors=True)
        self._checkpoint_path(partition).unlink(missing_ok=True)
        self._verified.add(partition)

    def clear(self, partition: int) -> None:
        """Assigned: start from the local state as the next ``restore_from`` finds it (unverified until then)."""
        self._close_db(partition)
        self._verified.discard(partition)
        super().clear(partition)

    def restore_from(self, partition: int) -> int:
        """Keep the local state if its checkpoint is valid and return its changelog offset; else wipe it, 0."""
        self._close_db(partition)
        offset = _read_checkpoint(self._checkpoint_path(partition))
        if offset is None or not self._path(partition).exists():
            self._wipe(partition)
            self._db_of(partition)
            return 0
        self._verified.add(partition)
        meta = self._db_of(partition).get(_META)
        times = {} if meta is None else loads(meta)
        for s in self._kvs:
            s.advance_stream_time(partition, int(times.get(s.state_id, NO_TIME)))
        return offset

    def checkpoint(self, partition: int, offset: int) -> None:
        """Committed state covers the changelog up to ``offset``: flush the store, then record it."""
        if partition not in self._db:
            return
        if self._batch.get(partition):
            raise RuntimeError(f"checkpoint of partition {partition} with an uncommitted batch")
        db = self._db_of(partition)
        times = {s.state_id: s.stream_time(partition) for s in self._kvs}
        db.write([(_META, dumps(times))])
        db.flush()
        path = self._checkpoint_path(partition)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(str(offset))
        os.replace(tmp, path)

    def drop(self, partition: int) -> None:
        """Revoked: close the partition's store, keeping its files (and checkpoint); uncommitted changes go."""
        super().drop(partition)
        self._close_db(partition)
        self._verified.discard(partition)

    def adopt(self, old: KVStateGroup) -> None:
        """Take over ``old``'s embedded stores (the processor regroups its stores when rules change
        at run time; ``old`` was flushed). The cache starts empty: keys are read back as needed."""
        self._db, self._restoring, self._next_sweep = old._db, old._restoring, old._next_sweep
        self._verified, self._batch, self._sweep_base = old._verified, old._batch, old._sweep_base
        for n in self._db:
            self._seen[n] = {}
        for s in self._kvs:
            for n in s.partitions():
                s.forget(n)

    def _close_db(self, partition: int) -> None:
        if self._restoring.get(partition):
            self._db_of(partition)  # writes what was restored
        self._restoring.pop(partition, None)
        self._batch.pop(partition, None)
        db = self._db.pop(partition, None)
        self._seen.pop(partition, None)
        self._next_sweep.pop(partition, None)
        if db is not None:
            db.close()

    def write_restored(self) -> None:
        """Write the restored records still batched (they are also written before any read)."""
        for partition in list(self._restoring):
            self._db_of(partition)

    def size(self, partition: int | None = None) -> int:
        parts = list(self._db) if partition is None else [partition]
        return sum(1 for p in parts if p in self._db for k, _ in self._db_of(p).items() if k != _META)

    def documents(self, partition: int) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """Every key's committed document in the embedded store."""
        if partition not in self._db:
            return
        for k, v in self._db_of(partition).items():
            if k != _META:
                yield k, loads(v)

    # ------------------------------------------------------------ update

    def fault_in(self, partition: int, key: bytes) -> None:
        """Load ``key``'s latest state into every store's cache (once per key until evicted)."""
        db = self._db_of(partition)
        self._seen[partition][key] = None
        batch = self._batch.get(partition)
        raw = batch[key] if batch is not None and key in batch else db.get(key)
        if raw is None:
            return
        doc = loads(raw)
        for s in self._kvs:
            entry = doc.get(s.state_id)
            if entry is not None and not s.holds(partition, key):
                s.load(partition, key, entry)

    def flush(self) -> list[tuple[int, bytes, bytes | None]]:
        """``StateGroup.flush``'s entries, kept in the transaction's batch (written at ``committed``)."""
        out = super().flush()
        self._keep(out)
        swept = self._sweep_due()  # keys not written by this flush
        self._keep(swept)
        return out + swept

    def _keep(self, entries: Iterable[tuple[int, bytes, bytes | None]]) -> None:
        for n, key, value in entries:
            batch = self._batch.get(n)
            if batch is None:
                batch = self._batch[n] = {}
            batch[key] = value

    def committed(self, *, confirmed: bool = True) -> None:
        """Write the batch to the embedded store (one write per partition), then trim the cache.
        ``confirmed=False`` (a runtime that does not tell outcomes): the checkpoints go too."""
        super().committed()
        for n, batch in self._batch.items():
            if batch:
                self._db_of(n).write(batch.items())
                if not confirmed:
                    self._checkpoint_path(n).unlink(missing_ok=True)
        self._batch = {n: {} for n in self._batch}
        self._sweep_base = None
        self._evict()

    def aborted(self) -> int:
        """Drop the batch and put the cached keys back: the state at the last commit."""
        self._batch = {n: {} for n in self._batch}
        if self._sweep_base is not None:
            for n, due in self._sweep_base.items():
                if due is None:
                    self._next_sweep.pop(n, None)
                else:
                    self._next_sweep[n] = due
            self._sweep_base = None
        return super().aborted()

    def _evict(self) -> None:
        """Forget the first-loaded cached keys beyond ``cache_keys`` per partition (all are committed now)."""
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
            if due is not None and st < due:
                continue
            if self._sweep_base is None:
                self._sweep_base = {}
            self._sweep_base.setdefault(n, due)
            self._next_sweep[n] = st + self._sweep_every
            if due is None:
                continue
            horizons = {s.state_id: s.stream_time(n) - s.retention for s in self._kvs}
            batch = self._batch.get(n, {})
            out.extend(
                (n, key, None)
                for key, doc in self.documents(n)
                if key not in batch and all(int(e[0]) <= horizons.get(sid, NO_TIME) for sid, e in doc.items())
            )
        return out

    def restore(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Write one changelog record as it is (batched); stream time from its entries' largest event times."""
        if partition not in self._db or partition not in self._verified:
            self._db_of(partition)
        pending = self._restoring.setdefault(partition, [])
        pending.append((key, value))
        if len(pending) >= 10_000:
            self._db_of(partition)
        if value is None:
            return
        for s, tag in self._tags:
            t = entry_max_time(value, tag)
            if t is not None:
                s.advance_stream_time(partition, t)


def _read_checkpoint(path: Path) -> int | None:
    """The offset in a checkpoint file (None: missing or not valid)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    return int(text) if text.strip().isdigit() else None


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

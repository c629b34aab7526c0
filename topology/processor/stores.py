"""The processor's state over the runtime's hooks (``StateHooks``): one changelog group per stateful stage,
changes flushed as changelog records, made permanent or undone when the transaction resolves, restored
after assignment."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from topology.plan.model import Topology
from topology.records import Kind, OutRecord, RawRecord
from topology.state import StateBackend, WindowStore, state_id
from topology.state.group import StateGroup
from topology.state.window import kept_state


class StageStores:
    """The stores of every stage, by input topic and by changelog topic."""

    def __init__(self) -> None:
        self._groups: dict[str, StateGroup] = {}
        self._by_changelog: dict[str, StateGroup] = {}
        self.pending: list[OutRecord] = []  # changelog records of stores replaced by an update
        self._resolved = False  # the runtime has called committed()/aborted()
        self._unresolved_flushes = 0

    def install(self, backend: StateBackend, groups: Mapping[str, tuple[str, list[WindowStore]]]) -> None:
        """Use these groups: input topic -> (changelog topic, its stores)."""
        self._groups = {topic: backend.group(changelog, stores) for topic, (changelog, stores) in groups.items()}
        self._by_changelog = {g.changelog_topic: g for g in self._groups.values()}

    @property
    def changelog_topics(self) -> tuple[str, ...]:
        return tuple(g.changelog_topic for g in self._groups.values())

    def flush(self) -> list[OutRecord]:
        """Changelog records of every change since the last flush (see ``TopologyProcessor.flush``)."""
        out, self.pending = self.pending, []
        for group in self._groups.values():
            topic = group.changelog_topic
            for partition, key, value in group.flush():
                out.append(OutRecord(topic, key, value, (), partition, None, kind=Kind.CHANGELOG))
        if not self._resolved:
            # A caller that never tells outcomes (a bench or offline evaluation looping over flush): from
            # its second flush on, each flush also commits the state so far, so undo copies do not pile up.
            self._unresolved_flushes += 1
            if self._unresolved_flushes >= 2:
                for group in self._groups.values():
                    group.committed(confirmed=False)
        return out

    def committed(self) -> None:
        self._resolved = True
        for group in self._groups.values():
            group.committed()

    def aborted(self) -> None:
        self._resolved = True
        self.pending = []
        for group in self._groups.values():
            group.aborted()

    def restore_from(self, changelog: tuple[str, int]) -> int:
        group = self._by_changelog.get(changelog[0])
        return 0 if group is None else group.restore_from(changelog[1])

    def checkpoint(self, offsets: Mapping[tuple[str, int], int]) -> None:
        for (topic, partition), offset in offsets.items():
            group = self._by_changelog.get(topic)
            if group is not None:
                group.checkpoint(partition, offset)

    def changelog_partitions(self, topic: str, partition: int) -> tuple[tuple[str, int], ...]:
        group = self._groups.get(topic)
        return () if group is None else ((group.changelog_topic, partition),)

    def assigned(self, partitions: Iterable[tuple[str, int]]) -> None:
        for topic, p in partitions:
            group = self._groups.get(topic)
            if group is not None:
                group.clear(p)

    def revoked(self, partitions: Iterable[tuple[str, int]]) -> None:
        parts = list(partitions)
        for topic, p in parts:
            group = self._groups.get(topic)
            if group is not None:
                group.drop(p)
        if self.pending:
            gone = {(self._groups[t].changelog_topic, p) for t, p in parts if t in self._groups}
            self.pending = [o for o in self.pending if (o.topic, o.partition) not in gone]

    def restore(self, record: RawRecord) -> None:
        group = self._by_changelog.get(record.topic)
        if group is not None and record.key is not None:
            group.restore(record.partition, record.key, record.value)


class StateHooks:
    """The state hooks a runtime calls on a processor (``TopologyProcessor``), over its ``StageStores``;
    the contract is the processor module's."""

    _groups: StageStores

    def flush(self) -> list[OutRecord]:
        """Changelog records of every state change since the last flush (see ``topology.processor.processor``)."""
        return self._groups.flush()

    def committed(self) -> None:
        """The transaction holding every flush since the last outcome committed: the state is permanent."""
        self._groups.committed()

    def aborted(self) -> None:
        """That transaction aborted (or the runtime rewinds): the state is the last committed state again."""
        self._groups.aborted()

    def restore_from(self, changelog: tuple[str, int]) -> int:
        """The first offset of ``changelog`` to replay (an embedded store's valid checkpoint, else 0)."""
        return self._groups.restore_from(changelog)

    def checkpoint(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Committed state covers these changelog partitions up to these offsets (after ``committed``)."""
        self._groups.checkpoint(offsets)

    def changelog_partitions(self, topic: str, partition: int) -> tuple[tuple[str, int], ...]:
        """The changelog topic-partitions to restore before processing ``topic``/``partition``."""
        return self._groups.changelog_partitions(topic, partition)

    def assigned(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Input partitions now owned: their stores start empty; then ``restore`` their changelogs."""
        self._groups.assigned(partitions)

    def revoked(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Input partitions given up: their state and unflushed changes are dropped."""
        self._groups.revoked(partitions)

    def restore(self, record: RawRecord) -> None:
        """Apply one changelog record (key = group key, value = the stage's state for it, or ``None``)."""
        self._groups.restore(record)


def kept_stores(
    current: Mapping[str, WindowStore], backend: StateBackend, topology: Topology
) -> dict[str, WindowStore]:
    """A store per aggregate of ``topology``: the current one where the state is the same (the threshold or
    grace may differ), else a new, empty one from ``backend``.

    Aggregates of one stage that keep the same state with the same grace (e.g. one sliding count compared
    with two thresholds under the same caps) share one store, named by the first: each record is added
    once, and each aggregate compares the same values with its own threshold."""
    stores: dict[str, WindowStore] = {}
    first: dict[tuple[str, str, int], WindowStore] = {}  # (changelog topic, kept state, grace) -> store
    for s in topology.stores:
        same = (s.changelog_topic, kept_state(s.aggregate), s.aggregate.window.grace_ms)
        if same in first:
            stores[s.name] = first[same]
            continue
        old = current.get(s.name)
        if old is not None and old.changelog_topic == s.changelog_topic and old.state_id == state_id(
            s.name, s.aggregate
        ):
            stores[s.name] = old if old.aggregate == s.aggregate else old.with_aggregate(s.aggregate)
        else:
            stores[s.name] = backend.store(s.name, s.aggregate, s.changelog_topic)
        first[same] = stores[s.name]
    return stores

"""Which input partitions the runtime owns, which of them are still restoring, and where each goes on."""

from __future__ import annotations

from collections.abc import Iterable

from topology.records import TP


class Partitions:
    """The assignment as the runtime sees it.

    ``expected`` is, per partition, the next offset to process: a message below it was fetched
    before a seek (or was processed already) and is skipped. A partition that is restoring is
    owned but paused; a message of it fetched before the pause is skipped, and the first such
    offset is where it has to go on from once the restore is done.
    """

    def __init__(self) -> None:
        self.assigned: set[TP] = set()
        self.expected: dict[TP, int] = {}
        self.restoring: set[TP] = set()
        self._skipped: dict[TP, int] = {}  # restoring partition -> first offset fetched and skipped

    def add(self, parts: Iterable[TP], restoring: Iterable[TP]) -> None:
        for tp in parts:
            self.assigned.add(tp)
            self.expected.pop(tp, None)
        self.restoring.update(restoring)

    def remove(self, parts: Iterable[TP]) -> None:
        for tp in parts:
            self.assigned.discard(tp)
            self.expected.pop(tp, None)
            self.restoring.discard(tp)
            self._skipped.pop(tp, None)

    def owns(self, tp: TP) -> bool:
        """Whether messages of ``tp`` are processed now (assigned and not restoring)."""
        return tp in self.assigned and tp not in self.restoring

    def skipped(self, tp: TP, offset: int) -> None:
        """A message of a restoring partition was fetched and skipped."""
        if tp in self.restoring and tp not in self._skipped:
            self._skipped[tp] = offset

    def restored(self, tp: TP) -> int | None:
        """``tp`` is restored; returns the offset to seek to (``None``: nothing was skipped)."""
        self.restoring.discard(tp)
        return self._skipped.pop(tp, None)

    def active(self) -> list[TP]:
        """Assigned partitions that are not restoring, sorted."""
        return sorted(tp for tp in self.assigned if tp not in self.restoring)

"""The event-time skew guard: a record dated too far ahead is dead-lettered before it can move stream time.

One event dated years ahead would raise its partition's stream time, after which every later record
there is late and the windowed rules go silent for that partition. The guard refuses, before any
state changes, a record whose event time leads the wall clock by more than ``max_wall_lead_ms``, or
the stream time of its partition's stores by more than ``max_stream_lead_ms`` (either may be off).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from topology.state.keys import NO_TIME
from topology.state.window import WindowStore


class _Slot(Protocol):
    @property
    def store(self) -> WindowStore: ...


class EventTimeSkew(ValueError):
    """An event time too far ahead (the record is dead-lettered with ``reason``)."""

    reason = "event-time-skew"


@dataclass(frozen=True)
class EventTimeGuard:
    max_wall_lead_ms: int | None = None  # over the wall clock (None: not checked)
    max_stream_lead_ms: int | None = None  # over the partition's stream time (None: not checked)
    clock: Callable[[], float] = field(default=time.time, compare=False)  # seconds since the epoch

    def check_record(self, event_time: object, slots: Iterable[_Slot], partition: int) -> None:
        """``check`` a source record against the stream time of its stage's stores (``slots``) in its
        partition; an event time that is not a timestamp is left to the caller to refuse."""
        if not isinstance(event_time, int):
            return
        st = NO_TIME
        if self.max_stream_lead_ms is not None:
            st = max((s.store.stream_time(partition) for s in slots), default=NO_TIME)
        self.check(event_time, st)

    def check(self, event_time_ms: int, stream_time_ms: int = NO_TIME) -> None:
        """Raise ``EventTimeSkew`` when ``event_time_ms`` leads by more than allowed."""
        if self.max_wall_lead_ms is not None:
            lead = event_time_ms - int(self.clock() * 1000)
            if lead > self.max_wall_lead_ms:
                raise EventTimeSkew(
                    f"event time {_iso(event_time_ms)} is {_span(lead)} ahead of the wall clock "
                    f"(at most {_span(self.max_wall_lead_ms)})"
                )
        if self.max_stream_lead_ms is not None and stream_time_ms != NO_TIME:
            lead = event_time_ms - stream_time_ms
            if lead > self.max_stream_lead_ms:
                raise EventTimeSkew(
                    f"event time {_iso(event_time_ms)} is {_span(lead)} ahead of its partition's stream time "
                    f"{_iso(stream_time_ms)} (at most {_span(self.max_stream_lead_ms)})"
                )


def _iso(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"


def _span(ms: int) -> str:
    s = ms / 1000
    if s < 120:
        return f"{s:g} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172_800:
        return f"{s / 3600:.0f} h"
    return f"{s / 86400:.0f} days"

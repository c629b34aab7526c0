"""Values decoded ahead of processing, for the runtime's event-time order (``Processor.event_time``).

The runtime asks for the event time of the record at the head of each partition it merges; the
decoded value is kept until ``process`` asks for the same bytes, so each value is decoded once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

_HELD_MAX = 4_096  # values held at most (one per merged partition is the usual); beyond it, start again


class Lookahead:
    """Decodes values ahead for their event time and hands each decoded value out once."""

    def __init__(
        self,
        decode: Callable[[bytes | None], Mapping[str, Any]],
        decode_errors: tuple[type[Exception], ...],
        time: Callable[[Mapping[str, Any]], Any],
    ) -> None:
        self._decode = decode
        self._errors: tuple[type[Exception], ...] = (*decode_errors, KeyError, TypeError, ValueError, OverflowError)
        self._time = time  # the topology's time field, as epoch ms
        self._held: dict[bytes, Mapping[str, Any]] = {}

    def event_time(self, value: bytes | None) -> int | None:
        """The value's event time in epoch ms (``None``: undecodable, or no timestamp there)."""
        if value is None:
            return None
        try:
            record = self._decode(value)
            t = self._time(record)
        except self._errors:
            return None
        if len(self._held) >= _HELD_MAX:
            self._held.clear()
        self._held[value] = record
        return t if isinstance(t, int) else None

    def decode(self, value: bytes | None) -> Mapping[str, Any]:
        """The decoded ``value``: the one decoded ahead if there is one, else decoded now."""
        if self._held and value is not None:
            record = self._held.pop(value, None)
            if record is not None:
                return record
        return self._decode(value)

    def clear(self) -> None:
        self._held.clear()

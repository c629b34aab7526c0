"""Bounded per-key state: what a key's windows keep is bounded by what its aggregate's comparison
needs, never by how many events fall in a window; and so is each changelog document.

Caps (``Bounds.of``; they are part of the store's ``state_id``, so a threshold change beyond the
cap starts fresh state, a change within it keeps the state):

- **count** with threshold T: a window value is reported as ``min(count, cap)`` with
  ``cap = max(64, next power of two >= floor(T) + 1) > T``, so every comparison (>=, >, <=, <, ==,
  !=) with T decides as the exact count would. The value (evidence) is exact below the cap and
  saturates at it.
- **distinct_count**: the same cap on the number of distinct values; per value only its latest
  time is needed. A value whose JSON text is longer than ``MAX_TEXT_BYTES`` is kept as a 128-bit
  BLAKE2b digest (an approximation: two different long values of one key collide with probability
  about n**2 / 2**129 for n values).
- **sum** with threshold S, non-negative amounts: once the newest ``EXACT`` (64) or more events of a
  window already sum to more than ``sum_cap`` (the next power of two >= S, at least 1), older ones
  can never change a comparison with S again: they are dropped, and the value reported is the sum
  of what is kept (exact while the window sum is at most ``sum_cap``, a lower bound above it).
  A part that is still long (tiny amounts, or negative ones, which are never dropped) has its events
  older than the newest ``EXACT`` merged into time buckets of ``bucket_ms`` = (size + grace) / 64:
  an approximation; a bucket counts while its newest event is in the window, so a window sum may
  include events up to one bucket width older than the window's old edge.
- tumbling/hopping windows: at most (size + grace) / advance + 1 windows per key; their distinct
  sets saturate at the cap.
- transaction ids (``related``): kept for the kept events only (``MAX_TEXT_BYTES`` each, longer
  ones as digests); the processor names at most the most recent ``RELATED_IDS`` of a window.

Late records (sliding windows). A record at t is aggregated when t >= close = stream time - grace,
and its window is (t - size, t]; close never goes down. A key's events are split at close: events
before close (the *settled* part) can only be seen by windows whose end is at or after close, so
for every such window the settled events it sees are the newest settled ones: the reductions
above are exact there. Events at or after close (the *grace* part, where late records still
land) are kept as they are up to 2 * ``cap`` (sums: 2 * ``EXACT``) events; beyond that its oldest
``cap`` (``EXACT``) events stay as they are and the rest is reduced the same way, which is exact
for every window that ends at or after the key's newest event (in-order records) and for late
records among the oldest kept ones, but may undercount the window of a record that arrives out of
order later than those while more than 2 * ``cap`` events of its key lie in the grace period: the
only case where a count or distinct count decision can differ from keeping everything
(``WindowStore.inexact`` counts such reductions, and bucket merges). The record being added is
always decided before any reduction. Reductions run when a key holds more than ``high`` events
(4 * ``cap``; sums: 6 * ``EXACT``) and leave at most three quarters of that (sums of tiny amounts,
bucketed: at most ~85%; typically half).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from hashlib import blake2b
from typing import Any

from topology.plan.model import Aggregate
from topology.serde.documents import dumps

EXACT = 64  # events kept exactly at least (sums), and the smallest count cap
MAX_TEXT_BYTES = 128  # JSON text of a kept distinct value or transaction id, quotes included
MAX_NUMBER_CHARS = 64  # text of an amount a sum keeps (longer ones are bad input)
RELATED_IDS = 50  # transaction ids an alert names per related aggregate
BUCKETS = 64  # sums: time buckets per window size + grace
_TIME_BYTES = 21  # an event time in JSON, and its comma
_NUMBER_BYTES = MAX_NUMBER_CHARS + 8  # a kept sum (bucket sums round to 28 digits) as JSON text

Entry = tuple[int, Any, str]  # (event time, kept value or None, transaction id or "")


def bounded_text(value: Any) -> str:
    """``value`` as text, or a fixed-size digest when its JSON text exceeds ``MAX_TEXT_BYTES``."""
    s = value if isinstance(value, str) else str(value)
    if len(s) <= MAX_TEXT_BYTES - 2 and s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return s
    if len(dumps(s)) <= MAX_TEXT_BYTES:
        return s
    return "\x00" + blake2b(s.encode(), digest_size=16).hexdigest()


def check_number(value: Any) -> None:
    """Raise ``ValueError`` for an amount whose text is too long to keep (bounded documents)."""
    if len(str(value)) > MAX_NUMBER_CHARS:
        raise ValueError(f"amount {str(value)[:20]}... is longer than {MAX_NUMBER_CHARS} characters")


def _next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


@dataclass(frozen=True, slots=True)
class Bounds:
    """What one store keeps per key (see the module docstring)."""

    function: str
    kind: str
    cap: int  # count/distinct values saturate here (> threshold)
    sum_cap: Decimal  # sums: a kept window sum above this decides as the true one
    high: int  # sliding: events per key that trigger a reduction
    bucket_ms: int
    windows: int  # tumbling/hopping: windows per key at most
    size_ms: int
    related: bool

    @classmethod
    def of(cls, aggregate: Aggregate) -> Bounds:
        a, w = aggregate, aggregate.window
        t = a.threshold
        cap = max(EXACT, _next_pow2(max(math.floor(t), 0) + 1))
        sum_cap = Decimal(_next_pow2(max(math.ceil(t), 1)))
        high = 4 * cap if a.function != "sum" else 6 * EXACT
        advance = w.advance_ms or w.size_ms
        windows = -(-(w.size_ms + w.grace_ms) // advance) + 1
        bucket = max(1, -(-(w.size_ms + w.grace_ms) // BUCKETS))
        return cls(a.function, w.kind, cap, sum_cap, high, bucket, windows, w.size_ms, a.related)

    def tag(self) -> str:
        """What of the caps shapes the kept state (for ``state_id``)."""
        if self.function == "sum":
            return f"|sum<{self.sum_cap}" if self.kind == "sliding" else ""
        if self.function == "count" and self.kind != "sliding":
            return ""
        return f"|cap{self.cap}"

    # ------------------------------------------------------------ sliding reductions

    def reduce(self, entries: list[Entry], close: int) -> tuple[list[Entry], bool]:
        """``entries`` (sorted by time) reduced; True if the reduction may be inexact for late records."""
        b = bisect_left([e[0] for e in entries], close)
        settled, grace = entries[:b], entries[b:]
        settled, merged = self._reduce_part(settled)
        keep = self.cap if self.function != "sum" else EXACT
        inexact = merged
        if len(grace) > 2 * keep:
            rest, merged = self._reduce_part(grace[keep:])
            grace = grace[:keep] + rest
            inexact = True
        return settled + grace, inexact

    def _reduce_part(self, part: list[Entry]) -> tuple[list[Entry], bool]:
        """The events of ``part`` every window that sees all of its newest events needs; True if merged."""
        if self.function == "count":
            return part[-self.cap :], False
        if self.function == "distinct_count":
            seen: set[Any] = set()
            out: list[Entry] = []
            for e in reversed(part):
                if e[1] not in seen:
                    seen.add(e[1])
                    out.append(e)
                    if len(out) == self.cap:
                        break
            out.reverse()
            return out, False
        return self._reduce_sum(part)

    def _reduce_sum(self, part: list[Entry]) -> tuple[list[Entry], bool]:
        if all(e[1] >= 0 for e in part):
            acc = Decimal(0)
            for i in range(len(part) - 1, -1, -1):
                acc += part[i][1]
                if len(part) - i >= EXACT and acc > self.sum_cap:
                    part = part[i:]
                    break
        if len(part) <= 2 * EXACT:
            return part, False
        return self._merge(part[:-EXACT]) + part[-EXACT:], True

    def _merge(self, part: Sequence[Entry]) -> list[Entry]:
        """Events merged per time bucket: (newest time, sum, newest id)."""
        out: list[Entry] = []
        width = self.bucket_ms
        for t, v, ident in part:
            if out and out[-1][0] // width == t // width:
                out[-1] = (t, out[-1][1] + v, ident)
            else:
                out.append((t, v, ident))
        return out

    # ------------------------------------------------------------ sizes

    def entry_bytes(self) -> int:
        """The largest JSON entry a key of this store can have in a changelog document."""
        value = {"count": 0, "sum": _NUMBER_BYTES + 1, "distinct_count": MAX_TEXT_BYTES + 1}[self.function]
        ids = MAX_TEXT_BYTES + 1 if self.related else 0
        if self.kind == "sliding":
            return 32 + self.high * (_TIME_BYTES + value + ids)
        per_window = (
            8
            + 2 * _TIME_BYTES
            + (
                _NUMBER_BYTES
                if self.function == "sum"
                else self.cap * value
                if self.function == "distinct_count"
                else 0
            )
        )
        return 32 + self.windows * per_window

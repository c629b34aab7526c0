"""How many records to take into the open transaction at once, so that it commits near its interval.

A transaction is committed once ``commit_interval_ms`` has passed since it began, checked after each
consumed batch is processed. With a costly topology a full batch takes longer than the interval
(fraud.yaml on a loaded 2-core machine: 2,000 records in about 260 ms against a 100 ms interval), so
every transaction ran to two or three intervals, and the records at its start waited for all of it
before they were visible. ``Pace`` keeps a moving average of the processing cost per record and
sizes the next batch to the time the open transaction has left, never below ``floor`` records (so a
transaction always makes progress). A cheap topology keeps full batches.
"""

from __future__ import annotations


class Pace:
    """The size of the next consumed batch, from the measured cost per record."""

    def __init__(self, floor: int = 50, weight: float = 0.2) -> None:
        self.floor = floor
        self._weight = weight
        self.cost_s = 0.0  # moving average of processing seconds per record (0: not measured yet)

    def observe(self, records: int, seconds: float) -> None:
        """``records`` were processed in ``seconds`` (batches smaller than ``floor`` are not measured)."""
        if records < self.floor or seconds <= 0:
            return
        cost = seconds / records
        self.cost_s = cost if self.cost_s == 0 else self.cost_s + self._weight * (cost - self.cost_s)

    def batch(self, want: int, remaining_s: float) -> int:
        """At most ``want`` records, as many as fit in the ``remaining_s`` the transaction has left."""
        if self.cost_s == 0:
            return want
        fits = int(max(remaining_s, 0.0) / self.cost_s)
        return min(want, max(fits, self.floor))

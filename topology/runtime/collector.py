"""Python's cyclic garbage collector while the loop runs: fewer full collections of a large state.

Window state is many small lists and objects that live for minutes. With Python's default young
threshold (700 allocations), their creation triggers a full collection, a walk over every live object
(the whole state), every few thousand records. Measured 2026-12-04, fraud.yaml in process over 60,000
generated transactions (docs/benchmarks.md, run 8): 12 full collections took 1.0 s of 3.2 s;
at a young threshold of 10,000, none ran, and the run took 40 µs per record instead of 60.

Young collections still cost: a consumed batch allocates and frees tens of thousands of containers, and
at 10,000 one runs every thousand records or so. Measured 2026-12-07 (compiled engine, fraud.yaml in process,
200,000 transactions, time in the collector taken from ``gc.callbacks``): at 10,000, 199 collections,
3.3-3.7 µs per record of 27.8-29.6; at 100,000, one collection, 0.1 µs of 23.8-24.2. The loop holds few
reference cycles, so collecting less often costs little memory: at most 100,000 young containers wait.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

DEFAULT_YOUNG_THRESHOLD = 100_000


@contextmanager
def young_threshold(threshold: int) -> Iterator[None]:
    """Run the block with the collector's young-generation threshold at ``threshold`` (0: unchanged),
    then put the thresholds back as they were."""
    before = gc.get_threshold()
    if threshold > 0:
        gc.set_threshold(threshold, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)

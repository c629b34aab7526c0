"""The in-memory profile loop: every record decided once, repartitioned ones fed back, changelog flushed."""

from __future__ import annotations

import cProfile
import pstats

import pytest

from services.bench.detector_profile import STAGES, generated, processor_for, run_loop, stage_shares


@pytest.mark.python_sources  # cProfile sees no compiled function
def test_run_loop_decides_every_record_once_through_both_stages() -> None:
    registry, records = generated(600, partitions=3)
    processor = processor_for("fraud", registry, partitions=3)
    profiler = cProfile.Profile()
    profiler.enable()
    produced = run_loop(processor, records, batch=200, partitions=3)
    profiler.disable()
    assert produced["profile.legit"] + produced["profile.fraud"] == 600
    assert produced["profile.alerts"] == produced["profile.fraud"]
    assert sum(n for t, n in produced.items() if t.endswith("-changelog")) > 0
    stats = pstats.Stats(profiler)
    shares = dict(stage_shares(stats, stats.total_tt))  # type: ignore[attr-defined]
    assert list(shares) == [label for label, _, _ in STAGES]
    assert shares["repartition forward (JSON headers out)"] > 0 and shares["decode (ProjectionDecoder.decode)"] > 0


def test_the_stateless_row_takes_the_batch_path_and_writes_no_changelog() -> None:
    registry, records = generated(300, partitions=2)
    produced = run_loop(processor_for("stateless", registry, partitions=2), records, batch=100, partitions=2)
    assert produced["profile.legit"] + produced["profile.fraud"] == 300
    assert not [t for t in produced if t.endswith("-changelog")]

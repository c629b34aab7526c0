"""Topics at start: missing sinks and changelogs created, partition counts of changelogs checked (fake clients)."""

from __future__ import annotations

import pytest

from tests.unit.runtime.support import Counter, cluster, runtime
from topology.runtime import FatalRuntimeError


def test_a_missing_changelog_is_created_compacted_with_its_input_topics_partition_count() -> None:
    c = cluster(3)
    rt = runtime(c, Counter())
    rt.open()
    assert c.partitions["counts-changelog"] == 3 and c.partitions["out"] == 3
    rt.close()


@pytest.mark.parametrize("changelog_partitions", [2, 4])
def test_a_changelog_whose_partition_count_differs_from_its_inputs_stops_the_runtime(
    changelog_partitions: int,
) -> None:
    c = cluster(3)  # the input topic grew (or shrank) after the changelog was made
    c.create("counts-changelog", changelog_partitions)
    rt = runtime(c, Counter())
    with pytest.raises(FatalRuntimeError) as exc:
        rt.open()
    text = str(exc.value)
    assert f"in has 3 partitions but its changelog counts-changelog has {changelog_partitions}" in text
    assert "start the application anew" in text
    assert "out" not in c.partitions  # nothing was created

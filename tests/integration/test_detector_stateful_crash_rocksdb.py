"""The stateful crash test again, with the window stores in RocksDB (``FRAUDSTREAM_DETECTOR_STORE=rocksdb``).

Every restart after a SIGKILL finds the killed instance's RocksDB files (committed state only) and
its last checkpoint, keeps what the checkpoint vouches for and restores the changelog's tail:
decisions must still equal those of the uninterrupted run (which also runs on RocksDB).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import Endpoints
from tests.integration import test_detector_stateful_crash as crash

pytestmark = pytest.mark.integration


def test_rocksdb_stores_decide_the_same_after_sigkills_as_an_uninterrupted_run(
    stack: Endpoints, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("FRAUDSTREAM_DETECTOR_STORE", "rocksdb")
    monkeypatch.setenv("FRAUDSTREAM_DETECTOR_STATE_DIR", str(state))
    monkeypatch.setenv("FRAUDSTREAM_DETECTOR_STORE_CACHE_KEYS", "200")  # smaller than the key space: reads hit RocksDB
    # Static membership (as a StatefulSet pod keeps its name and its disk): each restart takes the dead
    # instance's place at once, without waiting out its session; the in-memory variant keeps dynamic membership.
    monkeypatch.setenv("FRAUDSTREAM_DETECTOR_STATIC_MEMBERSHIP", "true")
    crash.check_crashes(stack, unique, tmp_path, kills=6, every_restart_replays=False)
    logs = [p.read_text(errors="replace") for p in tmp_path.glob("*.log")]
    # Some restart restored from a local checkpoint: its replay of a changelog partition starts past 0.
    assert any(re.search(r"-changelog\[\d+\] [1-9]\d*\.\.", text) for text in logs), "no checkpoint was used"
    assert len(logs) > 2 and all("rocksdb state stores" in text for text in logs)
    # revoked partitions keep their files, and the clean stops (SIGTERM) checkpointed them: a restart
    # restores from the checkpoint plus the changelog tail
    assert any(state.rglob("CURRENT")) and any(state.rglob("*.checkpoint"))

"""The `fraudstream` entry point: bad settings are one clear line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from services.cli import describe_settings_error
from services.config import DetectorSettings


def test_settings_error_names_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_DETECTOR_COMMIT_INTERVAL_MS", "soon")
    with pytest.raises(ValidationError) as err:
        DetectorSettings()
    text = describe_settings_error(err.value)
    assert text.startswith("FRAUDSTREAM_DETECTOR_COMMIT_INTERVAL_MS='soon': ")
    assert "integer" in text


def test_cli_reports_a_bad_setting_without_traceback() -> None:
    env = {**os.environ, "FRAUDSTREAM_GENERATOR_RATE": "-3"}
    proc = subprocess.run([sys.executable, "-m", "services", "generate", "--count", "1"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "configuration error: FRAUDSTREAM_GENERATOR_RATE='-3'" in proc.stderr
    assert "Traceback" not in proc.stderr

"""`fraudstream rules put | list | delete` on a real broker and registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Endpoints

pytestmark = pytest.mark.integration


def test_put_list_delete_and_a_bad_rule_is_refused(stack: Endpoints, unique: str, tmp_path: Path) -> None:
    topic = f"rules-cli-{unique}"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers, "SCHEMA_REGISTRY_URL": stack.registry_url}

    def rules(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "services", "rules", *args, "--topic", topic], env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    good = tmp_path / "big.yaml"
    good.write_text("id: big-spender\nversion: 3\ndescription: test rule\nwhen: amount >= 2500\n")
    put = rules("put", "--file", str(good))
    assert put.returncode == 0, put.stdout + put.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text("id: broken\nversion: 1\nwhen: amout >= 1\n")
    refused = rules("put", "--file", str(bad))
    assert refused.returncode != 0
    assert "amout" in refused.stdout + refused.stderr and "Traceback" not in refused.stderr

    listed = rules("list")
    assert listed.returncode == 0, listed.stderr
    assert "big-spender@3" in listed.stdout and "broken" not in listed.stdout

    deleted = rules("delete", "big-spender")
    assert deleted.returncode == 0, deleted.stderr
    assert "big-spender" not in rules("list").stdout

"""scripts/device_check.sh --cpu-dry-run: every step of the one-command GPU check runs at toy sizes on the CPU, so
that what breaks it is caught without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["env", "parity", "bf16", "inference", "train", "max_batch"]

pytestmark = pytest.mark.slow  # six steps in subprocesses: a few minutes


def test_cpu_dry_run_passes_every_step(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    result = subprocess.run(
        ["bash", "scripts/device_check.sh", "--cpu-dry-run"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    log = (tmp_path / "device_check.log").read_text() if (tmp_path / "device_check.log").exists() else ""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:] + log[-4000:]
    table = (tmp_path / "device_check.md").read_text()
    assert table in result.stdout
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row[0].removeprefix("| ") for row in rows] == STEPS
    assert all(row[2] == "ok" for row in rows), table
    assert "jax 0." in rows[0][4] and "gliner 0.2.29" in rows[0][4]
    assert "same entities True" in rows[3][4]

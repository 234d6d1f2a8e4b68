"""scripts/device_check.sh --cpu-dry-run: the one-command GPU check's driver at toy sizes on the CPU (the table, the
step processes, the deadline). Here two of its six steps run (env and max_batch, which trains under two remat
policies); all six take about ten minutes of this machine's two cores, so run `scripts/device_check.sh --cpu-dry-run`
by hand before a GPU session (the parity and bf16 steps select tests that this suite runs anyway)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS = ["env", "max_batch"]

pytestmark = pytest.mark.slow  # steps in subprocesses


def test_cpu_dry_run_steps_pass(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    result = subprocess.run(
        ["bash", "scripts/device_check.sh", "--cpu-dry-run", "--only", ",".join(STEPS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    log = (tmp_path / "device_check.log").read_text() if (tmp_path / "device_check.log").exists() else ""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:] + log[-4000:]
    table = (tmp_path / "device_check.md").read_text()
    assert table in result.stdout
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row[0].removeprefix("| ") for row in rows] == STEPS
    assert all(row[2] == "ok" for row in rows), table
    assert "jax 0." in rows[0][4] and "gliner 0.2.29" in rows[0][4]

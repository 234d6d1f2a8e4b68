"""Run something in a fresh Python interpreter: a function of a test file on several fake CPU devices (the device
count is read once, when jax starts, so it takes a new process), the `gliner-jax` CLI, a script. One environment for
all of them: CPU jax, the hub offline, an optional persistent compilation cache."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "gliner-jax"
# Tests compile with XLA's backend optimisations off and XLA:CPU's loop emitters instead of its fusion emitters
# (tests/conftest.py sets this for the test processes, `fresh_env` for their children): the programs give the same
# numbers within every tolerance checked, and compiling, most of this suite's time on a CPU, takes about a third less
# for the first flag and about half again for the second (the tiny config's train step: 16 -> 8 CPU-s). What users run
# keeps XLA's defaults.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def fresh_env(devices: int = 1, cache: Path | None = None, **extra: str) -> dict[str, str]:
    """os.environ for a child: CPU jax with `devices` fake devices and the tests' XLA flags, the hub offline, the
    compilation cache in `cache` (every program cached), then `extra`."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}"
    if cache is not None:
        env |= {"JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env | extra


def function_command(path: str | Path, function: str, *args: object) -> list[str]:
    """argv of a Python that runs the file at `path` (its module-level code, in that interpreter) and calls its
    `function(*args)`; `args` must survive repr()."""
    code = f"import runpy; runpy.run_path({str(path)!r})[{function!r}](*{args!r})"
    return [sys.executable, "-c", code]


def start(command: Sequence[str], env: dict[str, str], **options) -> subprocess.Popen:
    """Start `command` in the repository root; its stderr is kept (for `finish`), its stdout discarded."""
    options = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True} | options
    return subprocess.Popen(list(command), cwd=ROOT, env=env, **options)


def finish(processes: Iterable[subprocess.Popen], timeout: float = 600, tail: int = 4000) -> list[str]:
    """Wait for each process; fail with the end of its stderr unless it exited 0. Their stderr, in order."""
    processes = list(processes)
    try:
        errors = [process.communicate(timeout=timeout)[1] or "" for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for process, error in zip(processes, errors, strict=True):
        assert process.returncode == 0, f"{process.args[:3]} exited {process.returncode}: {error[-tail:]}"
    return errors


def run(command: Sequence[str], env: dict[str, str], timeout: float = 600, tail: int = 4000):
    """Run `command` to the end in the repository root; fail with the end of its stderr unless it exited 0. The
    CompletedProcess (stdout and stderr as text)."""
    result = subprocess.run(list(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{list(command)[:3]} exited {result.returncode}: {result.stderr[-tail:]}"
    return result


def free_port() -> int:
    """A free TCP port on this host (for a jax.distributed coordinator)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

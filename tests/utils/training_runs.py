"""Training runs of `gliner-jax train` in subprocesses for the end-to-end tests: commands, their environment (a
compilation cache shared by the runs of a worker), and what the runs log and checkpoint."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.utils import fresh
from tests.utils.fresh import CLI, ROOT

# Short runs of the tiny config: no dev evaluation, a checkpoint every 3 steps, every step logged. The schedule
# length is pinned so that runs of different lengths compile the same program (the compilation cache serves them).
SHORT = (
    "data.dev=null",
    "trainer.export=false",
    "trainer.log_every=1",
    "trainer.save_every=3",
    "trainer.keep_checkpoints=10",
    "optimizer.num_steps=18",
    "optimizer.encoder_lr=1e-4",  # moderate steps, so that Adam does not blow float rounding up to 1e-5
    "optimizer.others_lr=1e-4",
)

# Packed rows (data.packing) of at most 64 tokens: 2-3 of the tiny sentences share a row.
PACKED = ("data.packing=true", "data.row_length=64")
NO_DROPOUT = ("model.gliner.dropout=0",)  # the tiny encoder has none either: random draws follow array shapes


def train_command(
    output_dir: Path, *overrides: str, extra: tuple[str, ...] = (), config: str = "tiny.yaml"
) -> list[str]:
    return [
        str(CLI),
        "train",
        "--config",
        str(ROOT / "configs" / config),
        *extra,
        f"trainer.output_dir={output_dir}",
        *overrides,
    ]


def environment(cache: Path, devices: int = 1) -> dict[str, str]:
    return fresh.fresh_env(devices, cache)


def run_training(
    output_dir: Path, cache: Path, *overrides: str, devices: int = 1, config: str = "tiny.yaml"
) -> subprocess.CompletedProcess:
    return fresh.run(train_command(output_dir, *overrides, config=config), environment(cache, devices))


def logged(output_dir: Path) -> dict[int, dict]:
    """The metrics of each step; a step logged twice (before a kill and after the restart) keeps the last."""
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    return {record["step"]: record for record in map(json.loads, lines)}


def logged_steps(output_dir: Path) -> list[int]:
    """The step of every line of metrics.jsonl, in order (repeats included)."""
    return [json.loads(line)["step"] for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def tensorboard_steps(output_dir: Path, tag: str = "train/loss") -> list[int]:
    """The steps of `tag` that TensorBoard shows: the event files in the order written, a SessionLog START
    (tensorboardX's `purge_step`) hiding the events of the earlier files at or after its step, as TensorBoard does."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    steps: list[int] = []
    for path in sorted((output_dir / "tensorboard").glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):  # TFRecords: length (8 bytes), its CRC (4), the event, its CRC (4)
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 16 + length
            if event.session_log.status == SessionLog.START:
                steps = [step for step in steps if step < event.step]
            steps += [event.step for value in event.summary.value if value.tag == tag]
    return steps


def resumed_from(stderr: str) -> list[int]:
    return [int(line.split()[-1]) for line in stderr.splitlines() if "resumed from step" in line]


def assert_same_losses(records: dict[int, dict], expected: dict[int, dict], steps: range, tolerance: float) -> None:
    for step in steps:
        assert records[step]["loss"] == pytest.approx(expected[step]["loss"], rel=tolerance, abs=tolerance), step
        assert records[step]["lr/others"] == pytest.approx(expected[step]["lr/others"], rel=1e-6), step


def restore_state(checkpoint: Path) -> dict:
    """The train state of a checkpoint (params, opt_state, step, rng) as NumPy arrays, whatever mesh wrote it."""
    import jax
    import orbax.checkpoint as ocp

    path = checkpoint.absolute() / "state"
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.metadata(path).item_metadata.tree
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))


def restore_params(checkpoint: Path) -> dict:
    """The parameters of a training checkpoint as NumPy arrays, whatever mesh wrote them."""
    return restore_state(checkpoint)["params"]

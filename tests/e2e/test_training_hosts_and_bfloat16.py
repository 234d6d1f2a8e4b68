"""End-to-end training runs, in subprocesses: a bi-encoder on 8 devices and its export, two processes
(jax.distributed) that train, checkpoint and restore, one example per row and packed, and bfloat16 parameters with
float32 master weights (their loss curve, an exact resume, the export). The single-host runs of the tiny config:
test_training_run.py."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.utils import fresh
from tests.utils.training_runs import (
    PACKED,
    SHORT,
    assert_same_losses,
    environment,
    logged,
    logged_steps,
    restore_state,
    resumed_from,
    run_training,
    train_command,
)


def test_bi_encoder_sharded_run_equals_a_1_device_run_and_exports_for_gliner(tmp_path, compilation_cache):
    """configs/tiny_bi.yaml: the label table split over 8 devices (data 2, fsdp 4) trains as on one device; the label
    encoder's own learning rate is logged; the export loads in gliner strictly and finds our entities."""
    import torch
    from gliner import GLiNER as TorchGLiNER
    from safetensors.numpy import load_file

    from gliner_jax import GLiNER
    from gliner_jax.testing.builders import quantile_thresholds

    steps = ("trainer.num_steps=4", "optimizer.num_steps=4")
    run_training(tmp_path / "single", compilation_cache, *SHORT, *steps, "trainer.export=true", config="tiny_bi.yaml")
    result = run_training(
        tmp_path / "sharded",
        compilation_cache,
        *SHORT,
        *steps,
        "mesh.data=2",
        "mesh.fsdp=4",
        devices=8,
        config="tiny_bi.yaml",
    )
    assert "8 devices" in result.stderr
    single = logged(tmp_path / "single")
    assert_same_losses(logged(tmp_path / "sharded"), single, range(1, 5), 1e-5)
    assert single[3]["lr/labels_encoder"] == pytest.approx(10 * single[3]["lr/encoder"], rel=1e-6)  # 1e-3 vs 1e-4

    final = tmp_path / "single" / "final"
    reference = TorchGLiNER.from_pretrained(str(final), local_files_only=True, strict=True)
    assert type(reference).__name__ == "BiEncoderSpanGLiNER"
    assert set(load_file(final / "model.safetensors")) == set(reference.model.state_dict())
    model = GLiNER.from_pretrained(final)
    texts = ["Viktor Oyelaran won a gold medal at the World Cup .", "The Winter Games will take place in Egypt ."]
    labels = ["person", "event", "location"]
    threshold = quantile_thresholds(reference, texts, labels, (0.9,))[0]
    with torch.no_grad():
        theirs = [reference.predict_entities(text, labels, threshold=threshold) for text in texts]
    ours = model.inference(texts, labels, threshold=threshold)
    assert sum(map(len, theirs)) > 0
    for mine, ref in zip(ours, theirs, strict=True):
        assert [(e["start"], e["end"], e["label"]) for e in mine] == [(e["start"], e["end"], e["label"]) for e in ref]
        np.testing.assert_allclose([e["score"] for e in mine], [e["score"] for e in ref], atol=1e-5)


def start_two_processes(output_dir: Path, cache: Path, *overrides: str) -> list[subprocess.Popen]:
    """Both processes of a 2-host run (4 CPU devices each, one global mesh of 8)."""
    address = f"127.0.0.1:{fresh.free_port()}"
    return [
        fresh.start(
            train_command(
                output_dir,
                *overrides,
                extra=("--coordinator-address", address, "--num-processes", "2", "--process-id", str(index)),
            ),
            # One compilation cache per process, as each host of a pod has its own disk.
            environment(cache / f"process-{index}", devices=4),
        )
        for index in range(2)
    ]


def run_two_processes(output_dir: Path, cache: Path, *overrides: str) -> list[str]:
    """A 2-host run to its end; returns the processes' stderr."""
    return fresh.finish(start_two_processes(output_dir, cache, *overrides))


def test_two_processes_train_checkpoint_and_restore(tmp_path, compilation_cache):
    """Packed: each host packs its 8 examples into rows for its 4 data shards; hosts agree on the shapes. Resumed,
    SIGINT (Ctrl-C) to the second process alone after step 4: both save the same step and exit with the same line
    (the first as if terminated), no traceback. (Rows of one example are the same global arrays, assembled from
    each host's slice of the batch: tests/unit/test_data_pipeline.py checks the slices.)"""
    mesh = ("mesh.data=2", "mesh.fsdp=4", *PACKED, "trainer.global_batch_size=16")
    run_two_processes(tmp_path, compilation_cache, *SHORT, *mesh, "trainer.num_steps=3")
    assert (tmp_path / "checkpoints" / "3").is_dir()
    processes = start_two_processes(tmp_path, compilation_cache, *SHORT, *mesh, "trainer.num_steps=12")
    metrics, deadline = tmp_path / "metrics.jsonl", time.monotonic() + 600
    while len(metrics.read_text().splitlines()) < 4:
        assert all(p.poll() is None for p in processes) and time.monotonic() < deadline, "ended before the signal"
        time.sleep(0.02)
    processes[1].send_signal(signal.SIGINT)
    errors = [process.communicate(timeout=600)[1] for process in processes]
    assert [process.returncode for process in processes] == [128 + signal.SIGTERM, 128 + signal.SIGINT], [
        error[-2000:] for error in errors
    ]
    assert not any("Traceback" in error for error in errors)
    saved = max(logged(tmp_path))
    assert 4 <= saved < 12 and (tmp_path / "checkpoints" / str(saved)).is_dir()
    assert all(
        error.splitlines()[-1] == f"interrupted at step {saved}; saved; rerun the same command to resume"
        for error in errors
    )
    assert all(resumed_from(error) == [3] for error in errors)
    # Each process turned its compilation cache off (cached XLA:CPU executables deadlock across processes).
    assert all("persistent compilation cache off" in error for error in errors)
    records = logged(tmp_path)
    assert sorted(records) == list(range(1, saved + 1))
    assert all(np.isfinite(record["loss"]) for record in records.values())


# 60 steps of the tiny config at its own learning rate (the loss falls from ~160 to ~22 over them), every step logged.
CURVE = ("data.dev=null", "trainer.log_every=1", "trainer.num_steps=60")
# The bfloat16 run: checkpoints at steps 30 and 60 (the resume test restarts it from 30), exported.
BFLOAT16 = ("model.param_dtype=bfloat16", "trainer.save_every=30", "trainer.export=true")


@pytest.fixture(scope="module")
def loss_curves(tmp_path_factory, compilation_cache) -> dict[str, Path]:
    """The same 60-step run with float32 and with bfloat16 parameters."""
    runs = {"float32": tmp_path_factory.mktemp("float32"), "bfloat16": tmp_path_factory.mktemp("bfloat16")}
    float32 = ("model.param_dtype=float32", "trainer.save_every=1000", "trainer.export=false")
    run_training(runs["float32"], compilation_cache, *CURVE, *float32)
    run_training(runs["bfloat16"], compilation_cache, *CURVE, *BFLOAT16)
    return runs


def test_bfloat16_parameters_follow_the_float32_loss_curve(loss_curves):
    """bfloat16 parameters with float32 master weights: every step's loss within 10% of the float32 run's (measured:
    at most 6%, late, where batch losses are small and noisy), each 10-step mean within 3% (measured: 1.2%), and the
    run learns as much."""
    ours, reference = logged(loss_curves["bfloat16"]), logged(loss_curves["float32"])
    assert sorted(ours) == sorted(reference) == list(range(1, 61))
    for step in range(1, 61):
        assert ours[step]["loss"] == pytest.approx(reference[step]["loss"], rel=0.1), step
    for start in range(1, 61, 10):
        means = [np.mean([run[step]["loss"] for step in range(start, start + 10)]) for run in (ours, reference)]
        assert means[0] == pytest.approx(means[1], rel=0.03), start
    first, last = (np.mean([ours[step]["loss"] for step in steps]) for steps in (range(1, 11), range(51, 61)))
    assert last < first / 5


def test_bfloat16_run_resumes_exactly_and_exports_its_float32_masters(tmp_path, compilation_cache, loss_curves):
    """The bfloat16 run restarted from its checkpoint of step 30 (the later one removed) logs the uninterrupted run's
    losses; its checkpoint holds bfloat16 parameters and their float32 masters, and the export holds the masters (not
    their rounding)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from gliner_jax import GLiNER
    from gliner_jax.training.optim import parameter_path

    run = tmp_path / "run"
    shutil.copytree(loss_curves["bfloat16"], run)
    shutil.rmtree(run / "checkpoints" / "60")
    resumed = run_training(run, compilation_cache, *CURVE, *BFLOAT16[:-1], "trainer.export=false").stderr
    assert resumed_from(resumed) == [30]
    assert logged_steps(run) == list(range(1, 61))  # metrics.jsonl cut back to step 30, then each step once
    assert_same_losses(logged(run), logged(loss_curves["bfloat16"]), range(31, 61), 1e-6)

    state = restore_state(loss_curves["bfloat16"] / "checkpoints" / "60")

    def by_path(tree: dict) -> dict[str, np.ndarray]:
        leaves = jax.tree_util.tree_leaves_with_path(tree)
        return {parameter_path(path).removesuffix("/value"): np.asarray(leaf) for path, leaf in leaves}

    params, masters = by_path(state["params"]), by_path(state["opt_state"]["master"])
    assert params.keys() == masters.keys()
    exported = GLiNER.from_pretrained(loss_curves["bfloat16"] / "final").model
    exported = by_path(jax.tree.map(np.asarray, nnx.state(exported, nnx.Param).to_pure_dict()))
    assert exported.keys() == masters.keys()
    unrounded = 0
    for key, master in masters.items():
        assert params[key].dtype == jnp.bfloat16 and master.dtype == np.float32, key
        np.testing.assert_array_equal(params[key], master.astype(jnp.bfloat16), err_msg=key)
        np.testing.assert_array_equal(exported[key], master, err_msg=key)
        unrounded += int(np.any(master != master.astype(jnp.bfloat16).astype(np.float32)))
    assert unrounded > len(masters) // 2

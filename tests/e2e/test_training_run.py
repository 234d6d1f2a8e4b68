"""End-to-end training runs of `gliner-jax train` on the shipped tiny config, in subprocesses.

They check what only whole runs show: the tiny config learns its dataset (the CI learning check) and exports a
directory the `gliner` package loads strictly and predicts identically from; a run killed with SIGKILL resumes
with exactly the losses of an uninterrupted run; a half-written checkpoint is never loaded; a sharded run on 8
devices equals a 1-device run; a packed run trains like the unpacked one and resumes; two processes
(jax.distributed) train, checkpoint and restore, one example per row and packed.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
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

pytestmark = pytest.mark.slow  # each test trains in subprocesses: 20-140 s


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("jax-cache")


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


def resumed_from(stderr: str) -> list[int]:
    return [int(line.split()[-1]) for line in stderr.splitlines() if "resumed from step" in line]


def assert_same_losses(records: dict[int, dict], expected: dict[int, dict], steps: range, tolerance: float) -> None:
    for step in steps:
        assert records[step]["loss"] == pytest.approx(expected[step]["loss"], rel=tolerance, abs=tolerance), step
        assert records[step]["lr/others"] == pytest.approx(expected[step]["lr/others"], rel=1e-6), step


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, compilation_cache) -> Path:
    """An 18-step run, the reference for the interrupted and sharded runs."""
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    run_training(output_dir, compilation_cache, *SHORT, "trainer.num_steps=18")
    return output_dir


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, compilation_cache) -> Path:
    """The shipped tiny config, trained in full."""
    output_dir = tmp_path_factory.mktemp("tiny")
    run_training(output_dir, compilation_cache)
    return output_dir


def test_tiny_config_learns_and_exports_for_gliner(tiny_run):
    """The CI learning check: from a random tiny encoder, training-set span F1 > 0.9; the export loads in gliner."""
    import torch
    from gliner import GLiNER as TorchGLiNER

    from gliner_jax import GLiNER
    from gliner_jax.evaluation import evaluate_examples
    from gliner_jax.training.data import read_examples

    final = tiny_run / "final"
    model = GLiNER.from_pretrained(final)
    train, _ = read_examples(ROOT / "data" / "tiny" / "train.jsonl")
    micro, _ = evaluate_examples(model, train)
    assert micro.f1 > 0.9, micro
    assert any((tiny_run / "tensorboard").iterdir())
    records = logged(tiny_run)
    assert records[max(records)]["dev/f1"] > 0.5  # evaluated on the dev file at the end
    assert {"lr/encoder", "lr/others", "tokens_per_second"} <= records[max(records)].keys()

    reference = TorchGLiNER.from_pretrained(str(final), local_files_only=True)
    from safetensors.numpy import load_file

    assert set(load_file(final / "model.safetensors")) == set(reference.model.state_dict())  # a strict load
    texts = [" ".join(example["tokenized_text"]) for example in train[:12]]
    labels = sorted({entity[2] for example in train for entity in example["ner"]})
    ours = model.inference(texts, labels, threshold=0.5)
    with torch.no_grad():
        theirs = [reference.predict_entities(text, labels, threshold=0.5) for text in texts]
    for mine, ref in zip(ours, theirs, strict=True):
        assert [(e["start"], e["end"], e["label"]) for e in mine] == [(e["start"], e["end"], e["label"]) for e in ref]
        np.testing.assert_allclose([e["score"] for e in mine], [e["score"] for e in ref], atol=1e-5)


def test_sigkilled_run_resumes_with_the_losses_of_an_uninterrupted_run(tmp_path, compilation_cache, uninterrupted):
    command = train_command(tmp_path, *SHORT, "trainer.num_steps=18")
    process = fresh.start(command, environment(compilation_cache), stdout=None, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 11):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = max(logged(tmp_path))
    assert killed_at < 18

    resumed = resumed_from(run_training(tmp_path, compilation_cache, *SHORT, "trainer.num_steps=18").stderr)
    assert resumed and resumed[0] <= killed_at and resumed[0] % 3 == 0
    assert sorted(logged(tmp_path)) == list(range(1, 19))
    assert_same_losses(logged(tmp_path), logged(uninterrupted), range(resumed[0] + 1, 19), 1e-6)


def test_a_half_written_checkpoint_is_never_loaded(tmp_path, compilation_cache, uninterrupted):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    checkpoints = run / "checkpoints"
    for step in (15, 18):
        shutil.rmtree(checkpoints / str(step))
    # A save of step 15 cut off mid-way: Orbax writes into a temporary folder and renames it once complete.
    partial = checkpoints / "15.orbax-checkpoint-tmp-1234567"
    shutil.copytree(checkpoints / "12", partial)
    shutil.rmtree(partial / "state")
    result = run_training(run, compilation_cache, *SHORT, "trainer.num_steps=18")
    assert resumed_from(result.stderr) == [12]
    assert (checkpoints / "18").is_dir()
    assert_same_losses(logged(run), logged(uninterrupted), range(13, 19), 1e-6)


# Packed rows (data.packing) of at most 64 tokens: 2-3 of the tiny sentences share a row.
PACKED = ("data.packing=true", "data.row_length=64")
NO_DROPOUT = ("model.gliner.dropout=0",)  # the tiny encoder has none either: random draws follow array shapes


def test_packed_run_trains_like_the_unpacked_run_and_resumes(tmp_path, compilation_cache):
    """Without dropout, a packed run's losses are the unpacked run's (the same examples, loss and gradients per
    step); killed after step 6 and rerun, it resumes from its checkpoint with the same losses."""
    rows = tmp_path / "rows"
    run_training(rows, compilation_cache, *SHORT, *NO_DROPOUT, "trainer.num_steps=9")
    packed = tmp_path / "packed"
    run_training(packed, compilation_cache, *SHORT, *NO_DROPOUT, *PACKED, "trainer.num_steps=6")
    result = run_training(packed, compilation_cache, *SHORT, *NO_DROPOUT, *PACKED, "trainer.num_steps=9")
    assert resumed_from(result.stderr) == [6]
    assert sorted(logged(packed)) == list(range(1, 10))
    assert_same_losses(logged(packed), logged(rows), range(1, 10), 1e-4)


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


def test_sharded_run_on_8_devices_equals_a_1_device_run(tmp_path, compilation_cache, uninterrupted):
    result = run_training(
        tmp_path, compilation_cache, *SHORT, "trainer.num_steps=6", "mesh.data=2", "mesh.fsdp=4", devices=8
    )
    assert "8 devices" in result.stderr
    assert_same_losses(logged(tmp_path), logged(uninterrupted), range(1, 7), 1e-5)
    import jax

    sharded = restore_params(tmp_path / "checkpoints" / "6")
    single = restore_params(uninterrupted / "checkpoints" / "6")
    assert jax.tree.structure(sharded) == jax.tree.structure(single)
    for (path, value), expected in zip(
        jax.tree_util.tree_leaves_with_path(sharded), jax.tree.leaves(single), strict=True
    ):
        np.testing.assert_allclose(np.asarray(value), np.asarray(expected), rtol=1e-5, atol=1e-5, err_msg=str(path))


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_two_processes(output_dir: Path, cache: Path, *overrides: str) -> list[str]:
    """Both processes of a 2-host run (4 CPU devices each, one global mesh of 8); returns their stderr."""
    address = f"127.0.0.1:{free_port()}"
    processes = [
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
    return fresh.finish(processes)


@pytest.mark.parametrize("packing", [(), (*PACKED, "trainer.global_batch_size=16")], ids=["rows", "packed"])
def test_two_processes_train_checkpoint_and_restore(tmp_path, compilation_cache, packing):
    """Packed, each host packs its 8 examples into rows for its 4 data shards; hosts agree on the shapes."""
    mesh = ("mesh.data=2", "mesh.fsdp=4", *packing)
    run_two_processes(tmp_path, compilation_cache, *SHORT, *mesh, "trainer.num_steps=3")
    assert (tmp_path / "checkpoints" / "3").is_dir()
    errors = run_two_processes(tmp_path, compilation_cache, *SHORT, *mesh, "trainer.num_steps=5")
    assert all(resumed_from(error) == [3] for error in errors)
    # Each process turned its compilation cache off (cached XLA:CPU executables deadlock across processes).
    assert all("persistent compilation cache off" in error for error in errors)
    records = logged(tmp_path)
    assert sorted(records) == [1, 2, 3, 4, 5]
    assert all(np.isfinite(record["loss"]) for record in records.values())


def test_self_training_reports_dev_f1_before_and_after(tmp_path, tiny_run, compilation_cache):
    from gliner_jax import GLiNER
    from gliner_jax.evaluation import evaluate_examples
    from gliner_jax.training.data import read_examples

    dev_file = ROOT / "data" / "tiny" / "dev.jsonl"
    dev, _ = read_examples(dev_file)
    unlabelled = tmp_path / "texts.txt"
    unlabelled.write_text("".join(" ".join(example["tokenized_text"]) + "\n" for example in dev[:40]))
    command = [
        str(CLI),
        "self-train",
        "--config",
        str(ROOT / "configs" / "self_training.yaml"),
        "--model",
        str(tiny_run / "final"),
        "--unlabelled",
        str(unlabelled),
        f"data.dev={dev_file}",
        f"trainer.output_dir={tmp_path / 'run'}",
        "trainer.num_steps=20",
        "trainer.save_every=20",
        "trainer.log_every=1",
    ]
    result = fresh.run(command, environment(compilation_cache))
    report = json.loads(result.stdout.splitlines()[-1])

    teacher = GLiNER.from_pretrained(tiny_run / "final")
    before, _ = evaluate_examples(teacher, dev)
    assert report["before"]["f1"] == pytest.approx(before.f1) and before.f1 > 0.5
    pseudo, _ = read_examples(tmp_path / "run" / "pseudo_labels.jsonl")
    labels = sorted({entity[2] for example in dev for entity in example["ner"]})
    predicted = teacher.predict_words([example["tokenized_text"] for example in dev[:40]], labels)
    assert [example["ner"] for example in pseudo] == [[[s, e, label] for s, e, label, _ in p] for p in predicted]
    assert report["pseudo_entities"] == sum(len(p) for p in predicted) > 0
    after, _ = evaluate_examples(GLiNER.from_pretrained(tmp_path / "run" / "final"), dev)
    assert report["after"]["f1"] == pytest.approx(after.f1)
    peak = max(record["lr/encoder"] for record in logged(tmp_path / "run").values())
    assert peak == pytest.approx(5e-6)  # the Table 6 rates of configs/self_training.yaml


# 60 steps of the tiny config at its own learning rate (the loss falls from ~160 to ~22 over them), every step logged.
CURVE = ("data.dev=null", "trainer.log_every=1", "trainer.save_every=1000", "trainer.num_steps=60")


@pytest.fixture(scope="module")
def loss_curves(tmp_path_factory, compilation_cache) -> dict[str, Path]:
    """The same 60-step run with float32 and with bfloat16 parameters (the latter exported)."""
    runs = {}
    for dtype in ("float32", "bfloat16"):
        runs[dtype] = tmp_path_factory.mktemp(dtype)
        export = "trainer.export=" + str(dtype == "bfloat16").lower()
        run_training(runs[dtype], compilation_cache, *CURVE, export, f"model.param_dtype={dtype}")
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
    """A bfloat16 run stopped at step 30 and restarted logs the uninterrupted run's losses; its checkpoint holds
    bfloat16 parameters and their float32 masters, and the export holds the masters (not their rounding)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from gliner_jax import GLiNER
    from gliner_jax.training.optim import parameter_path

    bf16 = (*CURVE[:-1], "trainer.export=false", "model.param_dtype=bfloat16", "optimizer.num_steps=60")
    run_training(tmp_path, compilation_cache, *bf16, "trainer.num_steps=30")
    resumed = resumed_from(run_training(tmp_path, compilation_cache, *bf16, "trainer.num_steps=60").stderr)
    assert resumed == [30]
    assert_same_losses(logged(tmp_path), logged(loss_curves["bfloat16"]), range(1, 61), 1e-6)

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

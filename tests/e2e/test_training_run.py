"""End-to-end training runs of `gliner-jax train` on the shipped tiny config, in subprocesses.

They check what only whole runs show: the tiny config learns its dataset (the CI learning check) and exports a
directory the `gliner` package loads strictly and predicts identically from; a killed run resumes from its last
whole checkpoint with exactly the losses of an uninterrupted run; SIGTERM saves its step and the rerun ends bit for
bit as the uninterrupted run; a sharded run on 8 devices equals a 1-device run; a packed run trains like the unpacked
one; self-training. Bi-encoder,
two-process and bfloat16 runs: test_training_hosts_and_bfloat16.py (a file of its own, so that the two pytest-xdist
workers share the runs).
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from tests.utils import fresh
from tests.utils.faults import one_line_error
from tests.utils.fresh import CLI, ROOT
from tests.utils.training_runs import (
    NO_DROPOUT,
    PACKED,
    SHORT,
    assert_same_losses,
    environment,
    logged,
    logged_steps,
    restore_params,
    resumed_from,
    run_training,
    tensorboard_steps,
    train_command,
)

pytestmark = pytest.mark.slow  # each test trains in subprocesses: 20-140 s


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
    """The CI learning check: from a random tiny encoder, training-set span F1 > 0.9; the export loads in gliner.
    metrics.jsonl holds the dev threshold sweep and the loss's terms, which sum to the loss."""
    import torch
    from gliner import GLiNER as TorchGLiNER

    from gliner_jax import GLiNER
    from gliner_jax.data_formats import labels_of, read_examples
    from gliner_jax.evaluation import evaluate_examples

    final = tiny_run / "final"
    model = GLiNER.from_pretrained(final)
    train, _ = read_examples(ROOT / "data" / "tiny" / "train.jsonl")
    micro, _ = evaluate_examples(model, train)
    assert micro.f1 > 0.9, micro
    assert any((tiny_run / "tensorboard").iterdir())
    records = logged(tiny_run)
    assert records[max(records)]["dev/f1"] > 0.5  # evaluated on the dev file at the end
    assert {"lr/encoder", "lr/others", "tokens_per_second"} <= records[max(records)].keys()
    dev_labels = labels_of(read_examples(ROOT / "data" / "tiny" / "dev.jsonl")[0])
    per_label = {f"dev/{metric}/{label}" for metric in ("precision", "recall", "f1") for label in dev_labels}
    assert per_label <= records[max(records)].keys()
    last = records[max(records)]  # the default sweep 0.1, ..., 0.9 holds trainer.eval_threshold 0.5
    assert last["dev/f1@0.5"] == last["dev/f1"] <= last["dev/best_f1"] == last[f"dev/f1@{last['dev/best_threshold']:g}"]
    for record in (record for record in records.values() if "loss" in record):
        assert record["loss/positive"] + record["loss/negative"] == pytest.approx(record["loss"], rel=1e-5)

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


def test_sigterm_saves_its_step_and_the_rerun_ends_bit_identical(tmp_path, capsys, compilation_cache, uninterrupted):
    """SIGTERM at a random step (checkpoints every 1000 steps): the step is saved, one line, exit 143. Reruns: another
    network is refused in one line; the same command resumes from exactly that step, cleans a stale temporary folder
    and ends with the parameters of the uninterrupted run, bit for bit, each step once in metrics.jsonl and
    TensorBoard; another learning rate for the finished run is refused; new data and more steps are applied."""
    overrides = (*SHORT, "trainer.num_steps=18", "trainer.save_every=1000")
    env = environment(compilation_cache)
    process = fresh.start(train_command(tmp_path, *overrides), env)
    signal_after = random.randint(1, 15)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= signal_after):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be signalled"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=600)[1]
    saved = max(logged(tmp_path))
    assert process.returncode == 128 + signal.SIGTERM, stderr[-4000:]
    assert stderr.splitlines()[-1] == f"interrupted at step {saved}; saved; rerun the same command to resume"
    checkpoints = tmp_path / "checkpoints"
    assert signal_after <= saved < 18 and sorted(path.name for path in checkpoints.iterdir()) == [str(saved)]
    stale = checkpoints / f"{saved + 1}.orbax-checkpoint-tmp-1234567"  # a save cut off mid-write (by SIGKILL)
    shutil.copytree(checkpoints / str(saved), stale)

    def refused(*changes: str) -> str:
        """The command line's one-line error for a rerun with `changes` (run in this process: a rerun is refused
        before any model is built, so a subprocess would only add its imports)."""
        return one_line_error(capsys, train_command(tmp_path, *overrides, *changes)[1:])

    assert refused("model.gliner.hidden_size=32").endswith(
        "(changed: model.gliner.hidden_size 64 -> 32); rerun with its values or use a new trainer.output_dir"
    )
    resumed = run_training(tmp_path, compilation_cache, *overrides)
    assert resumed_from(resumed.stderr) == [saved] and not stale.exists()
    assert logged_steps(tmp_path) == tensorboard_steps(tmp_path) == list(range(1, 19))
    final, expected = restore_params(checkpoints / "18"), restore_params(uninterrupted / "checkpoints" / "18")
    for (path, value), reference in zip(
        jax.tree_util.tree_leaves_with_path(final), jax.tree.leaves(expected), strict=True
    ):
        np.testing.assert_array_equal(value, reference, err_msg=f"interrupted after {saved}: {path}")

    assert "finished at step 18" in refused("optimizer.encoder_lr=1e-3")
    data = tmp_path / "train.jsonl"
    shutil.copy(ROOT / "data" / "tiny" / "train.jsonl", data)
    extended = run_training(tmp_path, compilation_cache, *overrides, f"data.train={data}", "trainer.num_steps=19")
    assert "trainer.num_steps 18 -> 19; the data is read from its beginning" in extended.stderr
    assert logged_steps(tmp_path) == tensorboard_steps(tmp_path) == list(range(1, 20))
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["data"]["train"] == str(data)


def test_a_killed_run_resumes_from_its_last_whole_checkpoint(tmp_path, compilation_cache, uninterrupted):
    """What SIGKILL after step 17 leaves (checkpoints to step 12, the save of step 15 cut off mid-write, metrics and
    TensorBoard logged to step 17): the rerun never loads the half-written save, resumes from step 12 with the
    losses of the uninterrupted run, and cuts metrics.jsonl and TensorBoard back to it (each step logged once)."""
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    checkpoints = run / "checkpoints"
    for step in (15, 18):
        shutil.rmtree(checkpoints / str(step))
    # Orbax writes a save into a temporary folder and renames it once complete.
    partial = checkpoints / "15.orbax-checkpoint-tmp-1234567"
    shutil.copytree(checkpoints / "12", partial)
    shutil.rmtree(partial / "state")
    metrics = run / "metrics.jsonl"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:17]))
    result = run_training(run, compilation_cache, *SHORT, "trainer.num_steps=18")
    assert resumed_from(result.stderr) == [12]
    assert (checkpoints / "18").is_dir() and not partial.exists()
    assert logged_steps(run) == tensorboard_steps(run) == list(range(1, 19))
    assert_same_losses(logged(run), logged(uninterrupted), range(13, 19), 1e-6)


def test_packed_run_trains_like_the_unpacked_run(tmp_path, compilation_cache):
    """Without dropout, a packed run's losses are the unpacked run's (the same examples, loss and gradients per
    step). A packed run's resume: test_two_processes_train_checkpoint_and_restore."""
    rows = tmp_path / "rows"
    run_training(rows, compilation_cache, *SHORT, *NO_DROPOUT, "trainer.num_steps=6")
    packed = tmp_path / "packed"
    run_training(packed, compilation_cache, *SHORT, *NO_DROPOUT, *PACKED, "trainer.num_steps=6")
    assert sorted(logged(packed)) == list(range(1, 7))
    assert_same_losses(logged(packed), logged(rows), range(1, 7), 1e-4)


def test_sharded_run_on_8_devices_equals_a_1_device_run(tmp_path, compilation_cache, uninterrupted):
    result = run_training(
        tmp_path, compilation_cache, *SHORT, "trainer.num_steps=6", "mesh.data=2", "mesh.fsdp=4", devices=8
    )
    assert "8 devices" in result.stderr
    assert_same_losses(logged(tmp_path), logged(uninterrupted), range(1, 7), 1e-5)
    sharded = restore_params(tmp_path / "checkpoints" / "6")
    single = restore_params(uninterrupted / "checkpoints" / "6")
    assert jax.tree.structure(sharded) == jax.tree.structure(single)
    for (path, value), expected in zip(
        jax.tree_util.tree_leaves_with_path(sharded), jax.tree.leaves(single), strict=True
    ):
        np.testing.assert_allclose(np.asarray(value), np.asarray(expected), rtol=1e-5, atol=1e-5, err_msg=str(path))


def test_self_training_reports_dev_f1_before_and_after(tmp_path, tiny_run, compilation_cache):
    from gliner_jax import GLiNER
    from gliner_jax.data_formats import read_examples
    from gliner_jax.evaluation import evaluate_examples

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

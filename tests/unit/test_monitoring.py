"""Monitoring as the README shows it: the TensorBoard extra, per-label dev scores and the threshold sweep in
metrics.jsonl and TensorBoard, `eval --output`, and progress bars that know their total."""

from __future__ import annotations

import itertools
import json
import re
import tomllib
from pathlib import Path

import pytest

from gliner_jax.cli import main
from gliner_jax.evaluation import span_scores
from gliner_jax.training.config import load_train_config
from gliner_jax.training.trainer import Trainer
from tests.utils.benchmark import record, write_dataset
from tests.utils.faults import ROOT, assert_names, one_line_error, save_tiny_model

DEV = [
    {"tokenized_text": ["Ada", "Lovelace", "lived", "in", "London", "."], "ner": [[0, 1, "person"], [4, 4, "city"]]},
    {"tokenized_text": ["Alan", "Turing", "visited", "Paris", "."], "ner": [[0, 1, "person"], [3, 3, "city"]]},
    {"tokenized_text": ["Grace", "Hopper", "wrote", "code", "."], "ner": [[0, 1, "person"]]},
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("saved")) / "native"


def _name(requirement: str) -> str:
    """The normalised project name of a requirement string (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)[0]).lower()


def test_every_extra_is_pinned_and_the_readme_installs_tensorboard():
    """TensorBoard comes from the tensorboard extra, which the README installs before `tensorboard --logdir`, and
    every package of every extra (and TensorBoard's own dependencies) has an exact version in constraints.txt; an
    extra made of other extras names gliner-jax itself."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [_name(requirement) for requirement in extras["tensorboard"]] == ["tensorboard"]
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pinned = {_name(line) for line in lines if "==" in line and not line.startswith("#")}
    wanted = {_name(requirement) for requirement in itertools.chain(*extras.values())} - {"gliner-jax"}  # ours
    wanted |= {"tensorboard-data-server", "grpcio", "markdown", "werkzeug", "pillow", "setuptools"}
    assert wanted <= pinned, wanted - pinned
    readme = (ROOT / "README.md").read_text()
    assert readme.index("-e '.[tensorboard]'") < readme.index("tensorboard --logdir")


def test_scalars_name_micro_and_per_label_scores():
    """`Evaluation.scalars`: PREFIX/precision|recall|f1, micro, and PREFIX/METRIC/LABEL of each label."""
    evaluation = span_scores([{(0, 1, "person"), (3, 3, "city")}], [{(0, 1, "person"), (4, 4, "city")}])
    values = evaluation.scalars("dev")
    assert values["dev/f1"] == pytest.approx(0.5)
    assert values["dev/f1/person"] == 1.0 and values["dev/f1/city"] == 0.0
    assert values["dev/precision/city"] == 0.0 and values["dev/recall/person"] == 1.0
    assert len(values) == 3 * 3


def _scalar_tags(directory: Path) -> set[str]:
    """The scalar tags of the TensorBoard event files in `directory` (TFRecords: length, its CRC, event, its CRC)."""
    from tensorboardX.proto import event_pb2

    tags = set()
    for path in directory.glob("events.out.tfevents.*"):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            length = int.from_bytes(data[offset : offset + 8], "little")
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            tags.update(value.tag for value in event.summary.value)
            offset += 16 + length
    return tags


def test_dev_evaluation_scores_each_label_with_a_progress_bar(tmp_path, capsys):
    """A training run's dev evaluation gives dev/f1/LABEL (and precision, recall) of each dev label beside the micro
    scores, and the threshold sweep's dev/f1@T, dev/best_threshold and dev/best_f1 (one model pass: one progress
    bar), which TensorBoard records under those tags ('@' as '_'; metrics.jsonl of a whole run:
    tests/e2e/test_training_run.py); its progress bar shows the total of its batches."""
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps(example) + "\n" for example in DEV))
    overrides = [f"trainer.output_dir={tmp_path / 'run'}", f"data.dev={dev}", "trainer.eval_batch_size=2"]
    trainer = Trainer(load_train_config(ROOT / "configs/tiny.yaml", [*overrides, "trainer.eval_thresholds=[0.3,0.5]"]))
    values = trainer._evaluate()
    metrics, labels = ("precision", "recall", "f1"), ("", "/city", "/person")
    sweep = {"dev/f1@0.3", "dev/f1@0.5", "dev/best_threshold", "dev/best_f1"}
    assert values.keys() == {f"dev/{metric}{label}" for metric in metrics for label in labels} | sweep
    assert values["dev/f1@0.5"] == values["dev/f1"]  # trainer.eval_threshold is 0.5
    assert values["dev/best_threshold"] in (0.3, 0.5)
    bars = capsys.readouterr().err
    assert len(re.findall(r"batches: 100%\|.*\| (\d+)/\1 \[", bars)) == 1, bars
    writer = trainer._writer()
    trainer._record(values, writer, None)
    writer.close()
    assert _scalar_tags(tmp_path / "run" / "tensorboard") == {name.replace("@", "_") for name in values}


def test_eval_output_writes_the_report_and_refuses_its_input(saved, tmp_path, capsys):
    """`eval --output FILE` writes the JSON report (per-label scores included) there, not to stdout; an --output
    that is the --data or --label-map file is refused before anything runs."""
    data = tmp_path / "gold.jsonl"
    data.write_text("".join(json.dumps(example) + "\n" for example in DEV))
    label_map = tmp_path / "map.yaml"
    label_map.write_text("city: location\n")
    report = tmp_path / "report.json"
    argv = ["eval", "--model", str(saved), "--data", str(data), "--label-map", str(label_map)]
    assert main([*argv, "--output", str(report)]) == 0
    assert capsys.readouterr().out == ""
    written = json.loads(report.read_text())
    assert written["examples"] == 3 and written["per_label"].keys() == {"location", "person"}
    link = tmp_path / "link.jsonl"
    link.symlink_to(data)
    for own_input in (data, label_map, link):
        line = one_line_error(capsys, [*argv, "--output", str(own_input)])
        assert_names(line, f"--output {own_input}", "input file")
    assert data.read_text().count("\n") == 3 and label_map.read_text() == "city: location\n"


def test_benchmark_evaluation_is_recorded_beside_dev(tmp_path, capsys):
    """With data.benchmark, a training run's evaluation adds the benchmark's two averages and each dataset's F1 (a
    zero-shot set and another, so both averages exist), in metrics.jsonl names and TensorBoard tags."""
    root = tmp_path / "suite"
    sentences = [record("Ada Lovelace lived in London .", ("Ada Lovelace", "person"), ("London", "city"))]
    write_dataset(root, "mit-movie", sentences, ["person", "city"])
    write_dataset(root, "conll", sentences, ["person"])
    overrides = [f"trainer.output_dir={tmp_path / 'run'}", f"data.benchmark={root}"]
    trainer = Trainer(load_train_config(ROOT / "configs/tiny.yaml", overrides))
    values = trainer._evaluate()
    dev = {name for name in values if name.startswith("dev/")}
    assert dev and values.keys() - dev == {
        "benchmark/zero_shot_f1",
        "benchmark/all_f1",
        "benchmark/mit-movie/f1",
        "benchmark/conll/f1",
    }
    assert values["benchmark/zero_shot_f1"] == values["benchmark/mit-movie/f1"]
    assert re.search(r"benchmark: 100%\|.*\| 2/2 \[", capsys.readouterr().err)
    writer = trainer._writer()
    trainer._record(values, writer, None)
    writer.close()
    assert _scalar_tags(tmp_path / "run" / "tensorboard") == {name.replace("@", "_") for name in values}


@pytest.mark.parametrize("to_file", [False, True], ids=["stdout", "output"])
@pytest.mark.parametrize("text_format", ["lines", "json"])
def test_predict_file_progress_has_a_total(saved, tmp_path, capsys, to_file, text_format):
    """predict --file counts the file's lines (a JSON list's records) first, so that its progress bar shows a total
    and an ETA, to stdout or into --output."""
    texts = ["Ada Lovelace lived in London.", "Alan Turing visited Paris.", "Grace Hopper wrote code."]
    source = tmp_path / f"texts.{text_format}"
    if text_format == "json":
        source.write_text(json.dumps([{"text": text} for text in texts]))
    else:
        source.write_text("\n".join(texts) + "\n\n")  # a blank last line counts
    argv = ["predict", "--model", str(saved), "--labels", "person,city", "--file", str(source), "--block-lines", "2"]
    assert main([*argv, "--output", str(tmp_path / "out.jsonl")] if to_file else argv) == 0
    captured = capsys.readouterr()
    total = 3 if text_format == "json" else 4
    assert re.search(rf"predict: 100%\|.*\| {total}/{total} \[", captured.err), captured.err
    written = (tmp_path / "out.jsonl").read_text() if to_file else captured.out
    assert len(written.splitlines()) == 3

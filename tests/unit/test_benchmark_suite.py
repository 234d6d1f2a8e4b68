"""The benchmark suite without the reference: reading a folder (roles by file name, `sample_` skipped, nested and
zero-shot by name), characters to words (hand-checked), the averages and table, one-line errors, and
`gliner-jax eval --benchmark`. The scores against gliner: tests/parity/test_benchmark_suite_vs_gliner.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gliner_jax.benchmark_suite import (
    BenchmarkResult,
    DatasetResult,
    char_span_to_words,
    read_benchmark,
    read_dataset,
    sentence_example,
)
from gliner_jax.cli import main
from gliner_jax.evaluation import Evaluation, Scores
from tests.utils.benchmark import record, write_dataset
from tests.utils.faults import assert_names, one_line_error, save_tiny_model

SENTENCE = (
    "Obama was born in Honolulu, Hawaii,"  # Obama 0-5, was 6-9, born 10-14, in 15-17, Honolulu, 18-27, Hawaii, 28-35
)


def test_characters_map_to_words_as_gliner_does():
    words = SENTENCE.split()
    assert char_span_to_words(words, 0, 5) == (0, 0)
    assert char_span_to_words(words, 6, 14) == (1, 2)
    assert char_span_to_words(words, 28, 35) == (5, 5)
    assert char_span_to_words(words, 18, 26) == (4, None)  # "Honolulu" ends inside "Honolulu,"
    assert char_span_to_words(words, 1, 5) == (None, 0)  # starts inside "Obama"
    assert char_span_to_words(words, 10, 9) == (None, 1)  # the search stops at "was", which ends at 9
    # Offsets count single spaces: in "a  bc" the word "bc" is at 3-5 of the sentence but 2-4 of the words.
    double_space = {"sentence": "a  bc", "entities": [{"pos": [3, 5], "type": "x"}, {"pos": [2, 4], "type": "x"}]}
    assert sentence_example(double_space)["ner"] == [[None, None, "x"], [1, 1, "x"]]
    assert char_span_to_words([], 0, 0) == (None, None)


def test_a_record_becomes_an_example_with_lower_case_labels():
    example = sentence_example(record(SENTENCE, ("Obama", "PER"), ("Honolulu", "Loc"), ("Hawaii,", "LOC")))
    assert example == {
        "tokenized_text": ["Obama", "was", "born", "in", "Honolulu,", "Hawaii,"],
        "ner": [[0, 0, "per"], [4, None, "loc"], [5, 5, "loc"]],
    }


def test_a_folder_reads_its_datasets_by_name(tmp_path):
    """Datasets in name order; roles by file name (the root's name "test_train" aside); `sample_` folders, hidden
    entries and plain files skipped; nested by ACE / GENIA / Corpus in the name, zero-shot by the seven names."""
    root = tmp_path / "test_train"
    write_dataset(root, "mit-movie", [record("Alien was filmed .", ("Alien", "Title"))], ["TITLE", "Director"])
    genia = write_dataset(root, "GENIA_NER", [], ["protein"])
    (genia / "labels.json").rename(genia / "genia_labels.json")
    (genia / "test.json").rename(genia / "en_test_v2.json")
    write_dataset(root, "sample_mit-movie", [], ["x"])
    write_dataset(root, ".cache", [], ["x"])
    (root / "README.json").write_text("[]")
    datasets = read_benchmark(root)
    assert [(d.name, d.nested, d.zero_shot) for d in datasets] == [
        ("GENIA_NER", True, False),
        ("mit-movie", False, True),
    ]
    assert datasets[1].labels == ["title", "director"]
    assert datasets[1].examples == [{"tokenized_text": ["Alien", "was", "filmed", "."], "ner": [[0, 0, "title"]]}]


@pytest.mark.parametrize(
    ("files", "named"),
    [
        ({"labels.json": "[]"}, ["no test file"]),
        ({"test.json": "[]"}, ["no labels file"]),
        ({"test.json": "[\n{]", "labels.json": '["a"]'}, ["test.json:2", "invalid JSON"]),
        ({"test.json": "[]", "a_test.json": "[]", "labels.json": '["a"]'}, ["two test files", "a_test.json"]),
        (
            {"test.json": '[{"sentence": "a b", "entities": [{"pos": [0], "type": "x"}]}]', "labels.json": '["x"]'},
            ["test.json: record 0", "pos"],
        ),
        ({"test.json": "[]", "labels.json": '{"a": 1}'}, ["labels.json", "list of label strings"]),
    ],
    ids=["no-test", "no-labels", "invalid-json", "two-tests", "bad-record", "bad-labels"],
)
def test_a_bad_dataset_is_a_value_error_naming_the_file(tmp_path, files, named):
    folder = tmp_path / "conll"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    with pytest.raises(ValueError) as raised:
        read_dataset(folder)
    assert str(folder) in str(raised.value) and "\n" not in str(raised.value)
    for part in named:
        assert part in str(raised.value)


def test_no_dataset_folder_is_refused(tmp_path):
    write_dataset(tmp_path, "sample_only", [], ["x"])
    with pytest.raises(ValueError, match="no dataset folders"):
        read_benchmark(tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        read_benchmark(tmp_path / "missing")


def _result(name: str, zero_shot: bool, true_positives: int, predicted: int, gold: int) -> DatasetResult:
    return DatasetResult(name, 3, False, zero_shot, Evaluation(Scores.from_counts(true_positives, predicted, gold), {}))


def test_averages_table_and_json():
    """F1 by hand: 1 of 1 predicted, 1 of 3 gold: P 1, R 1/3, F1 0.5; 2/2/2: 1.0; 1 of 3, 1 of 5: 0.25."""
    result = BenchmarkResult([_result("CrossNER_AI", True, 1, 1, 3), _result("conll", False, 1, 3, 5)])
    result = BenchmarkResult([*result.datasets, _result("mit-movie", True, 2, 2, 2)])
    assert result.zero_shot_f1 == pytest.approx(0.75) and result.all_f1 == pytest.approx(0.25)
    lines = result.table().splitlines()
    assert [line.split()[0] for line in lines] == [
        "dataset",
        "conll",
        "average",
        "CrossNER_AI",
        "mit-movie",
        "zero-shot",
    ]
    assert lines[2].endswith("25.00%") and lines[5].endswith("75.00%") and "33.33%" in lines[1]
    written = json.loads(json.dumps(result.to_dict()))
    assert written["zero_shot_f1"] == pytest.approx(0.75) and written["datasets"]["conll"]["gold"] == 5
    only_zero_shot = BenchmarkResult(result.datasets[:1])
    assert only_zero_shot.all_f1 is None and only_zero_shot.to_dict()["all_f1"] is None
    assert only_zero_shot.table().splitlines()[1].split() == ["average", "-"]
    assert only_zero_shot.scalars("b") == {"b/zero_shot_f1": 0.5, "b/CrossNER_AI/f1": 0.5}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("saved")) / "native"


def test_cli_benchmark_writes_the_report_and_refuses_bad_input(saved, tmp_path, capsys):
    root = tmp_path / "suite"
    sentences = [record("Ada Lovelace lived in London .", ("Ada Lovelace", "PERSON"), ("London", "City"))]
    write_dataset(root, "CrossNER_AI", sentences, ["person", "city"])
    write_dataset(root, "ACE05", sentences * 2, ["person", "city"])
    report = tmp_path / "report.json"
    argv = ["eval", "--model", str(saved), "--benchmark", str(root)]
    assert main([*argv, "--output", str(report)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and re.search(r"benchmark: 100%\|.*\| 2/2 \[", captured.err), captured.err
    assert "zero-shot average" in captured.err
    written = json.loads(report.read_text())
    assert written["benchmark"] == str(root) and set(written) >= {"zero_shot_f1", "all_f1"}
    assert {name: (d["examples"], d["gold"], d["nested"]) for name, d in written["datasets"].items()} == {
        "ACE05": (2, 4, True),  # the same sentence twice: two texts of two gold entities
        "CrossNER_AI": (1, 2, False),
    }
    line = one_line_error(capsys, [*argv, "--output", str(root / "ACE05" / "test.json")])
    assert_names(line, "input file")
    line = one_line_error(capsys, [*argv, "--nested", "--labels", "a", "--format", "conll"])
    assert_names(line, "--benchmark", "--labels", "--nested", "--format")
    (root / "ACE05" / "labels.json").unlink()
    assert_names(one_line_error(capsys, argv), str(root / "ACE05"), "no labels file")

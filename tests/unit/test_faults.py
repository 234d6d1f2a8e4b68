"""Bad input as a new user gives it: every bad file or setting ends `gliner-jax` with one `error: ...` line on stderr
naming the file (and the field or line), exit status 1, no traceback (`--debug` shows it)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gliner_jax.cli import main
from tests.utils.faults import assert_names, one_line_error, predict_args, save_tiny_model, truncate

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny.yaml")
NOT_UTF8 = b"\xff\xfe"
ENCODER = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
GLINER = {"hidden_size": 16, "max_width": 4, "max_len": 64}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A tiny random GLiNER (the shipped tiny tokenizer), saved in gliner's layout (`torch/`) and ours (`native/`)."""
    return save_tiny_model(tmp_path_factory.mktemp("saved"))


def edit_config(**changes: object) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        path = directory / "gliner_config.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | changes))

    return edit


MODEL_FAULTS = {
    "truncated-safetensors": ("torch", lambda d: truncate(d / "model.safetensors"), ["model.safetensors", "truncated"]),
    "truncated-native": ("native", lambda d: truncate(d / "flax_params.safetensors"), ["flax_params.safetensors"]),
    "config-is-a-list": (
        "torch",
        lambda d: (d / "gliner_config.json").write_text("[1, 2]"),
        ["gliner_config.json: expected a JSON object, got a list"],
    ),
    "config-corrupt": ("torch", lambda d: truncate(d / "gliner_config.json"), ["gliner_config.json:", "invalid JSON"]),
    "config-not-utf8": (
        "torch",
        lambda d: (d / "gliner_config.json").write_bytes(NOT_UTF8),
        ["gliner_config.json: not UTF-8"],
    ),
    "config-wrong-type": (
        "torch",
        edit_config(max_width="twelve"),
        ["gliner_config.json", "max_width='twelve'", "int"],
    ),
    "config-unknown-value": ("native", edit_config(span_mode="markerV9"), ["gliner_config.json", "span_mode"]),
    "config-unknown-splitter": (
        "torch",
        edit_config(words_splitter_type="spaces"),
        ["gliner_config.json", "words_splitter_type='spaces'"],
    ),
    "config-unknown-relations-layer": (
        "native",
        edit_config(relations_layer="graph"),
        ["gliner_config.json", "relations_layer='graph'", "known"],
    ),
    "config-refused-triples-layer": (
        "native",
        edit_config(relations_layer="dot", triples_layer="ConvE"),
        ["gliner_config.json", "triples_layer='ConvE'", "cannot build it"],
    ),
    "config-unknown-span-encoder": (
        "native",
        edit_config(span_encoder_config={"model_type": "gru"}),
        ["gliner_config.json", "span_encoder_config model_type='gru'", "known"],
    ),
    "config-precomputed-without-labels": (
        "native",
        edit_config(precomputed_prompts_mode=True),
        ["gliner_config.json", "precomputed_prompts_mode=True", "id_to_classes=None"],
    ),
    "config-precomputed-relations-bad-keys": (
        "native",
        edit_config(
            relations_layer="dot", precomputed_prompts_mode=True, id_to_classes={"1": "a"}, rel_id_to_classes={"2": "r"}
        ),
        ["gliner_config.json", "rel_id_to_classes keys must be 1..N", "['2']"],
    ),
    "tokenizer-corrupt": ("torch", lambda d: truncate(d / "tokenizer.json"), ["tokenizer.json:", "invalid JSON"]),
    "tokenizer-wrong-content": (
        "torch",
        lambda d: (d / "tokenizer.json").write_text('{"model": 1}'),
        ["cannot read the tokenizer"],
    ),
}


@pytest.mark.parametrize("fault", sorted(MODEL_FAULTS))
def test_bad_model_file_is_one_line(saved, tmp_path, capsys, fault):
    layout, spoil, fragments = MODEL_FAULTS[fault]
    model = shutil.copytree(saved / layout, tmp_path / "model")
    spoil(model)
    line = one_line_error(capsys, predict_args(model))
    assert_names(line, str(model), *fragments)


def test_missing_splitter_library_is_one_line(saved, tmp_path, capsys, monkeypatch):
    """A model whose words_splitter_type needs a library that is not installed (janome, hidden here) names the
    library and the extra that installs it."""
    model = shutil.copytree(saved / "torch", tmp_path / "model")
    edit_config(words_splitter_type="janome")(model)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "janome" else find_spec(name, *a))
    line = one_line_error(capsys, predict_args(model))
    assert_names(line, "words_splitter_type='janome'", "needs janome", "pip install 'gliner-jax[janome]'")


def test_debug_shows_the_traceback(saved, tmp_path):
    model = shutil.copytree(saved / "torch", tmp_path / "model")
    truncate(model / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        main(["--debug", *predict_args(model)])


TRAIN_FAULTS = {
    "misspelt-nested-key": (
        ["model.gliner.span_mod=markerV0"],
        ["tiny.yaml", "'span_mod'", "did you mean 'span_mode'"],
    ),
    "misspelt-section": (["trainr.num_steps=3"], ["tiny.yaml", "'trainr'", "did you mean 'trainer'"]),
    "wrong-type": (["trainer.log_every=abc"], ["tiny.yaml", "trainer.log_every", "int", "'abc'"]),
    "wrong-nested-type": (["model.gliner.max_width=twelve"], ["tiny.yaml", "max_width='twelve'", "int"]),
    "wrong-section-type": (["trainer=5"], ["tiny.yaml", "trainer must be a mapping"]),
    "misspelt-encoder-key": (["model.encoder.hiden_size=64"], ["'hiden_size'", "did you mean 'hidden_size'"]),
    "wrong-encoder-type": (["model.encoder.num_hidden_layers=two"], ["num_hidden_layers='two'", "int"]),
}


@pytest.mark.parametrize("fault", sorted(TRAIN_FAULTS))
def test_bad_training_setting_is_one_line(tmp_path, capsys, fault):
    overrides, fragments = TRAIN_FAULTS[fault]
    line = one_line_error(capsys, ["train", "--config", TINY, f"trainer.output_dir={tmp_path}", *overrides])
    assert_names(line, *fragments)


def test_training_config_not_a_mapping_is_one_line(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("- model\n- data\n")
    assert_names(one_line_error(capsys, ["train", "--config", str(config)]), str(config), "mapping")


ENCODER_FAULTS = {
    "config-is-a-list": ("config.json", "[]", "config.json: expected a JSON object, got a list"),
    "config-wrong-type": ("config.json", '{"hidden_size": "big"}', "config.json: encoder config hidden_size='big'"),
    "tokenizer-corrupt": ("tokenizer.json", '{"version": ', "tokenizer.json:1: invalid JSON"),
}


@pytest.mark.parametrize("fault", sorted(ENCODER_FAULTS))
def test_bad_encoder_or_tokenizer_file_is_one_line(tmp_path, capsys, fault):
    """`model.encoder` (a Hugging Face encoder directory) and `model.tokenizer` files of a training run."""
    name, content, fragment = ENCODER_FAULTS[fault]
    tokenizer = shutil.copytree(ROOT / "data/tiny/tokenizer", tmp_path / "encoder")
    (tokenizer / name).write_text(content)
    overrides = [f"model.encoder={tokenizer}", f"model.tokenizer={tokenizer}"]
    line = one_line_error(capsys, ["train", "--config", TINY, f"trainer.output_dir={tmp_path / 'run'}", *overrides])
    assert_names(line, f"{tokenizer / name}", fragment)


def record(*words: str) -> str:
    return json.dumps({"tokenized_text": list(words), "ner": [[0, 0, "person"]]}) + "\n"


TRAIN_DATA_FAULTS = {
    "empty": ("train.jsonl", b"", ["train.jsonl: no training examples"]),
    "all-invalid": ("train.jsonl", b'{"text": "no words"}\n[1]\n', ["train.jsonl: no valid record among 2"]),
    "not-utf8": (
        "train.jsonl",
        record("Marie").encode() + b'{"tokenized_text": ["\xff"]}\n',
        ["train.jsonl:2: not UTF-8"],
    ),
    "corrupt-json-list": (
        "train.json",
        b'[{"tokenized_text": ["a"], "ner": []},\n{"tok',
        ["train.json:2: invalid JSON"],
    ),
}


@pytest.mark.parametrize("fault", sorted(TRAIN_DATA_FAULTS))
def test_bad_training_data_is_refused_before_the_model_is_built(tmp_path, capsys, monkeypatch, fault):
    name, content, fragments = TRAIN_DATA_FAULTS[fault]
    (tmp_path / name).write_bytes(content)

    def no_model(*args: object) -> None:
        raise AssertionError("the model was built before the training data was checked")

    monkeypatch.setattr("gliner_jax.training.trainer.build_model", no_model)
    argv = ["train", "--config", TINY, f"trainer.output_dir={tmp_path / 'run'}", f"data.train={tmp_path / name}"]
    assert_names(one_line_error(capsys, argv), str(tmp_path), *fragments)


EVAL_DATA_FAULTS = {
    "jsonl-not-utf8": ("gold.jsonl", record("Marie").encode() * 2 + b"\xff\n", ["gold.jsonl:3: not UTF-8"]),
    "empty": ("gold.jsonl", b"", ["gold.jsonl: no examples"]),
    "conll-not-utf8": ("gold.conll", b"Marie B-person\nCurie I-person\n\nwon\xff O\n", ["gold.conll:4: not UTF-8"]),
}


@pytest.mark.parametrize("fault", sorted(EVAL_DATA_FAULTS))
def test_bad_eval_data_is_one_line(saved, tmp_path, capsys, fault):
    name, content, fragments = EVAL_DATA_FAULTS[fault]
    (tmp_path / name).write_bytes(content)
    line = one_line_error(capsys, ["eval", "--model", str(saved / "torch"), "--data", str(tmp_path / name)])
    assert_names(line, str(tmp_path), *fragments)


def test_bad_label_map_is_one_line(saved, tmp_path, capsys):
    (tmp_path / "map.yaml").write_bytes(b"person: per\xffson\n")
    argv = ["eval", "--model", str(saved / "torch"), "--data", str(ROOT / "data/tiny/dev.jsonl")]
    line = one_line_error(capsys, [*argv, "--label-map", str(tmp_path / "map.yaml")])
    assert_names(line, str(tmp_path / "map.yaml") + ":1: not UTF-8")


@pytest.mark.parametrize("command", ["predict", "train"])
def test_one_line_in_a_real_process(saved, tmp_path, command):
    """What a terminal shows, logging and warnings included: one line, exit status 1."""
    model = shutil.copytree(saved / "torch", tmp_path / "model")
    truncate(model / "model.safetensors")
    (tmp_path / "empty.jsonl").write_text("")
    args = {
        "predict": predict_args(model),
        "train": [
            "train",
            "--config",
            TINY,
            f"trainer.output_dir={tmp_path / 'run'}",
            f"data.train={tmp_path}/empty.jsonl",
        ],
    }[command]
    done = subprocess.run(
        [sys.executable, "-m", "gliner_jax.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"error: {tmp_path}"), done.stderr


def test_closed_pipe_ends_quietly(saved):
    """`gliner-jax predict ... | head -1`: the reader goes away; no `error: [Errno 32] Broken pipe`."""
    read, write = os.pipe()
    os.close(read)
    texts = ["Marie Curie won the Nobel Prize."] * 3
    command = [sys.executable, "-m", "gliner_jax.cli", *predict_args(saved / "torch"), *texts]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, stdout=write, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, timeout=300)
    os.close(write)
    assert done.stderr == ""
    assert done.returncode == 1


TRICKY_LINES = ["[Breaking] Marie Curie won the Nobel Prize.", "{Paris} is where she worked."]


def predicted_texts(capsys, argv: list[str]) -> list[str]:
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "skipped" not in captured.err
    return [json.loads(line)["text"] for line in captured.out.splitlines()]


def test_txt_file_is_plain_text(saved, tmp_path, capsys):
    """A .txt file is read as plain text: a first line starting with "[" is no JSON list, a "{" line no record."""
    source = tmp_path / "news.txt"
    source.write_text("\n".join(TRICKY_LINES) + "\n")
    argv = ["predict", "--model", str(saved / "torch"), "--labels", "person", "--file", str(source)]
    assert predicted_texts(capsys, argv) == TRICKY_LINES
    assert predicted_texts(capsys, [*argv[:-2], "--format", "text", "--file", str(source)]) == TRICKY_LINES


def test_text_format_drops_no_line_of_stdin(saved, capsys, monkeypatch):
    stdin = io.TextIOWrapper(io.BytesIO("\n".join([*TRICKY_LINES, '{"text": "json?"}']).encode()))
    monkeypatch.setattr("sys.stdin", stdin)
    argv = ["predict", "--model", str(saved / "torch"), "--labels", "person", "--format", "text"]
    assert predicted_texts(capsys, argv) == [*TRICKY_LINES, '{"text": "json?"}']


@pytest.mark.parametrize(
    ("text_format", "content", "fragment"),
    [
        ("jsonl", "Marie Curie\n", "texts.dat:1: invalid JSON"),
        ("json", '{"text": "Marie Curie"}\n', "texts.dat: a JSON file of texts holds a list of records"),
    ],
)
def test_json_formats_refuse_what_is_not_json(saved, tmp_path, capsys, text_format, content, fragment):
    source = tmp_path / "texts.dat"
    source.write_text(content)
    argv = ["predict", "--model", str(saved / "torch"), "--labels", "person", "--file", str(source), "--strict"]
    assert_names(one_line_error(capsys, [*argv, "--format", text_format]), fragment)


def test_unlabelled_txt_is_plain_text(tmp_path):
    from gliner_jax.data_formats import record_words
    from gliner_jax.training.self_training import read_unlabelled

    source = tmp_path / "texts.txt"
    source.write_text("\n".join(TRICKY_LINES))
    assert read_unlabelled(source) == [record_words({"text": line}) for line in TRICKY_LINES]
    assert read_unlabelled(source, "text") == read_unlabelled(source)


def test_eval_format_names_conll(saved, tmp_path, capsys):
    """`eval --format conll` reads a CoNLL file whatever its name; a bad tag is one line naming the file and line."""
    gold = tmp_path / "gold.data"
    gold.write_text("{Marie} B-person\nCurie X-person\n")
    argv = ["eval", "--model", str(saved / "torch"), "--data", str(gold), "--format", "conll"]
    assert_names(one_line_error(capsys, argv), f"{gold}:2: not a BIO tag: 'X-person'")


def test_readme_fault_table_names_real_tests():
    """Every row of the README's fault table names a test that exists (file, function and parameter id)."""
    section = (ROOT / "README.md").read_text().split("## Faults and bad input", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)(?:\[([\w-]+)\])?`", section)
    assert len(named) >= 30
    for path, function, case in named:
        source = (ROOT / path).read_text()
        assert f"def {function}(" in source, (path, function)
        assert case is None or f'"{case}"' in source, (path, function, case)


def test_generation_options_need_a_decoder_model(saved, capsys):
    """`predict --gen-constraints` with a model that generates no labels, and a `--max-new-tokens` below 1."""
    line = one_line_error(capsys, [*predict_args(saved / "torch"), "--gen-constraints", "person"])
    assert_names(line, "gen_constraints", "only decoder models generate labels")
    line = one_line_error(capsys, [*predict_args(saved / "torch"), "--max-new-tokens", "0"])
    assert_names(line, "max_new_tokens must be >= 1, got 0")

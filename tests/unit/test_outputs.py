"""Outputs never destroy inputs or other models: `predict --output` refuses its input and replaces an old output
only once the new one is complete; a model folder is written whole, next to its destination, and replaces a
folder only when asked; a folder holding two models' weights is refused; what is written is readable by others."""

from __future__ import annotations

import os
import re
import runpy
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import gliner_jax.checkpoint_io as checkpoint_io
from gliner_jax.annotate import PredictOptions, Share, annotate_file
from gliner_jax.cli import main
from gliner_jax.model import GLiNER
from gliner_jax.training.config import ModelSection
from gliner_jax.training.model_init import build_model
from tests.utils.faults import ENCODER, GLINER, ROOT, assert_names, one_line_error, predict_args, save_tiny_model

LINES = "Marie Curie won the Nobel Prize.\nAda Lovelace wrote programs.\nAlan Turing was born in London.\n"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A tiny random GLiNER in gliner's layout (`torch/`) and ours (`native/`)."""
    return save_tiny_model(tmp_path_factory.mktemp("saved"))


def other_model() -> GLiNER:
    """A tiny GLiNER with other weights than `saved`'s."""
    return build_model(ModelSection(tokenizer=str(ROOT / "data/tiny/tokenizer"), encoder=ENCODER, gliner=GLINER), 1)


def predict_file(model: Path, source: Path, output: Path, *extra: str) -> list[str]:
    files = ["--file", str(source), "--output", str(output)]
    return ["predict", "--model", str(model), "--labels", "person", *files, *extra]


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink"])
def test_an_output_that_is_the_input_is_refused(saved, tmp_path, capsys, link):
    source = tmp_path / "in.txt"
    source.write_text(LINES)
    output = {"same": source, "symlink": tmp_path / "link.txt", "hardlink": tmp_path / "hard.txt"}[link]
    if link == "symlink":
        output.symlink_to(source)
    elif link == "hardlink":
        os.link(source, output)
    line = one_line_error(capsys, predict_file(saved / "native", source, output, "--overwrite"))
    assert_names(line, str(source), str(output), "is the input")
    assert source.read_text() == LINES
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted({source.name, output.name})


class FakeModel:
    """An entity model (no relations layer) that finds no entities; with `fail_after`, raises after that many chunks
    (a run that dies mid-way)."""

    config = SimpleNamespace(is_relex=False)

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after

    def inference_stream(
        self, chunks: Iterable[list[str]], *options: object, **named: object
    ) -> Iterator[list[list[dict]]]:
        for done, chunk in enumerate(chunks):
            if done == self.fail_after:
                raise RuntimeError("killed")
            yield [[] for _ in chunk]


def test_overwrite_keeps_the_old_output_until_the_new_one_is_complete(tmp_path):
    source, output = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text(LINES)
    output.write_text("old\n")
    options, share = PredictOptions(["person"]), Share(block_lines=1)
    with pytest.raises(RuntimeError, match="killed"):
        annotate_file(FakeModel(fail_after=1), source, output, options, share=share, overwrite=True, progress=False)
    assert output.read_text() == "old\n"
    annotate_file(FakeModel(), source, output, options, share=share, progress=False)  # resumes the interrupted run
    expected = "".join(f'{{"text": "{text}", "entities": []}}\n' for text in LINES.splitlines())
    assert output.read_text() == expected
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.txt", "out.jsonl"]

    output.write_text("old\n")
    annotate_file(FakeModel(), source, output, options, share=share, overwrite=True, progress=False)
    assert output.read_text() == expected
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.txt", "out.jsonl"]


def test_convert_into_another_model_is_refused_unless_overwrite(saved, tmp_path, capsys):
    other = tmp_path / "other"
    other_model().save_pretrained(other)
    destination = tmp_path / "out"
    assert main(["convert", str(saved / "torch"), str(destination), "--to", "jax"]) == 0
    line = one_line_error(capsys, ["convert", str(other), str(destination), "--to", "torch"])
    assert_names(line, str(destination), "--overwrite")
    assert sorted(path.name for path in destination.iterdir() if "safetensors" in path.name) == [
        "flax_params.safetensors"
    ]
    assert main(["convert", str(other), str(destination), "--to", "torch", "--overwrite"]) == 0
    assert not (destination / "flax_params.safetensors").exists()
    converted = checkpoint_io.read_tensors(destination)
    expected = checkpoint_io.read_tensors(other)
    assert converted.keys() == expected.keys()
    assert all(np.array_equal(converted[key], expected[key]) for key in expected)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["other", "out"]


def test_save_pretrained_replaces_a_model_folder_only_when_asked(saved, tmp_path):
    model = GLiNER.from_pretrained(saved / "torch")
    destination = tmp_path / "model"
    model.save_pretrained(destination, native=True)
    (destination / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=rf"{re.escape(str(destination))} is not empty.*overwrite"):
        model.save_pretrained(destination)
    assert (destination / "flax_params.safetensors").exists() and not (destination / "model.safetensors").exists()
    model.save_pretrained(destination, overwrite=True)
    assert not (destination / "flax_params.safetensors").exists() and not (destination / "notes.txt").exists()
    assert (destination / "model.safetensors").exists()
    link = tmp_path / "link"
    link.symlink_to(destination)
    model.save_pretrained(link, native=True, overwrite=True)  # the folder it names is replaced; the link stays
    assert link.is_symlink() and sorted(path.name for path in destination.iterdir() if "safetensors" in path.name) == [
        "flax_params.safetensors"
    ]
    link.unlink()

    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=rf"{re.escape(str(folder))} .*no gliner_config\.json"):
        model.save_pretrained(folder, overwrite=True)
    assert [path.name for path in folder.iterdir()] == ["notes.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model", "not-a-model"]


def test_a_failed_save_leaves_nothing(saved, tmp_path, monkeypatch):
    model = GLiNER.from_pretrained(saved / "torch")

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_io, "write_safetensors", fail)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_with_two_models_weights_is_refused(saved, tmp_path, capsys):
    folder = tmp_path / "both"
    GLiNER.from_pretrained(saved / "torch").save_pretrained(folder)
    other_model().save_pretrained(tmp_path / "other", native=True)
    os.replace(tmp_path / "other" / "flax_params.safetensors", folder / "flax_params.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors.*flax_params\.safetensors"):
        GLiNER.from_pretrained(folder)
    assert_names(one_line_error(capsys, predict_args(folder)), str(folder), "model.safetensors", "flax_params")


@pytest.mark.parametrize("native", [False, True])
def test_saved_files_are_readable_by_others(saved, tmp_path, native):
    destination = tmp_path / "model"
    GLiNER.from_pretrained(saved / "torch").save_pretrained(destination, native=native)
    assert stat.S_IMODE(destination.stat().st_mode) == 0o755
    weights = destination / ("flax_params.safetensors" if native else "model.safetensors")
    for path in (weights, destination / "gliner_config.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_the_trainer_replaces_its_own_export(saved, tmp_path):
    from gliner_jax.training.trainer import Trainer

    final = tmp_path / "final"
    Trainer.export(SimpleNamespace(host_model=lambda: GLiNER.from_pretrained(saved / "native"), is_chief=True), final)
    Trainer.export(SimpleNamespace(host_model=other_model, is_chief=True), final)  # a rerun: replaced, not refused
    exported = checkpoint_io.read_tensors(final)
    expected = checkpoint_io.state_to_torch(other_model().model, checkpoint_io.gliner_table(other_model().config))
    assert all(np.array_equal(exported[key], expected[key]) for key in expected)


def test_the_encoder_converter_refuses_a_folder_that_is_not_empty(tmp_path):
    convert = runpy.run_path(str(ROOT / "convert" / "hf_encoder.py"))["main"]
    destination = tmp_path / "encoder"
    destination.mkdir()
    (destination / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as ended:
        convert([str(tmp_path / "no-such-encoder"), str(destination)])
    assert_names(str(ended.value.code), f"error: {destination} is not empty", "--overwrite")
    with pytest.raises(SystemExit) as ended:
        convert([str(tmp_path / "no-such-encoder"), str(destination), "--overwrite"])
    assert_names(str(ended.value.code), f"error: {destination} holds no config.json")
    assert [path.name for path in destination.iterdir()] == ["notes.txt"]

"""Faults a user can cause, as the command line shows them: helpers for the tests that check them."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from gliner_jax.cli import main
from gliner_jax.training.config import ModelSection
from gliner_jax.training.model_init import build_model

ROOT = Path(__file__).resolve().parents[2]
ENCODER = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
GLINER = {"hidden_size": 16, "max_width": 4, "max_len": 64}


def save_tiny_model(directory: Path) -> Path:
    """A tiny random GLiNER (the shipped tiny tokenizer), saved in gliner's layout (`torch/`) and ours (`native/`)
    under `directory`."""
    section = ModelSection(tokenizer=str(ROOT / "data/tiny/tokenizer"), encoder=ENCODER, gliner=GLINER)
    model = build_model(section, seed=0)
    model.save_pretrained(directory / "torch")
    model.save_pretrained(directory / "native", native=True)
    return directory


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the command line as a user does; check that it ends with exit status 1 and one line on stderr (no
    traceback, no warning) and return that line."""
    with warnings.catch_warnings(record=True) as caught, pytest.raises(SystemExit) as ended:
        warnings.simplefilter("always")
        main(argv)
    code = ended.value.code
    assert isinstance(code, str), code  # the interpreter prints a string code to stderr and exits with status 1
    shown = [line.rsplit("\r", 1)[-1] for line in capsys.readouterr().err.split("\n")]  # what a terminal shows
    lines = [*filter(str.strip, shown), *code.splitlines()]
    lines += [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "Traceback" not in lines[0], lines[0]
    return lines[0]


def assert_names(line: str, *fragments: str) -> None:
    missing = [fragment for fragment in fragments if fragment not in line]
    assert not missing, f"{missing} not in {line!r}"


def predict_args(model: Path) -> list[str]:
    return ["predict", "--model", str(model), "--labels", "person", "Marie Curie won the Nobel Prize."]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])

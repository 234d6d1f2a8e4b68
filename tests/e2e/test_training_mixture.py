"""An end-to-end run of `gliner-jax train` on a mixture (`data.sources`) of a gliner file and a character-offset
file: the sources' sizes and weights in the log, the records drawn from each in metrics.jsonl, and a run resumed
from a checkpoint with the losses and counts of the uninterrupted one."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.utils.fresh import ROOT
from tests.utils.training_runs import SHORT, assert_same_losses, logged, resumed_from, run_training

pytestmark = pytest.mark.slow  # trains twice in subprocesses: about a minute


def char_record(record: dict) -> dict:
    """A gliner record as a character-offset record of its words joined by spaces."""
    starts, offset = [], 0
    for word in record["tokenized_text"]:
        starts.append(offset)
        offset += len(word) + 1
    entities = [[starts[s], starts[e] + len(record["tokenized_text"][e]), label] for s, e, label in record["ner"]]
    return {"text": " ".join(record["tokenized_text"]), "entities": entities}


def test_mixture_run_logs_its_sources_and_resumes_exactly(tmp_path, compilation_cache):
    train = ROOT / "data" / "tiny" / "train.jsonl"
    records = [json.loads(line) for line in train.read_text().splitlines()[:50]]
    chars = tmp_path / "chars.jsonl"
    chars.write_text("".join(json.dumps(char_record(record)) + "\n" for record in records))
    sources = f"data.sources=[{{path: {train}, weight: 3}}, {{path: {chars}, weight: 1, format: char}}]"
    run = tmp_path / "run"
    overrides = (*SHORT, "data.train=null", sources, "trainer.num_steps=6")
    result = run_training(run, compilation_cache, *overrides)
    assert "data source train: 400 examples, weight 3 (75.0% of the stream)" in result.stderr
    assert "data source chars: 50 examples, weight 1 (25.0% of the stream)" in result.stderr
    uninterrupted = logged(run)
    # 3:1 of 8 records a step: 6 from train.jsonl and 2 from chars.jsonl.
    assert [(r["data/train"], r["data/chars"]) for r in uninterrupted.values()] == [(6 * s, 2 * s) for s in range(1, 7)]

    shutil.rmtree(run / "checkpoints" / "6")
    metrics = run / "metrics.jsonl"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:4]))
    result = run_training(run, compilation_cache, *overrides)
    assert resumed_from(result.stderr) == [3]
    resumed = logged(run)
    assert_same_losses(resumed, uninterrupted, range(4, 7), 1e-6)
    assert [resumed[s]["data/chars"] for s in range(1, 7)] == [2 * s for s in range(1, 7)]

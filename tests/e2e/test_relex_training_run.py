"""A relation extraction model trained by `gliner-jax train` from the tiny YAML config (relations_layer set, relation
records): its loss terms are logged, its export loads in the `gliner` package strictly, gliner predicts the same
entities and relations from it as we do, and `evaluate` gives gliner's entity and relation P/R/F1."""

from __future__ import annotations

import json
from pathlib import Path

import gliner
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from gliner_jax import GLiNER
from tests.utils.fresh import ROOT
from tests.utils.training_runs import SHORT, logged, run_training

pytestmark = pytest.mark.slow

LABELS = ["person", "organization", "location", "date", "product", "event"]
RELATIONS = ["at", "in"]


def relation_records(path: Path) -> list[dict]:
    """The tiny training set with relations: each person "at" each organization and "in" each location of its
    sentence (gliner's records: [head, tail, type] indexing "ner")."""
    records = []
    for line in (ROOT / "data" / "tiny" / "train.jsonl").read_text().splitlines():
        record = json.loads(line)
        ner = record["ner"]
        kinds = {"organization": "at", "location": "in"}
        record["relations"] = [
            [i, j, kinds[tail[2]]]
            for i, head in enumerate(ner)
            for j, tail in enumerate(ner)
            if head[2] == "person" and tail[2] in kinds
        ]
        records.append(record)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return records


def gap_threshold(scores: list[float], keep: int) -> float:
    """A threshold keeping about `keep` of `scores`, halfway across a gap of at least 1e-4, ten times the tolerance
    the scores are compared with below (no score sits near it)."""
    values = np.sort(np.asarray(scores))[::-1]
    for k in range(min(keep, len(values) - 1), len(values) - 1):
        if values[k - 1] - values[k] > 1e-4:
            return float((values[k - 1] + values[k]) / 2)
    raise AssertionError(f"no gap in {values}")


def test_relation_model_trains_from_yaml_and_gliner_predicts_the_same(tmp_path, compilation_cache):
    records = relation_records(tmp_path / "train.jsonl")
    output_dir = tmp_path / "run"
    run_training(
        output_dir,
        compilation_cache,
        *SHORT,
        f"data.train={tmp_path / 'train.jsonl'}",
        "model.gliner.relations_layer=dot",
        "model.gliner.dropout=0",
        "trainer.num_steps=3",
        "trainer.export=true",
    )
    for record in (record for record in logged(output_dir).values() if "loss" in record):
        parts = record["loss/entity"] + record["loss/adjacency"] + record["loss/relation"]
        assert parts == pytest.approx(record["loss"], rel=1e-5)  # the coefficients are 1
        assert record["loss/entity"] == pytest.approx(record["loss/positive"] + record["loss/negative"], rel=1e-5)

    final = output_dir / "final"
    reference = gliner.GLiNER.from_pretrained(str(final), local_files_only=True)
    assert type(reference).__name__ == "UniEncoderSpanRelexGLiNER"
    assert set(load_file(final / "model.safetensors")) == set(reference.model.state_dict())  # a strict load
    ours = GLiNER.from_pretrained(final)
    texts = [" ".join(record["tokenized_text"]) for record in records[:6]]
    entities, _ = ours.inference(texts, LABELS, relations=RELATIONS, threshold=0.0, relation_threshold=1.0)
    threshold = gap_threshold([e["score"] for row in entities for e in row], keep=12)
    _, found = ours.inference(texts, LABELS, relations=RELATIONS, threshold=threshold, relation_threshold=0.0)
    relation_threshold = gap_threshold([r["score"] for row in found for r in row], keep=8)
    options = dict(threshold=threshold, adjacency_threshold=0.5, relation_threshold=relation_threshold)
    ours_out = ours.inference(texts, LABELS, relations=RELATIONS, **options)
    with torch.no_grad():
        ref_out = reference.inference(texts, LABELS, relations=RELATIONS, **options)
    assert sum(map(len, ours_out[1])) >= 4
    for mine, theirs in zip(ours_out, ref_out, strict=True):  # entities, then relations
        for our_row, ref_row in zip(mine, theirs, strict=True):
            assert [{k: v for k, v in e.items() if k != "score"} for e in our_row] == [
                {k: v for k, v in e.items() if k != "score"} for e in ref_row
            ]
            np.testing.assert_allclose([e["score"] for e in our_row], [e["score"] for e in ref_row], atol=1e-5)

    # evaluate: entity and relation P/R/F1 as gliner's relation model's evaluate gives them on the same records.
    gold = records[:24]
    scores = ours.evaluate(gold, labels=LABELS, relations=RELATIONS, **options)
    with torch.no_grad():
        (ner_output, _), (rel_output, _) = reference.evaluate(
            gold, flat_ner=True, entity_types=LABELS, relation_types=RELATIONS, **options
        )
    assert scores.relations.micro.predicted > 0
    assert (str(scores.entities), str(scores.relations)) == (ner_output.strip(), rel_output.strip())

"""Relation model training, the parts a user meets first: relation records checked one by one, packing refused in
one line, and the relation targets of a hand-checked record (gliner's reversed negatives; its random negatives are
checked against gliner in tests/parity/test_relex_training_vs_gliner.py)."""

from __future__ import annotations

import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gliner_jax.data_formats import check_record
from gliner_jax.training import data as data_lib
from gliner_jax.training.config import ModelSection
from gliner_jax.training.loss import LossConfig
from gliner_jax.training.model_init import build_model
from gliner_jax.training.step import loss_terms
from tests.utils.faults import ENCODER, GLINER, ROOT, assert_names, one_line_error

TINY = str(ROOT / "configs" / "tiny.yaml")
WORDS = ["Ada", "Lovelace", "met", "Charles", "Babbage", "in", "London", "."]
NER = [[0, 1, "person"], [3, 4, "person"], [6, 6, "location"]]


@pytest.mark.parametrize(
    ("relations", "fragment"),
    [
        ({"a": 1}, "'relations' must be a list of [head, tail, type]"),
        ([[0, 1]], "relations[0] must be [head, tail, type]"),
        ([[0, "1", "met"]], "relations[0]: head and tail must be integers"),
        ([[0, 1, 2]], "relations[0]: the type must be a string"),
        ([[0, 1, "met"], [0, 3, "in"]], "relations[1]: head 0 or tail 3 is not an index of the 3 'ner' entities"),
    ],
    ids=["not-a-list", "two-items", "string-index", "type-not-string", "index-out-of-range"],
)
def test_bad_relation_records_are_named(relations, fragment):
    assert fragment in check_record({"tokenized_text": WORDS, "ner": NER, "relations": relations})
    assert check_record({"tokenized_text": WORDS, "ner": NER, "relations": [[2, 0, "x"]], "rel_labels": ["x"]}) is None


def test_packing_a_relation_model_is_refused_in_one_line(tmp_path, capsys):
    argv = ["train", "--config", TINY, f"trainer.output_dir={tmp_path}", "data.dev=null"]
    line = one_line_error(capsys, [*argv, "model.gliner.relations_layer=dot", "data.packing=true"])
    assert_names(line, "data.packing", "relation extraction models", "relations_layer='dot'")


def test_relation_targets_of_a_hand_checked_record():
    """Entities in span order (a duplicate span once, an entity whose label is not sampled left out with its
    relations); positives; each positive's reverse as a negative, which fills the negatives wanted at ratio 1."""
    record = {
        "tokenized_text": WORDS,
        "ner": [[6, 6, "location"], [3, 4, "person"], [0, 1, "person"], [0, 1, "scientist"], [2, 2, "verb"]],
        "relations": [[2, 1, "met"], [2, 0, "in"], [1, 0, "in"], [4, 1, "does"], [3, 3, "is"]],
    }
    entities = [(0, 1, 1), (0, 1, 2), (3, 4, 1), (6, 6, 3)]  # entity_rows: (start, end, class id), sorted
    spans, pairs, rows = data_lib.relation_targets(
        record, entities, ["met", "in", "does"], random.Random(0), negative_ratio=(1, 1)
    )
    assert spans == [(0, 1), (3, 4), (6, 6)]
    assert rows == [(0, 1, 1), (0, 2, 2), (1, 2, 2)]  # "does" starts at an unsampled entity; "is" is a self-pair
    assert pairs == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]


def test_a_row_without_entities_keeps_attention_layers_finite():
    """relations_layer gat attends over a row's entities: a row with none (an example without entities, a padding
    row) would give NaN gradients. Its placeholder entity counts nowhere: the adjacency and relation terms are those
    of the batch without that row, and every gradient is finite."""
    tokenizer = str(ROOT / "data/tiny/tokenizer")
    model = build_model(
        ModelSection(tokenizer=tokenizer, encoder=ENCODER, gliner={**GLINER, "relations_layer": "gat"}), 0
    )
    record = {"tokenized_text": WORDS, "ner": NER, "relations": [[0, 1, "met"], [0, 2, "in"]]}
    empty = {"tokenized_text": ["nothing", "here", "."], "ner": [], "relations": []}
    graphdef, params, rest = nnx.split(model.model, nnx.Param, ...)

    @jax.jit
    @jax.grad
    def gradients(params, batch):
        return loss_terms(nnx.merge(graphdef, params, jax.tree.map(jnp.asarray, rest)), batch, LossConfig())[0]

    @jax.jit
    def terms(params, batch):
        return loss_terms(nnx.merge(graphdef, params, jax.tree.map(jnp.asarray, rest)), batch, LossConfig())[1]

    def batch(records):
        labels, relations = [["person", "location"]] * len(records), [["met", "in"]] * len(records)
        arrays = data_lib.collate(
            records, labels, model.processor, relation_sets=relations, rng=random.Random(0), batch_size=4
        )
        return {k: jnp.asarray(v) for k, v in arrays.items()}

    alone, mixed = terms(params, batch([record])), terms(params, batch([record, empty]))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(gradients(params, batch([record, empty]))))
    for name in ("adjacency", "relation"):
        assert float(alone[name]) > 0
        np.testing.assert_allclose(float(mixed[name]), float(alone[name]), rtol=1e-5)

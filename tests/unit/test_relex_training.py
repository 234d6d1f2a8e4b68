"""Relation model training, the parts a user meets first: relation records checked one by one, packed batches (the
unpacked loss and gradients), and the relation targets of a hand-checked record (gliner's reversed negatives; its
random negatives are checked against gliner in tests/parity/test_relex_training_vs_gliner.py)."""

from __future__ import annotations

import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gliner_jax.data_formats import check_record
from gliner_jax.packing import pack
from gliner_jax.training import data as data_lib
from gliner_jax.training.config import ModelSection
from gliner_jax.training.loss import LossConfig
from gliner_jax.training.model_init import build_model
from gliner_jax.training.step import loss_terms
from tests.utils.faults import ENCODER, GLINER, ROOT

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


def test_packed_relation_batches_give_the_unpacked_loss_and_gradients():
    """gliner 0.2.29 packs only at inference (inside its encoder), so a packed training batch is checked against the
    same examples unpacked: the loss, each of its terms and every gradient agree to 1e-5. Three examples of
    different lengths share two rows (one row holds two of them), with an empty slot beside the first. The slots
    are flattened before the heads, so the token model takes the same path (its packed relation stage is checked at
    inference in tests/parity/test_relex_vs_gliner.py)."""
    gliner = {**GLINER, "relations_layer": "gat"}
    model = build_model(ModelSection(tokenizer=str(ROOT / "data/tiny/tokenizer"), encoder=ENCODER, gliner=gliner), 0)
    records = [
        {"tokenized_text": WORDS, "ner": NER, "relations": [[0, 1, "met"], [0, 2, "in"]]},
        {
            "tokenized_text": ["Grace", "Hopper", "lived", "in", "New", "York"],
            "ner": [[0, 1, "person"], [4, 5, "location"]],
            "relations": [[0, 1, "in"]],
        },
        {"tokenized_text": ["nothing", "here", "."], "ner": [], "relations": []},
    ]
    labels, relations = [["person", "location"], ["location", "person"], ["person"]], [["met", "in"], ["in"], ["met"]]
    unpacked = data_lib.collate(records, labels, model.processor, relation_sets=relations, rng=random.Random(0))
    lengths = (unpacked["attention_mask"] > 0).sum(axis=1)
    packed = pack(unpacked, row_length=int(lengths[0] + lengths[2]), pad_id=model.processor.tokenizer.pad_token_id)
    assert packed["words_valid"].shape[:2] == (2, 2)
    model.model.eval()  # dropout off: packed rows draw other masks
    graphdef, params, rest = nnx.split(model.model, nnx.Param, ...)
    config = LossConfig(alpha=0.75, reduction="mean")

    @jax.jit
    def loss_and_gradients(params, batch):
        def loss(params):
            return loss_terms(nnx.merge(graphdef, params, jax.tree.map(jnp.asarray, rest)), batch, config)

        return jax.value_and_grad(loss, has_aux=True)(params)

    (loss, terms), grads = loss_and_gradients(params, {k: jnp.asarray(v) for k, v in unpacked.items()})
    (packed_loss, packed_terms), packed_grads = loss_and_gradients(
        params, {k: jnp.asarray(v) for k, v in packed.items()}
    )
    assert float(terms["relation"]) > 0 and float(terms["adjacency"]) > 0
    np.testing.assert_allclose(float(packed_loss), float(loss), rtol=1e-5)
    for name, value in terms.items():
        np.testing.assert_allclose(float(packed_terms[name]), float(value), rtol=1e-5, err_msg=name)
    leaves = zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(packed_grads), strict=True)
    for (path, gradient), other in leaves:
        np.testing.assert_allclose(np.asarray(other), np.asarray(gradient), rtol=1e-5, atol=1e-5, err_msg=str(path))


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

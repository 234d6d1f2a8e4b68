"""Relation model training, the parts a user meets first: relation records checked one by one, packing refused in
one line, and the relation targets of a hand-checked record (gliner's reversed negatives; its random negatives are
checked against gliner in tests/parity/test_relex_training_vs_gliner.py)."""

from __future__ import annotations

import random

import pytest

from gliner_jax.data_formats import check_record
from gliner_jax.training.data import relation_targets
from tests.utils.faults import ROOT, assert_names, one_line_error

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
    spans, pairs, rows = relation_targets(
        record, entities, ["met", "in", "does"], random.Random(0), negative_ratio=(1, 1)
    )
    assert spans == [(0, 1), (3, 4), (6, 6)]
    assert rows == [(0, 1, 1), (0, 2, 2), (1, 2, 2)]  # "does" starts at an unsampled entity; "is" is a self-pair
    assert pairs == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]

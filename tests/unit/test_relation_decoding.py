"""Relation models' host-side steps on hand-checked cases: which entities the relation stage reads (span and token
models, as gliner selects them) and how pairs become relations between decoded entities."""

from __future__ import annotations

import numpy as np
import pytest

from gliner_jax.decoding import decode_relations, select_entities, select_token_entities


def test_span_entities_are_spans_above_threshold_in_span_order():
    """probs [1, W=2, K=2, C=2]: only the batch's first label column counts; masked spans never do."""
    probs = np.zeros((1, 2, 2, 2), np.float32)
    probs[0, 1, 0, 0] = 0.9  # span (1, 1)
    probs[0, 0, 1, 0] = 0.6  # span (0, 1)
    probs[0, 0, 0, 1] = 0.9  # span (0, 0), label column 1: not read
    probs[0, 1, 1, 0] = 0.9  # span (1, 2): masked
    span_mask = np.array([[True, True, True, False]])
    index, mask, bounds = select_entities(probs, span_mask, 0.5, num_labels=1)
    assert index.shape == (1, 8) and mask.sum() == 2  # E: an entity bucket
    assert index[0, :2].tolist() == [1, 2]
    assert bounds[0, :2].tolist() == [[0, 1], [1, 1]]


def test_token_entities_need_start_end_and_every_inside():
    """Starts at words 0 and 1, ends at 1 and 2, inside at 0 and 1: (0, 1) and (1, 1); (0, 2) and (1, 2) lack the
    inside of word 2. Word 3 lies past the batch's words: not read."""
    probs = np.zeros((1, 4, 1, 3), np.float32)
    probs[0, [0, 1, 3], 0, 0] = 0.9  # start
    probs[0, [1, 2, 3], 0, 1] = 0.9  # end
    probs[0, [0, 1, 3], 0, 2] = 0.9  # inside
    bounds, mask = select_token_entities(probs, 0.5, num_words=3, num_labels=1)
    assert bounds[0, : mask.sum()].tolist() == [[0, 1], [1, 1]]


def test_relations_map_entities_to_their_first_decoded_span():
    """Decoded entities repeat the bounds (0, 1) (two labels): a pair's head is the first; a selected span that was
    not decoded (2, 2) takes part in no relation; classes past the row's relation count are ignored."""
    entities = [[(0, 1, 0, 0.9), (1, 1, 0, 0.8), (0, 1, 1, 0.7)]]
    bounds = np.array([[[0, 1], [1, 1], [2, 2]]])
    mask = np.ones((1, 3), bool)
    adjacency = np.array([[[0, 0.9, 0.9], [0.2, 0, 0.9], [0.9, 0.9, 0]]], np.float32)
    pair_probs = np.zeros((1, 3, 3, 3), np.float32)
    pair_probs[0, 0, 1] = [0.7, 0.4, 0.9]
    pair_probs[0, 1, 0] = [0.6, 0.6, 0.0]
    options = dict(adjacency_threshold=0.5, relation_threshold=0.5)
    (found,) = decode_relations(entities, bounds, mask, adjacency, pair_probs, [2], **options)
    assert found == [(0, 0, 1, pytest.approx(0.7))]
    (every_pair,) = decode_relations(entities, bounds, mask, None, pair_probs, [2], **options)  # relations_layer none
    assert every_pair == [(0, 0, 1, pytest.approx(0.7)), (1, 0, 0, pytest.approx(0.6)), (1, 1, 0, pytest.approx(0.6))]

"""A represent_spans token model's host-side decoding on a hand-checked batch, as gliner 0.2.29 decodes it
(`extract_spans_from_tokens`, then `TokenDecoder._decode_from_spans` and its greedy search): spans selected within
each row's words and labels, each span with every real label above threshold (compared as Python floats), a span found
twice giving its candidates twice."""

from __future__ import annotations

import numpy as np
import pytest

from gliner_jax.decoding import decode_token_spans, select_token_entities


@pytest.fixture
def batch():
    """Two rows, W = 3, C = 2. Row 0 (2 words, 2 labels): word 0 is a whole span of both labels (found twice), word 2
    (past its words) a span of label 0. Row 1 (2 words, 1 label): words 0..1 a span of label 0; word 1 a span of label
    1, which the row does not have."""
    probs = np.full((2, 3, 2, 3), 0.1, np.float32)
    probs[0, 0, :, :] = 0.9
    probs[0, 2, 0, :] = 0.9
    probs[1, 0, 0, [0, 2]] = 0.9
    probs[1, 1, 0, [1, 2]] = 0.9
    probs[1, 1, 1, :] = 0.9
    num_words, num_labels = np.array([2, 2]), np.array([2, 1])
    bounds, mask = select_token_entities(probs, 0.5, num_words, num_labels)
    span_probs = np.zeros((2, bounds.shape[1], 2), np.float32)
    span_probs[0, :2] = [0.7, 0.8]
    span_probs[1, 0] = [np.float32(0.3), 0.95]  # float32(0.3) > 0.3 as Python floats; label 1 is not the row's
    return bounds, mask, span_probs, num_labels


def test_spans_are_selected_within_each_rows_words_and_labels(batch):
    bounds, mask, _, _ = batch
    assert mask.sum(axis=1).tolist() == [2, 1]
    assert bounds[0, :2].tolist() == [[0, 0], [0, 0]] and bounds[1, 0].tolist() == [0, 1]


def test_span_probabilities_decode_as_gliner(batch):
    bounds, mask, span_probs, num_labels = batch
    flat = decode_token_spans(span_probs, bounds, mask, num_labels, threshold=0.3)
    assert flat == [[(0, 0, 1, pytest.approx(0.8))], [(0, 1, 0, pytest.approx(0.3))]]
    # multi_label: the same bounds never conflict, so the span found twice gives each label twice
    multi = decode_token_spans(span_probs, bounds, mask, num_labels, threshold=0.3, multi_label=True)
    assert [(s, e, c) for s, e, c, _ in multi[0]] == [(0, 0, 1), (0, 0, 1), (0, 0, 0), (0, 0, 0)]
    allowed = np.zeros((2, 3, 3), bool)
    allowed[:, 0, 0] = True  # input_spans: (0, 0) only
    assert decode_token_spans(span_probs, bounds, mask, num_labels, threshold=0.3, allowed=allowed)[1] == []

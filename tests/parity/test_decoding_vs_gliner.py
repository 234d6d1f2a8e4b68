"""Host decoders against the installed gliner decoders (SpanDecoder, TokenDecoder, greedy_search)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from gliner.decoding.decoder import Span, SpanDecoder, TokenDecoder
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gliner_jax.decoding import (
    decode_span_batch,
    decode_span_probs,
    decode_token_batch,
    decode_token_probs,
    greedy_select,
    merge_spans,
)

# Few distinct logits, so that probabilities (and span scores) tie often.
LOGITS = np.array([-3.0, -0.4, 0.0, 0.25, 0.85, 1.5, 4.0], np.float32)
PROBS = torch.sigmoid(torch.from_numpy(LOGITS)).numpy()
# Thresholds: round decimals, the exact float32 probabilities, and their shortest decimal spelling (the same float32
# but another float64), which separates float32 from float64 comparisons.
THRESHOLDS = sorted({0.1, 0.3, 0.5, 0.7, *map(float, PROBS), *(float(str(p)) for p in PROBS)})
SETTINGS = settings(max_examples=200, deadline=None)

modes = st.fixed_dictionaries(
    {"threshold": st.sampled_from(THRESHOLDS), "flat_ner": st.booleans(), "multi_label": st.booleans()}
)


def logit_arrays(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    return arrays(np.float32, shape, elements=st.sampled_from(LOGITS.tolist()))


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Exactly the probabilities the reference computes from these logits."""
    return torch.sigmoid(torch.from_numpy(logits)).numpy()


def labels(n: int) -> dict[int, str]:
    return {c + 1: f"label{c}" for c in range(n)}


def named(entities: list[tuple[int, int, int, float]], num_labels: int) -> list[tuple[int, int, str, float]]:
    """Our (start, end, class index, score) with the class as gliner names it: id_to_classes[index + 1]."""
    names = labels(num_labels)
    return [(start, end, names[index + 1], score) for start, end, index, score in entities]


def reference(decoder, logits: list[np.ndarray], num_words: list[int], num_labels: list[int], **mode) -> list:
    """The reference decoder on a batch of rows (right-padded to one shape), as (start, end, label, score)."""
    batch = torch.from_numpy(np.stack(logits))
    id_to_classes = [labels(n) for n in num_labels]
    if len(set(num_labels)) == 1:
        id_to_classes = id_to_classes[0]
    tokens = [["w"] * n for n in num_words]
    decoded = decoder(SimpleNamespace()).decode(tokens, id_to_classes, batch, **mode)
    return [[(s.start, s.end, s.entity_type, s.score) for s in row] for row in decoded]


@st.composite
def span_case(draw):
    shape = (draw(st.integers(1, 8)), draw(st.integers(1, 4)), draw(st.integers(1, 3)))
    return draw(logit_arrays(shape)), draw(modes)


@st.composite
def token_case(draw):
    shape = (draw(st.integers(1, 10)), draw(st.integers(1, 3)), 3)
    return draw(logit_arrays(shape)), draw(modes)


def test_logits_have_kernel_independent_probabilities():
    """Exact comparison needs the very probabilities the reference computes. torch's sigmoid can differ by an ulp
    between contiguous and strided inputs (the token decoder works on strided slices), but not for these logits."""
    grid = torch.from_numpy(np.tile(LOGITS, (64, 3, 1)))
    assert (torch.sigmoid(grid) == torch.from_numpy(PROBS)).all()
    assert (torch.sigmoid(grid.permute(2, 0, 1)[:, 5:]) == torch.from_numpy(PROBS)[:, None, None]).all()


@SETTINGS
@given(span_case())
def test_span_decoder_matches_gliner(case):
    logits, mode = case
    num_words, _, num_labels = logits.shape
    expected = reference(SpanDecoder, [logits], [num_words], [num_labels], **mode)[0]
    assert named(decode_span_probs(sigmoid(logits), num_words, num_labels, **mode), num_labels) == expected


@SETTINGS
@given(token_case())
def test_token_decoder_matches_gliner(case):
    logits, mode = case
    num_words, num_labels, _ = logits.shape
    expected = reference(TokenDecoder, [logits], [num_words], [num_labels], **mode)[0]
    assert named(decode_token_probs(sigmoid(logits), num_words, num_labels, **mode), num_labels) == expected


def span_candidates(probs: np.ndarray, threshold: float) -> list[tuple[int, int, int, float]]:
    """Every (start, end, class, score) the span decoder considers: prob > threshold (in float32), inside the row."""
    above = probs > np.float32(threshold)
    return [
        (s, s + w, c, float(probs[s, w, c])) for s, w, c in zip(*np.nonzero(above), strict=True) if s + w < len(probs)
    ]


def token_candidates(probs: np.ndarray, threshold: float) -> list[tuple[int, int, int, float]]:
    """Every (start, end, class, score) the token decoder considers: start and end probs > threshold (in float32),
    no inside prob on [start..end] below it (as a Python float); the score is the least of them all."""
    words, classes, _ = probs.shape
    found = []
    for s, e, c in np.ndindex(words, words, classes):
        inside = probs[s : e + 1, c, 2]
        if e >= s and min(probs[s, c, 0], probs[e, c, 1]) > np.float32(threshold) and float(inside.min()) >= threshold:
            found.append((s, e, c, float(min(inside.min(), probs[s, c, 0], probs[e, c, 1]))))
    return found


@SETTINGS
@given(st.sampled_from(["span", "token"]), st.data())
def test_merge_keeps_what_one_row_keeps(model, data):
    """Candidates of one row arriving in any order, some twice (as windows and label passes deliver them): merging
    keeps what gliner's decoder keeps from the row, exact ties included (its candidate order decides them)."""
    logits, mode = data.draw(span_case() if model == "span" else token_case())
    num_words, num_labels = logits.shape[0], logits.shape[-1 if model == "span" else 1]
    decoder, candidates_of = (SpanDecoder, span_candidates) if model == "span" else (TokenDecoder, token_candidates)
    expected = reference(decoder, [logits], [num_words], [num_labels], **mode)[0]
    found = named(candidates_of(sigmoid(logits), mode["threshold"]), num_labels)
    found = data.draw(st.permutations(found + data.draw(st.lists(st.sampled_from(found)) if found else st.just([]))))
    names = list(labels(num_labels).values())
    merged = merge_spans(found, names, mode["flat_ner"], mode["multi_label"], token_level=model == "token")
    assert merged == expected


def test_merge_order_differs_by_model():
    """Hand-checked: [2, 5] "a" and [2, 3] "b" tie. The token decoder generates by (start, class, end) and keeps
    [2, 5] "a"; the span decoder by (start, end, class) and keeps [2, 3] "b"."""
    found = [(2, 3, "b", 0.75), (2, 5, "a", 0.75)]
    assert merge_spans(found, ["a", "b"], True, False, token_level=True) == [(2, 5, "a", 0.75)]
    assert merge_spans(found, ["a", "b"], True, False) == [(2, 3, "b", 0.75)]


# (logit, threshold) where float32 and float64 comparisons disagree: 0.7005672 is above sigmoid(0.85) = 0.70056718...
# as float64 but equal to it as float32; 0.5621765 is below sigmoid(0.25) = 0.56217653... as float64, equal as float32.
EDGES = [(0.85, 0.7005672), (0.85, float(PROBS[4])), (0.25, 0.5621765), (0.25, float(PROBS[3]))]


@pytest.mark.parametrize(("logit", "threshold"), EDGES)
def test_threshold_comparisons(logit, threshold):
    """`prob > threshold` happens in float32 (torch): a prob equal to the threshold in float32 is never a candidate.
    The token model's inside check `inside < threshold` happens in float64 (Python floats)."""
    span_logits = np.full((2, 2, 1), logit, np.float32)
    expected = reference(SpanDecoder, [span_logits], [2], [1], threshold=threshold)[0]
    assert named(decode_span_probs(sigmoid(span_logits), 2, 1, threshold=threshold), 1) == expected == []
    token_logits = np.array([[[4.0, 4.0, logit]]], np.float32)  # sure start and end, inside prob on the edge
    expected = reference(TokenDecoder, [token_logits], [1], [1], threshold=threshold)[0]
    assert named(decode_token_probs(sigmoid(token_logits), 1, 1, threshold=threshold), 1) == expected
    assert len(expected) == (threshold != 0.7005672)


@st.composite
def padded_batch(draw, row_shape):
    """1-4 rows padded to one shape, with their own word and label counts (the rest is padding, never zeros)."""
    rows, words, labels_ = draw(st.integers(1, 4)), draw(st.integers(1, 7)), draw(st.integers(1, 3))
    logits = draw(logit_arrays((rows, *row_shape(words, labels_))))
    num_words = [draw(st.integers(1, words)) for _ in range(rows)]
    num_labels = [draw(st.integers(1, labels_)) for _ in range(rows)]
    return logits, num_words, num_labels, draw(modes)


@SETTINGS
@given(padded_batch(lambda w, c: (w, 3, c)))
def test_span_decoder_ignores_padding(case):
    """Each padded row decodes as the reference decodes it alone and within its batch; the batch decoder gives the
    same rows in one call."""
    logits, num_words, num_labels, mode = case
    batched = reference(SpanDecoder, list(logits), num_words, num_labels, **mode)
    for row, n, c, expected in zip(logits, num_words, num_labels, batched, strict=True):
        (unpadded,) = reference(SpanDecoder, [row[:n, :, :c]], [n], [c], **mode)
        assert expected == unpadded
        assert named(decode_span_probs(sigmoid(row), n, c, **mode), c) == expected
    got = decode_span_batch(sigmoid(logits), num_words, num_labels, **mode)
    assert [named(row, c) for row, c in zip(got, num_labels, strict=True)] == batched


@SETTINGS
@given(padded_batch(lambda w, c: (w, c, 3)))
def test_token_decoder_ignores_padding(case):
    logits, num_words, num_labels, mode = case
    batched = reference(TokenDecoder, list(logits), num_words, num_labels, **mode)
    for row, n, c, expected in zip(logits, num_words, num_labels, batched, strict=True):
        (unpadded,) = reference(TokenDecoder, [row[:n, :c]], [n], [c], **mode)
        assert expected == unpadded
        assert named(decode_token_probs(sigmoid(row), n, c, **mode), c) == expected
    got = decode_token_batch(sigmoid(logits), num_words, num_labels, **mode)
    assert [named(row, c) for row, c in zip(got, num_labels, strict=True)] == batched


def reference_greedy(starts: list[int], ends: list[int], scores: list[float], **mode) -> list[int]:
    spans = [Span(s, e, "x", p) for s, e, p in zip(starts, ends, scores, strict=True)]
    index = {id(span): i for i, span in enumerate(spans)}
    return [index[id(span)] for span in SpanDecoder(SimpleNamespace()).greedy_search(spans, **mode)]


@st.composite
def candidates(draw, max_size: int = 60, max_position: int = 12):
    spans = draw(
        st.lists(
            st.tuples(st.integers(0, max_position), st.integers(0, 5), st.sampled_from([0.2, 0.5, 0.6, 0.9, 1.0])),
            max_size=max_size,
        )
    )
    starts = [s for s, _, _ in spans]
    ends = [s + w for s, w, _ in spans]
    scores = [p for _, _, p in spans]
    return starts, ends, scores, draw(st.booleans()), draw(st.booleans())


@SETTINGS
@given(candidates())
def test_greedy_select_matches_greedy_search(case):
    starts, ends, scores, flat_ner, multi_label = case
    expected = reference_greedy(starts, ends, scores, flat_ner=flat_ner, multi_label=multi_label)
    kept = greedy_select(np.array(starts), np.array(ends), np.array(scores), flat_ner=flat_ner, multi_label=multi_label)
    assert kept.tolist() == expected


@pytest.mark.parametrize("flat_ner", [True, False])
@pytest.mark.parametrize("multi_label", [True, False])
def test_greedy_select_many_candidates(flat_ner, multi_label):
    rng = np.random.default_rng(int(flat_ner) * 2 + int(multi_label))
    starts = rng.integers(-50, 400, 3000)
    ends = starts + np.minimum(rng.geometric(0.15, 3000) - 1, 60)
    scores = rng.integers(0, 40, 3000) / 40  # many ties
    mode = {"flat_ner": flat_ner, "multi_label": multi_label}
    expected = reference_greedy(starts.tolist(), ends.tolist(), scores.tolist(), **mode)
    assert greedy_select(starts, ends, scores, **mode).tolist() == expected


def test_greedy_select_edge_cases():
    empty = np.zeros(0, np.int64)
    assert greedy_select(empty, empty, np.zeros(0)).tolist() == []
    with pytest.raises(ValueError, match="start <= end"):
        greedy_select(np.array([3]), np.array([2]), np.array([0.9]))
    assert decode_span_probs(np.ones((4, 2, 3), np.float32), 0, 3) == []
    assert decode_token_probs(np.ones((4, 3, 3), np.float32), 4, 0) == []
    ((start, end, label, score),) = decode_token_probs(np.full((1, 1, 3), 0.75, np.float32), 1, 1)
    assert [type(v) for v in (start, end, label, score)] == [int, int, int, float]

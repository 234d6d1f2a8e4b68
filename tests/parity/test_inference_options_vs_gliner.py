"""gliner's remaining inference options against gliner 0.2.29's own outputs: `input_spans`, `return_class_probs`,
`return_vectors`, `return_label_vectors`, on a span model, the token model and a (span) bi-encoder; their
interaction with long texts (windows, truncation) and packing; bad `input_spans`."""

from __future__ import annotations

import collections

import pytest

from gliner_jax import GLiNER
from gliner_jax.testing.builders import build_reference, quantile_thresholds
from gliner_jax.text.words import split_words
from gliner_jax.windows import window_starts
from tests.utils.gliner_parity import assert_same_detailed

TEXTS = [
    "Marie Curie won the Nobel Prize in Physics in 1903, and again in 1911!",
    "   ",
    "Apple",
    "Dr. Smith-Jones (WHO) met Angela Merkel in Geneva at 10:30am on Tuesday with 3 colleagues from the UN.",
]
LABELS = ["person", "award", "city name", "organization", "date", "time"]
# Per-text label lists of different sizes (class_probs ranks only a text's own labels; fewer than 5 give fewer).
PER_TEXT = [LABELS, ["person"], ["organization", "city name", "date"], LABELS[::-1]]
KINDS = {
    "span": dict(span_mode="markerV0", hidden_size=48, max_width=4, max_len=48),
    "token": dict(span_mode="token_level", hidden_size=48, max_len=48),
    "bi": dict(span_mode="markerV0", hidden_size=64, max_width=4),
}
DETAILS = dict(return_class_probs=True, return_vectors=True, return_label_vectors=True)
# Character spans per text: aligned ones, one not on word boundaries (dropped), one wider than max_width (a span
# model never classifies it, the token model may), none for the third text, a one-word one.
INPUT_SPANS = [
    [{"start": 0, "end": 11}, {"start": 2, "end": 11}, {"start": 16, "end": 31}, {"start": 20, "end": 41}],
    [{"start": 0, "end": 3}],
    [],
    [{"start": 0, "end": 15}, {"start": 26, "end": 39}, {"start": 43, "end": 49}, {"start": 0, "end": 3}],
]


@pytest.fixture(scope="module", params=list(KINDS))
def models(request, gliner_backbone, labels_backbone, tmp_path_factory):
    """(reference gliner model, our GLiNER over the same directory, a threshold at the 0.9 quantile of its scores)."""
    directory = tmp_path_factory.mktemp(request.param)
    config = dict(KINDS[request.param])
    if request.param == "bi":
        config["labels_encoder"] = str(labels_backbone)
    reference = build_reference(gliner_backbone, directory, logit_scale=4.0, **config)
    threshold = quantile_thresholds(reference, [t for t in TEXTS if t.strip()], LABELS, (0.9,))[0]
    return reference, GLiNER.from_pretrained(directory), threshold


def predictions(reference, ours, labels, **options) -> tuple[list[list[dict]], list[list[dict]]]:
    """(ours, gliner's) entities of TEXTS; a bi-encoder's from gliner's label embeddings (one label list)."""
    if ours.config.is_bi_encoder:
        embeddings = reference.encode_labels(LABELS)
        expected = reference.batch_predict_with_embeds(TEXTS, embeddings, LABELS, **options)
        return ours.batch_predict_with_embeds(TEXTS, embeddings.numpy(), LABELS, **options), expected
    return ours.inference(TEXTS, labels, **options), reference.inference(TEXTS, labels, **options)


def test_details_match_gliner(models):
    """class_probs (none from gliner's token model), vector and label_vector of every entity, nested and
    multi-label; per-text labels (uni-encoders) or precomputed label embeddings (bi-encoder)."""
    reference, ours, threshold = models
    got, expected = predictions(
        reference, ours, PER_TEXT, threshold=threshold, flat_ner=False, multi_label=True, **DETAILS
    )
    assert sum(map(len, expected)) > 2
    assert ("class_probs" in expected[0][0]) == (ours.config.span_mode != "token_level")
    for got_row, expected_row in zip(got, expected, strict=True):
        assert_same_detailed(got_row, expected_row)


def test_input_spans_match_gliner(models):
    """Only the given spans are classified, as gliner converts, drops and masks them (with the details)."""
    reference, ours, threshold = models
    got, expected = predictions(reference, ours, LABELS, threshold=threshold / 4, input_spans=INPUT_SPANS, **DETAILS)
    assert len(expected[0]) >= 2 and len(expected[3]) >= 2
    for got_row, expected_row in zip(got, expected, strict=True):
        assert_same_detailed(got_row, expected_row)
    if not ours.config.is_bi_encoder:
        one = ours.predict_entities(TEXTS[3], LABELS, threshold=threshold / 4, input_spans=INPUT_SPANS[3:], **DETAILS)
        assert_same_detailed(one, expected[3])


def test_long_texts_and_packing(models):
    """A long text: truncated, gliner's details; read in windows (nested, multi-label: some entities are found in
    two windows), each entity's details are gliner's on the window that gave its score, and input_spans reach every
    window (the entities found, given as input spans, come back). Packed rows give the unpacked details."""
    reference, ours, threshold = models
    if ours.config.span_mode != "markerV0" or ours.config.is_bi_encoder:
        pytest.skip("one model kind suffices: windows and packing make the same rows for every kind")
    # one space between words: a window's text is then its words joined, as the model reads them
    text = " ".join(word for word, _, _ in split_words(" ".join([TEXTS[0], TEXTS[3]] * 4)))
    words = split_words(text)
    with pytest.warns(UserWarning):
        expected = reference.predict_entities(text, LABELS, threshold=threshold, **DETAILS)
    with pytest.warns(UserWarning, match="only the first 48"):
        assert_same_detailed(
            ours.predict_entities(text, LABELS, threshold=threshold, truncate=True, **DETAILS), expected
        )

    nested = dict(threshold=threshold, flat_ner=False, multi_label=True, **DETAILS)
    got = ours.predict_entities(text, LABELS, **nested)
    windows = [(first, min(first + 48, len(words))) for first in window_starts(len(words), 48, ours.config.max_width)]
    assert len(windows) >= 2 and got[-1]["start"] >= words[windows[1][0]][1]  # entities past the first window
    in_windows, found_in = {}, collections.Counter()
    for first, stop in windows:
        offset = words[first][1]
        window_text = text[offset : words[stop - 1][2]]
        for entity in reference.predict_entities(window_text, LABELS, **nested):
            key = (entity["start"] + offset, entity["end"] + offset, entity["label"])
            found_in[key] += 1
            if key not in in_windows or entity["score"] > in_windows[key]["score"]:
                in_windows[key] = {**entity, "start": key[0], "end": key[1], "text": text[key[0] : key[1]]}
    keys = [(e["start"], e["end"], e["label"]) for e in got]
    assert sum(found_in[key] > 1 for key in keys) > 0  # some found in two windows: details from the better one
    assert_same_detailed(got, [in_windows[key] for key in keys])

    spans = [{"start": e["start"], "end": e["end"]} for e in got]
    restricted = ours.predict_entities(text, LABELS, input_spans=[spans], **nested)
    assert_same_detailed(restricted, got)

    ours.pack_tokens = 64
    try:
        packed = ours.inference(TEXTS, LABELS, threshold=threshold, **DETAILS)
    finally:
        ours.pack_tokens = None
    for packed_row, row in zip(packed, ours.inference(TEXTS, LABELS, threshold=threshold, **DETAILS), strict=True):
        assert_same_detailed(packed_row, row)


def test_bad_input_spans(models):
    _, ours, _ = models
    if ours.config.span_mode != "markerV0" or ours.config.is_bi_encoder:
        pytest.skip("checked before the model runs: one model kind suffices")
    with pytest.raises(ValueError, match=r"one list of \{start, end\} spans per text \(2 texts\)"):
        ours.inference(TEXTS[:2], LABELS, input_spans=[[]])
    with pytest.raises(ValueError, match=r"input_spans\[0\]\[1\]: \{'start': 0\} is not a \{start, end\} dict"):
        ours.inference(TEXTS[:1], LABELS, input_spans=[[{"start": 0, "end": 11}, {"start": 0}]])
    with pytest.raises(ValueError, match=r"input_spans\[0\]\[0\]: \(0, 11\)"):
        ours.predict_entities(TEXTS[0], LABELS, input_spans=[[(0, 11)]])
    with pytest.raises(ValueError, match=r"one list of \{start, end\} spans per text \(1 texts\)"):
        ours.predict_entities(TEXTS[0], LABELS, input_spans=[{"start": 0, "end": 11}])  # as gliner, one list per text

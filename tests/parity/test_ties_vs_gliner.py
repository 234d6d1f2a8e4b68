"""Exact ties: where candidates have the same score, decoding keeps the one gliner keeps, through inference (one
prompt, label passes merged, long-text windows and label passes merged) and evaluate, with the span and the token
decoders; and a relation model's entities and relations (span and token models). The reference models here have
constant logits (the last head layer's weights zeroed), so every candidate ties, bit for bit, in gliner and here alike;
which ones are kept is decided by tie-breaking alone."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from gliner_jax import GLiNER
from gliner_jax.testing.builders import build_reference
from gliner_jax.text.words import split_words
from gliner_jax.windows import plan_model_rows

TEXTS = [
    "Marie Curie won the Nobel Prize in Physics in 1903.",
    "Angela Merkel met Barack Obama in Berlin.",
    "Apple",
]
# 10 labels: at max_len 16 they run in two passes (7 + 3) led by "person" and "organization"; a merge that broke
# ties by label name would keep "organization" where gliner, reading all labels in one prompt, keeps "person".
# At max_len 8 the first text (11 words) is read in two windows (words 0-7 and 4-10), each in four label passes.
LABELS = ["person", "award", "city name", "date", "year", "science", "country", "organization", "money", "event"]
# The last Linear of each head, whose weights are zeroed and bias set: logits = that bias (token model) or the dot
# product of the span bias with the prompt bias (span model), the same for every span, word and label.
# One span model and the token model: the span decoder breaks ties the same way whatever span mode made the logits.
CONSTANT_HEADS = {
    "markerV0": {"span_rep_layer.span_rep_layer.out_project.3": 0.1, "prompt_rep_layer.3": 0.2},
    "token_level": {"scorer.out_mlp.3": 1.0},
}


@pytest.fixture(scope="module", params=list(CONSTANT_HEADS))
def tied(request, gliner_backbone, tmp_path_factory):
    """(reference gliner model with constant logits, our model over its directory)."""
    directory = tmp_path_factory.mktemp(f"tied_{request.param}")
    reference = build_reference(gliner_backbone, directory, span_mode=request.param, hidden_size=48, max_width=4)
    modules = dict(reference.model.named_modules())
    with torch.no_grad():
        for name, bias in CONSTANT_HEADS[request.param].items():
            modules[name].weight.zero_()
            modules[name].bias.fill_(bias)
    reference.save_pretrained(directory)
    return reference, GLiNER.from_pretrained(directory)


def spans(rows: list[list[dict]]) -> list[list[tuple[int, int, str]]]:
    return [[(e["start"], e["end"], e["label"]) for e in row] for row in rows]


def with_max_len(model: GLiNER, max_len: int) -> GLiNER:
    return GLiNER(model.model, dataclasses.replace(model.config, max_len=max_len), model.tokenizer)


# max_len: gliner reads every text and label in one row (its max_len is 384); ours runs the rows of `ROWS`.
MAX_LENS = pytest.mark.parametrize("max_len", [48, 16, 8], ids=["one_prompt", "label_passes", "windows"])
ROWS = {48: 3, 16: 6, 8: 16}  # 1 row per text; 2 label passes each; 4 passes each, the first text in 2 windows


def test_every_candidate_ties(tied):
    reference, ours = tied
    prepared = reference.prepare_batch(TEXTS, LABELS)
    batch = reference.collate_batch(prepared["input_x"], prepared["entity_types"])
    with torch.no_grad():
        assert np.unique(torch.sigmoid(reference.run_batch(batch).logits).numpy()).size == 1
    _, logits = ours.batch_logits(TEXTS, LABELS, bucket=False)
    assert np.unique(logits).size == 1


@MAX_LENS
@pytest.mark.parametrize(("flat_ner", "multi_label"), [(True, False), (True, True), (False, False), (False, True)])
def test_ties_keep_what_gliner_keeps(tied, max_len, flat_ner, multi_label):
    reference, ours = tied
    if max_len == 8 and not flat_ner and reference.config.span_mode == "token_level":
        pytest.skip("nested token-level spans longer than a window (gliner keeps [0, 10]) are not found in windows")
    ours = with_max_len(ours, max_len)
    words = [split_words(text) for text in TEXTS]
    planned = plan_model_rows(ours.processor, words, [LABELS] * len(TEXTS), truncate=False)
    assert len(list(planned)) == ROWS[max_len]
    options = dict(threshold=0.5, flat_ner=flat_ner, multi_label=multi_label)
    expected = reference.inference(TEXTS, LABELS, **options)
    got = ours.inference(TEXTS, LABELS, **options)
    assert {e["label"] for row in expected for e in row} == ({"person"} if not multi_label else set(LABELS))
    assert spans(got) == spans(expected)


@pytest.mark.parametrize(
    "max_len",
    [48, pytest.param(16, marks=pytest.mark.slow), pytest.param(8, marks=pytest.mark.slow)],
    ids=["one_prompt", "label_passes", "windows"],
)
def test_evaluate_on_ties_matches_gliner(tied, max_len):
    """Gold gives each word one of three labels; which tied label is kept decides the score."""
    reference, ours = tied
    words = [text.replace(".", " .").split() for text in TEXTS]
    examples = [{"tokenized_text": row, "ner": [[i, i, LABELS[i % 3]] for i in range(len(row))]} for row in words]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        line, f1 = reference.evaluate(examples, flat_ner=True, threshold=0.5, entity_types=LABELS, batch_size=2)
    result = with_max_len(ours, max_len).evaluate(examples, threshold=0.5, batch_size=2, labels=LABELS)
    assert 0 < result.f1 < 1
    assert str(result) == line.rstrip("\n")
    assert result.f1 == pytest.approx(f1, abs=1e-12)


@pytest.mark.parametrize("max_len", [48, 8], ids=["one_prompt", "windows"])
def test_described_labels_tie_as_listed(tied, max_len):
    """{label: description}: the model reads the descriptions; of tied labels the one listed first is kept and
    returned by its name, also when windows and label passes are merged."""
    reference, ours = tied
    described = {label: f"a kind of {label}" for label in reversed(LABELS)}
    expected = reference.inference(TEXTS, described, threshold=0.5)
    got = with_max_len(ours, max_len).inference(TEXTS, described, threshold=0.5)
    assert {e["label"] for row in expected for e in row} == {LABELS[-1]}
    assert spans(got) == spans(expected)


# Relation models whose every score ties at exactly 0.5: the entity head (the span representations; the token
# model's scorer and the TokenMarker its entities are read with) and the pair representation are zeroed (their last
# Linear's weights and biases), so every entity logit, every "dot" adjacency sigmoid(0) and every relation logit is 0.
# Which entities the relation stage reads, which pairs and labels it keeps, in which order, and which decoded entity a
# relation names are decided by order and by the thresholds' strict ">" alone.
ZEROED_RELEX = ("span_rep_layer.span_rep_layer.out_project.3", "scorer.out_mlp.3", "pair_rep_layer.3")
RELEX_LABELS = ["person", "award", "city"]
RELATIONS = ["won", "born in", "located in"]


@pytest.fixture(scope="module")
def tied_relex(request, gliner_backbone, tmp_path_factory):
    """(gliner relation model of span mode `request.param`, relations_layer "dot", whose every score is 0.5; our
    model over its directory)."""
    directory = tmp_path_factory.mktemp(f"tied_relex_{request.param}")
    options = dict(span_mode=request.param, hidden_size=32, max_width=4, relations_layer="dot")
    reference = build_reference(gliner_backbone, directory, **options)
    modules = dict(reference.model.named_modules())
    with torch.no_grad():
        for name in ZEROED_RELEX:
            if name in modules:
                modules[name].weight.zero_()
                modules[name].bias.zero_()
    reference.save_pretrained(directory)
    return reference, GLiNER.from_pretrained(directory)


def scored(rows: list[list[dict]]) -> tuple[list[list[dict]], list[float]]:
    """The dicts without their scores, and the scores."""
    items = [[{k: v for k, v in item.items() if k != "score"} for item in row] for row in rows]
    return items, [item["score"] for row in rows for item in row]


# Every threshold case on the span model; on the token model (its own entity selection: every start-end pair of a
# label, duplicates kept) the cases that keep everything and the one that keeps nothing.
KEPT = {"all": (True, True), "no pair": (True, False), "no relation": (True, False), "nothing": (False, False)}


@pytest.mark.parametrize(
    ("tied_relex", "flat_ner", "multi_label", "thresholds", "kept"),
    [
        ("markerV0", True, False, (0.4, 0.4, 0.4), "all"),
        ("markerV0", False, True, (0.4, 0.4, 0.4), "all"),
        ("markerV0", True, False, (0.4, 0.5, 0.4), "no pair"),
        ("markerV0", False, False, (0.4, 0.4, 0.5), "no relation"),
        ("markerV0", True, False, (0.5, 0.4, 0.4), "nothing"),
        ("token_level", True, False, (0.4, 0.4, 0.4), "all"),
        ("token_level", False, True, (0.4, 0.4, 0.4), "all"),
        ("token_level", True, False, (0.5, 0.4, 0.4), "nothing"),
    ],
    indirect=["tied_relex"],
)
def test_relation_ties_keep_what_gliner_keeps(tied_relex, flat_ner, multi_label, thresholds, kept):
    """Entities, relations and their order as gliner's `inference(..., relations=)` gives them when everything ties:
    flat (tied entities compete in the greedy search) and nested multi-label (every span and label), every pair of
    the relation stage's entities (every candidate span) and every relation label tied; a threshold at exactly the
    tied score keeps nothing (">")."""
    reference, ours = tied_relex
    threshold, adjacency_threshold, relation_threshold = thresholds
    options = dict(
        threshold=threshold,
        adjacency_threshold=adjacency_threshold,
        relation_threshold=relation_threshold,
        flat_ner=flat_ner,
        multi_label=multi_label,
        batch_size=2,
    )
    relations = [RELATIONS, RELATIONS[:2], RELATIONS]
    expected = reference.inference(TEXTS, [RELEX_LABELS] * len(TEXTS), relations=relations, **options)
    got = ours.inference(TEXTS, [RELEX_LABELS] * len(TEXTS), relations=relations, **options)
    assert tuple(sum(map(len, found)) > 0 for found in expected) == KEPT[kept]
    for got_rows, want_rows in zip(got, expected, strict=True):
        got_items, got_scores = scored(got_rows)
        want_items, want_scores = scored(want_rows)
        assert got_items == want_items
        assert set(want_scores) <= {0.5}
        np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=1e-6)

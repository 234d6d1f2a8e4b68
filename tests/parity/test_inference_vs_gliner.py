"""predict_entities / inference against the gliner package's, long documents, static shapes, bad input, CLI."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from gliner.decoding.decoder import Span, SpanDecoder

from gliner_jax import GLiNER
from gliner_jax.cli import main
from gliner_jax.testing.builders import build_backbone, build_reference, quantile_thresholds
from gliner_jax.text.words import split_words
from gliner_jax.windows import token_windows, window_starts
from tests.utils.encoders import TINY_V3
from tests.utils.entities import assert_same_entities
from tests.utils.programs import compiled_programs

TEXTS = [
    "Marie Curie won the Nobel Prize in Physics in 1903, and again in 1911!",
    "Zürich, São Paulo & Kraków: Müller-Lüdenscheidt_GmbH paid $1,200.50 on 3/14/2015.",
    "   ",
    "Apple",
    "Dr. Smith-Jones (WHO) met Angela Merkel in Geneva at 10:30am on Tuesday with 3 colleagues from the UN.",
    "",
]
LABELS = ["person", "award", "city name", "organization", "date"]
MODES = {
    "span": dict(span_mode="markerV0", hidden_size=48, max_width=4, max_len=48),
    "token": dict(span_mode="token_level", hidden_size=48, max_len=48),
}


# One threshold, low enough for many overlapping candidates: higher ones run the same decoding on fewer.
QUANTILES = (0.9,)


@pytest.fixture(scope="module", params=list(MODES))
def models(request, gliner_backbone, tmp_path_factory):
    """(reference gliner model, our GLiNER over the same directory, thresholds at QUANTILES)."""
    directory = tmp_path_factory.mktemp(request.param)
    reference = build_reference(gliner_backbone, directory, logit_scale=4.0, **MODES[request.param])
    return reference, GLiNER.from_pretrained(directory), quantile_thresholds(reference, TEXTS, LABELS, QUANTILES)


@pytest.mark.parametrize("quantile", range(len(QUANTILES)))
@pytest.mark.parametrize(("flat_ner", "multi_label"), [(True, False), (False, False), (False, True), (True, True)])
def test_predict_entities_matches_reference(models, quantile, flat_ner, multi_label):
    reference, ours, thresholds = models
    threshold = thresholds[quantile]
    expected = reference.inference(TEXTS, LABELS, threshold=threshold, flat_ner=flat_ner, multi_label=multi_label)
    got = ours.inference(TEXTS, LABELS, threshold=threshold, flat_ner=flat_ner, multi_label=multi_label, batch_size=4)
    assert sum(map(len, expected)) > 0  # the comparison is not between empty lists
    for ours_row, ref_row in zip(got, expected, strict=True):
        assert_same_entities(ours_row, ref_row)
    options = dict(threshold=threshold, flat_ner=flat_ner, multi_label=multi_label)
    assert_same_entities(
        ours.predict_entities(TEXTS[4], LABELS, **options), reference.predict_entities(TEXTS[4], LABELS, **options)
    )


def test_per_text_labels_and_duplicates(models):
    reference, ours, thresholds = models
    labels = [["person", "award", "person"], ["city name", "date"], ["x"], ["organization"], LABELS, ["date"]]
    deduplicated = [list(dict.fromkeys(group)) for group in labels]
    expected = reference.inference(TEXTS, deduplicated, threshold=thresholds[0])
    assert sum(map(len, expected)) > 0
    for ours_row, ref_row in zip(ours.inference(TEXTS, labels, threshold=thresholds[0]), expected, strict=True):
        assert_same_entities(ours_row, ref_row)


DESCRIBED = {
    "person": "a human being",
    "city name": "a city",
    "organization": "a company, agency or institution",
    "date": "date",
}


def test_label_descriptions_match_reference(models):
    """{label: description}: the model reads the descriptions, entities carry the labels; one mapping for all
    texts, or per text a mapping or a list, as gliner takes them."""
    reference, ours, _ = models
    threshold = quantile_thresholds(reference, TEXTS, list(DESCRIBED.values()), QUANTILES)[0]
    expected = reference.inference(TEXTS, DESCRIBED, threshold=threshold)
    assert sum(map(len, expected)) > 0
    assert {e["label"] for row in expected for e in row} <= set(DESCRIBED)
    for ours_row, ref_row in zip(ours.inference(TEXTS, DESCRIBED, threshold=threshold), expected, strict=True):
        assert_same_entities(ours_row, ref_row)
    assert_same_entities(
        ours.predict_entities(TEXTS[4], DESCRIBED, threshold=threshold),
        reference.predict_entities(TEXTS[4], DESCRIBED, threshold=threshold),
    )
    per_text = [DESCRIBED, ["person", "award"], {"x": "y"}, {"company": "organization"}, DESCRIBED, ["date"]]
    expected = reference.inference(TEXTS, per_text, threshold=threshold)
    for ours_row, ref_row in zip(ours.inference(TEXTS, per_text, threshold=threshold), expected, strict=True):
        assert_same_entities(ours_row, ref_row)


def long_document(words: int) -> str:
    paragraph = TEXTS[0] + " " + TEXTS[4] + " " + TEXTS[1]
    repeats = -(-words // len(split_words(paragraph)))
    return " ".join([paragraph] * repeats)


def reference_in_windows(
    reference, text: str, windows: list[tuple[int, int]], labels: list[str], threshold: float
) -> list[tuple[int, int, str]]:
    """(start, end, label) of the reference's entities on each word window's text, merged by its greedy selection
    (flat), as character offsets into `text`."""
    words = split_words(text)
    spans = []
    for first, stop in windows:
        window_text = " ".join(w for w, _, _ in words[first:stop])
        offsets = split_words(window_text)
        start_of = {start: i for i, (_, start, _) in enumerate(offsets)}
        end_of = {end: i for i, (_, _, end) in enumerate(offsets)}
        for e in reference.predict_entities(window_text, labels, threshold=threshold):
            spans.append(Span(first + start_of[e["start"]], first + end_of[e["end"]], e["label"], e["score"]))
    merged = SpanDecoder(reference.config).greedy_search(spans, flat_ner=True)
    return [(words[s.start][1], words[s.end][2], s.entity_type) for s in merged]


def test_truncate_option_reproduces_reference(models):
    reference, ours, thresholds = models
    text = long_document(300)
    with pytest.warns(UserWarning):
        expected = reference.predict_entities(text, LABELS, threshold=thresholds[0])
    with pytest.warns(UserWarning, match="only the first 48 are read"):
        got = ours.predict_entities(text, LABELS, threshold=thresholds[0], truncate=True)
    assert len(expected) > 0
    assert_same_entities(got, expected)


def test_long_document_is_read_to_the_end(models):
    """Entities are found throughout a 20,000-word document, not only in its first max_len words."""
    _, ours, thresholds = models
    text = long_document(20_000)
    words = split_words(text)
    assert len(words) >= 20_000
    entities = ours.predict_entities(text, LABELS, threshold=thresholds[0])
    last_char = words[-200][1]  # the final 200 words
    assert any(e["start"] >= last_char for e in entities)
    assert all(text[e["start"] : e["end"]] == e["text"] for e in entities)
    assert [e["start"] for e in entities] == sorted(e["start"] for e in entities)
    for previous, current in itertools.pairwise(entities):  # flat NER: no overlaps after merging
        assert previous["end"] <= current["start"]


@pytest.mark.parametrize("flat_ner", [True, False])
def test_label_passes_match_reference_per_pass_merged(gliner_backbone, tmp_path_factory, flat_ner):
    """max_len 16 fits 7 labels in a prompt (15 words): 7 labels run in one pass, exactly as the reference's;
    10 labels run in 2 passes (7 + 3), merged as the reference's greedy would merge its passes' entities."""
    directory = tmp_path_factory.mktemp("short_prompt")
    reference = build_reference(gliner_backbone, directory, logit_scale=4.0, **{**MODES["span"], "max_len": 16})
    ours = GLiNER.from_pretrained(directory)
    labels = ["person", "award", "city name", "date", "year", "science", "country", "organization", "money", "event"]
    text = TEXTS[0]
    words = split_words(text)
    assert len(words) == 16  # one window: only the labels are split
    threshold = quantile_thresholds(reference, [text], labels, QUANTILES)[0]
    options = dict(threshold=threshold, flat_ner=flat_ner)
    single = reference.predict_entities(text, labels[:7], **options)
    assert len(single) > 0
    assert_same_entities(ours.predict_entities(text, labels[:7], **options), single)

    start_of = {w[1]: i for i, w in enumerate(words)}
    end_of = {w[2]: i for i, w in enumerate(words)}
    spans = []
    for begin in range(0, len(labels), 7):
        for e in reference.predict_entities(text, labels[begin : begin + 7], **options):
            spans.append(
                Span(start=start_of[e["start"]], end=end_of[e["end"]], entity_type=e["label"], score=e["score"])
            )
    merged = SpanDecoder(reference.config).greedy_search(spans, flat_ner=flat_ner)
    got = ours.predict_entities(text, labels, **options)
    assert any(s.entity_type in labels[7:] for s in spans)  # the second pass has candidates
    assert [(start_of[e["start"]], end_of[e["end"]], e["label"]) for e in got] == [
        (s.start, s.end, s.entity_type) for s in merged
    ]


def test_absolute_positions_bound_buckets_and_windows(tmp_path_factory):
    """An encoder with absolute position embeddings (40 here) reads inputs of 33-40 tokens, which the 32-token
    buckets would pad to 64, past its table, as the reference does; a longer text is read in windows that fit
    (the reference fails on it), and with truncate=True it is refused by name."""
    backbone = build_backbone(
        tmp_path_factory.mktemp("absolute"), {**TINY_V3, "position_biased_input": True, "max_position_embeddings": 40}
    )
    directory = tmp_path_factory.mktemp("absolute_gliner")
    reference = build_reference(backbone, directory, logit_scale=4.0, **MODES["span"])
    ours = GLiNER.from_pretrained(directory)
    labels = ["person", "date"]
    words = [w for w, _, _ in split_words(long_document(40))]

    def num_tokens(n: int) -> int:
        return len(ours.tokenizer([*ours.processor.prompt(labels), *words[:n]], is_split_into_words=True)["input_ids"])

    fits = max(n for n in range(1, 40) if num_tokens(n) <= 40)
    assert num_tokens(fits) > 32
    text, longer = " ".join(words[:fits]), " ".join(words[: fits + 1])
    threshold = quantile_thresholds(reference, [text], labels, QUANTILES)[0]
    expected = reference.predict_entities(text, labels, threshold=threshold)
    assert len(expected) > 0
    assert_same_entities(ours.predict_entities(text, labels, threshold=threshold), expected)
    config, budget = ours.config, ours.processor.word_budget(labels)
    windows = token_windows(
        ours.processor.tokens_per_word(words[: fits + 1]), config.max_len, config.max_width, budget, ""
    )
    assert len(windows) == 2
    expected = reference_in_windows(reference, longer, windows, labels, threshold)
    assert len(expected) > 0
    found = ours.predict_entities(longer, labels, threshold=threshold)
    assert [(e["start"], e["end"], e["label"]) for e in found] == expected
    with pytest.raises(ValueError, match=f"a row takes {num_tokens(fits + 1)} tokens .* the encoder's 40 position"):
        ours.predict_entities(longer, labels, truncate=True)


@pytest.mark.slow
@pytest.mark.parametrize("models", ["span"], indirect=True)  # the token model pads its inputs by the same buckets
def test_bounded_compilations(models, monkeypatch):
    """50 random texts and label sets of varied sizes: one compilation per bucketed shape, and few shapes."""
    _, ours, _ = models
    shapes = set()
    collate_rows = ours.processor.collate_rows

    def recording(*args, **kwargs):
        batch = collate_rows(*args, **kwargs)
        shapes.add((batch.input_ids.shape, batch.words_valid.shape, batch.labels_valid.shape))
        return batch

    monkeypatch.setattr(ours.processor, "collate_rows", recording)
    rng = np.random.default_rng(0)
    vocabulary = " ".join(TEXTS).split()
    stream = []
    for _ in range(50):
        text = " ".join(rng.choice(vocabulary, int(rng.integers(1, 45))))
        labels = list(rng.choice([*LABELS, "year", "science", "money"], int(rng.integers(1, 9)), replace=False))
        stream.append(([text] * int(rng.integers(1, 4)), labels))
    before = compiled_programs()
    for texts, labels in stream:
        ours.inference(texts, labels, batch_size=4)
    compiled = compiled_programs()
    # At most one program per bucketed shape, and few shapes: 1-45 words (2 word buckets) with 1-8 labels
    # (label buckets 4, 6, 8) in at most 4 token buckets.
    assert compiled - before <= len(shapes) <= 2 * 3 * 4, shapes
    for texts, labels in stream:
        ours.inference(texts, labels, batch_size=4)
    assert compiled_programs() == compiled  # the same stream again compiles nothing


@pytest.mark.parametrize(
    ("labels", "threshold", "message"),
    [
        ([], 0.5, "label list is empty"),
        (["person", 3], 0.5, "non-empty strings; got 3"),
        (["person", " "], 0.5, "non-empty strings; got ' '"),
        ("person", 0.5, "not the string 'person'"),
        (["person"], 1.5, r"threshold must be in \[0, 1\]"),
        (["person"], -0.1, r"threshold must be in \[0, 1\]"),
        ([["person"], ["city"]], 0.5, "2 label lists for 1 texts"),
    ],
)
def test_bad_input_raises(models, labels, threshold, message):
    _, ours, _ = models
    with pytest.raises(ValueError, match=message):
        ours.inference([TEXTS[0]], labels, threshold=threshold)
    if threshold == 0.5:  # the same labels fail the same way in every entry point
        with pytest.raises(ValueError, match=message):
            ours.batch_logits([TEXTS[0]], labels)
        with pytest.raises(ValueError, match=message):
            ours.predict_words([TEXTS[0].split()], labels)


def test_token_windows_hand_checked():
    # No budget binds: the windows of window_starts.
    for length, size, width in [(1, 8, 2), (8, 8, 2), (9, 8, 2), (50, 8, 3), (100, 48, 4), (7, 3, 5)]:
        expected = [(first, min(first + size, length)) for first in window_starts(length, size, width)]
        assert token_windows(np.ones(length, int), size, width, 10**6, "t") == expected
    # 2 tokens a word, 6 tokens of budget: 3-word windows overlapping by max_width = 1 word.
    assert token_windows(np.full(8, 2), 10, 1, 6, "t") == [(0, 3), (2, 5), (4, 7), (6, 8)]
    # A long word shortens its windows (one, (1, 3), would lie inside (0, 3) and is left out); max_width 2 keeps
    # 2 words of overlap.
    assert token_windows(np.array([1, 1, 1, 4, 1, 1, 1]), 4, 2, 5, "t") == [(0, 3), (2, 4), (3, 5), (4, 7)]
    with pytest.raises(ValueError, match="text 3: word 2 with its label prompt does not fit"):
        token_windows(np.array([1, 1, 6, 1]), 4, 1, 5, "text 3")


def test_windows_fit_the_tokenizer_limit(models, monkeypatch):
    """With a tokenizer limit that cuts a window of max_len words, windows shrink to fit it: the entities are those
    of the reference run on each window's text, merged by its greedy selection, and no window is cut."""
    reference, ours, _ = models
    text = long_document(60)
    words = split_words(text)
    limit = 80
    monkeypatch.setattr(ours.tokenizer, "model_max_length", limit)
    windows = token_windows(
        ours.processor.tokens_per_word([w for w, _, _ in words]),
        ours.config.max_len,
        ours.config.max_width,
        ours.processor.word_budget(LABELS),
        "text",
    )
    assert len(windows) > 2 and all(stop - first < ours.config.max_len for first, stop in windows)
    prompt = ours.processor.prompt(LABELS)
    for first, stop in windows:  # each window with its prompt fits, and one more word would not
        window = [w for w, _, _ in words[first:stop]]
        assert len(ours.tokenizer(prompt + window, is_split_into_words=True)["input_ids"]) <= limit
        if stop < len(words):
            assert (
                len(ours.tokenizer(prompt + window + [words[stop][0]], is_split_into_words=True)["input_ids"]) > limit
            )
    window_texts = [" ".join(w for w, _, _ in words[first:stop]) for first, stop in windows]
    threshold = quantile_thresholds(reference, window_texts, LABELS, QUANTILES)[0]
    expected = reference_in_windows(reference, text, windows, LABELS, threshold)
    assert len(expected) > 0
    assert [
        (e["start"], e["end"], e["label"]) for e in ours.predict_entities(text, LABELS, threshold=threshold)
    ] == expected


def test_tokenizer_cut_is_refused(models, monkeypatch):
    """Where windows cannot help, input the tokenizer would cut raises instead of losing words: a prompt that
    leaves no room for a word, or the reference's truncation (truncate=True) past the tokenizer's limit."""
    _, ours, _ = models
    monkeypatch.setattr(ours.tokenizer, "model_max_length", 24)
    with pytest.raises(ValueError, match=r"text 0: word 0 with its label prompt does not fit"):
        ours.inference([TEXTS[4]], [*LABELS, "international organization", "time of day", "number"])
    with pytest.raises(ValueError, match=r"exceed the tokenizer's model_max_length \(24 tokens\)"):
        ours.inference([TEXTS[4]], ["person"], truncate=True)


@pytest.mark.slow
def test_pipelined_serial_and_streamed_agree_in_input_order(models):
    """Rows sorted by length, batches prepared ahead by a thread and decoded behind the devices: each text gets its
    own entities (gliner's, for texts that fit), in input order, as with batches run one after the other and as
    `inference_stream` gives them chunk by chunk."""
    reference, ours, thresholds = models
    texts = [*TEXTS, long_document(130), *TEXTS[::-1]]
    options = dict(threshold=thresholds[0], batch_size=3)
    pipelined = ours.inference(texts, LABELS, **options)
    ours.pipelined = False
    serial = ours.inference(texts, LABELS, **options)
    ours.pipelined = True
    chunks = [texts[:4], [], texts[4:7], texts[7:]]
    streamed = [row for chunk in ours.inference_stream(chunks, LABELS, **options) for row in chunk]
    assert serial == pipelined and sum(map(len, pipelined)) > 0
    for got, want in zip(streamed, pipelined, strict=True):
        assert_same_entities(got, want)
    short = [i for i, text in enumerate(texts) if len(split_words(text)) <= 48]
    expected = reference.inference([texts[i] for i in short], LABELS, threshold=thresholds[0])
    for i, want in zip(short, expected, strict=True):
        assert_same_entities(pipelined[i], want)


def test_empty_texts_give_no_entities(models):
    _, ours, _ = models
    assert ours.inference(["", "  \n\t "], LABELS) == [[], []]


def test_cli_predict(models, tmp_path, capsys, monkeypatch):
    reference, ours, _ = models
    directory = tmp_path / "model"
    ours.save_pretrained(directory)
    threshold = quantile_thresholds(reference, [TEXTS[0], TEXTS[4]], ["person", "award"], QUANTILES)[0]
    expected = reference.inference([TEXTS[0], TEXTS[4]], ["person", "award"], threshold=threshold, flat_ner=False)
    assert sum(map(len, expected)) > 0
    args = [
        "predict",
        "--model",
        str(directory),
        "--labels",
        "person, award",
        "--threshold",
        str(threshold),
        "--nested",
    ]

    assert main([*args, TEXTS[0], TEXTS[4]]) == 0
    from_args = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    (tmp_path / "in.jsonl").write_text(json.dumps({"text": TEXTS[0]}) + "\n\n" + TEXTS[4] + "\n")
    assert main([*args, "--file", str(tmp_path / "in.jsonl")]) == 0
    from_file = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    monkeypatch.setattr("sys.stdin", open(tmp_path / "in.jsonl"))  # noqa: SIM115
    assert main(args) == 0
    from_stdin = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    for records in (from_args, from_file, from_stdin):
        assert [r["text"] for r in records] == [TEXTS[0], TEXTS[4]]
        for record, entities in zip(records, expected, strict=True):
            assert_same_entities(record["entities"], entities)

"""Multi-task helpers against gliner.multitask's pipelines on the same tiny model: prompts, spans, scores, offsets
into the caller's text, long texts read in prompted windows."""

from __future__ import annotations

import importlib.util
import itertools
import sys
import types

import numpy as np
import pytest

from gliner_jax import GLiNER, multitask
from gliner_jax.data_formats import PROMPT_SEPARATOR
from gliner_jax.testing.builders import build_reference, quantile_thresholds
from gliner_jax.text.words import split_words

TEXTS = [
    "Marie Curie won the Nobel Prize in Physics in 1903, and again in 1911!",
    "Dr. Smith-Jones (WHO) met Angela Merkel in Geneva on Tuesday.",
    "Apple Inc. released the iPhone in San Francisco in 2007.",
    "Zürich, São Paulo & Kraków: Müller paid $1,200.50.",
]
QUESTION = "Who won the Nobel Prize?"
CLASSES = ["science", "politics", "business"]
MAX_LEN, MAX_WIDTH = 32, 4  # every prompted text of TEXTS fits in one window: few shapes to compile


def reference_multitask() -> types.ModuleType:
    """gliner.multitask. Its modules import datasets, sklearn and evaluate, which only their `evaluate` methods
    use: stand-ins take the place of those not installed for the import, and are removed after it."""
    stubs = {
        "datasets": dict(Dataset=type("Dataset", (), {}), load_dataset=None),
        "sklearn": {},
        "sklearn.metrics": dict(f1_score=None),
        "evaluate": {},
    }
    missing = {
        name: types.SimpleNamespace(**attrs)
        for name, attrs in stubs.items()
        if importlib.util.find_spec(name.split(".")[0]) is None
    }
    sys.modules.update(missing)
    try:
        import gliner.multitask
    finally:
        for name in missing:
            del sys.modules[name]
    return gliner.multitask


REF = reference_multitask()


@pytest.fixture(scope="module")
def models(gliner_backbone, tmp_path_factory):
    """(reference gliner span model, our GLiNER over the same directory)."""
    directory = tmp_path_factory.mktemp("multitask")
    config = dict(span_mode="markerV0", hidden_size=48, max_width=MAX_WIDTH, max_len=MAX_LEN)
    reference = build_reference(gliner_backbone, directory, logit_scale=4.0, **config)
    return reference, GLiNER.from_pretrained(directory)


def threshold_for(reference, prompted: list[str], labels: list[str], quantile: float) -> float:
    assert all(len(split_words(text)) <= MAX_LEN for text in prompted)  # read whole, as by the reference
    return quantile_thresholds(reference, prompted, labels, (quantile,))[0]


def in_text(rows: list[list[dict]], prompt: str) -> list[list[dict]]:
    """Reference entities of `f"{prompt} \\n {text}"` texts that start in the text, with offsets into the text."""
    shift = len(prompt) + len(" \n ")
    return [
        [{**e, "start": e["start"] - shift, "end": e["end"] - shift} for e in row if e["start"] >= shift]
        for row in rows
    ]


def by_score(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda row: row["score"], reverse=True)


def assert_rows_equal(ours: list[list[dict]], expected: list[list[dict]], keys: tuple[str, ...]) -> None:
    assert [[tuple(e[k] for k in keys) for e in row] for row in ours] == [
        [tuple(e[k] for k in keys) for e in row] for row in expected
    ]
    np.testing.assert_allclose(
        [e["score"] for row in ours for e in row], [e["score"] for row in expected for e in row], rtol=0, atol=1e-5
    )


def assert_offsets(texts: list[str], rows: list[list[dict]], key: str) -> None:
    for text, row in zip(texts, rows, strict=True):
        for e in row:
            assert 0 <= e["start"] < e["end"] <= len(text)
            assert text[e["start"] : e["end"]] == e[key]


def test_prompts_are_the_reference_helpers(models):
    reference, _ = models
    text = TEXTS[0]
    cases = [
        (multitask.QA_PROMPT.format(QUESTION), REF.GLiNERQuestionAnswerer, dict(questions=QUESTION)),
        (multitask.SUMMARY_PROMPT, REF.GLiNERSummarizer, {}),
        (multitask.RELATION_PROMPT, REF.GLiNERRelationExtractor, {}),
        (multitask.CLASSIFICATION_PROMPT.format("science, politics, business"), REF.GLiNERClassifier, {}),
        ("", REF.GLiNEROpenExtractor, {}),
    ]
    for prompt, pipeline, kwargs in cases:
        kwargs = dict(classes=CLASSES) if pipeline is REF.GLiNERClassifier else kwargs
        expected = pipeline(model=reference, device="cpu").prepare_texts([text], **kwargs)[0]
        prompted = multitask._Prompted.build(prompt, text, split_words)
        assert prompted.string == expected
        assert prompted.string[prompted.text_start :] == text
        assert split_words(expected)[prompted.prompt_words][0] == "Marie"


def test_question_answering_matches_reference(models):
    reference, ours = models
    qa = REF.GLiNERQuestionAnswerer(model=reference, device="cpu")
    prompted = qa.prepare_texts(TEXTS, questions=QUESTION)
    threshold = threshold_for(reference, prompted, ["answer"], 0.95)
    pipeline = qa(TEXTS, QUESTION, threshold=threshold)
    raw = reference.inference(prompted, ["answer"], threshold=threshold)
    # The pipeline's answers are the raw spans by decreasing score, prompt spans included.
    assert pipeline == [[{"answer": e["text"], "score": e["score"]} for e in by_score(row)] for row in raw]
    expected = [by_score(row) for row in in_text(raw, multitask.QA_PROMPT.format(QUESTION))]
    got = multitask.answer_questions(ours, TEXTS, QUESTION, threshold=threshold)
    assert sum(map(len, expected)) > 0
    assert_rows_equal(got, [[{**e, "answer": e["text"]} for e in row] for row in expected], ("answer", "start", "end"))
    assert_offsets(TEXTS, got, "answer")
    assert all(set(a) == {"answer", "start", "end", "score"} for row in got for a in row)
    assert all(row == by_score(row) for row in got)


def test_question_per_text(models):
    """A list of questions holds one per text (gliner's helper asks questions[0] of every text)."""
    reference, ours = models
    questions = ["Who won the Nobel Prize?", "Where did they meet?"]
    qa = REF.GLiNERQuestionAnswerer(model=reference, device="cpu")
    prompted = [qa.prepare_texts([text], questions=q)[0] for text, q in zip(TEXTS, questions, strict=False)]
    threshold = threshold_for(reference, prompted, ["answer"], 0.9)
    got = multitask.answer_questions(ours, TEXTS[:2], questions, threshold=threshold)
    assert all(got)
    for text, question, row in zip(TEXTS[:2], questions, got, strict=True):
        raw = reference.inference(qa.prepare_texts([text], questions=question), ["answer"], threshold=threshold)
        expected = by_score(in_text(raw, multitask.QA_PROMPT.format(question))[0])
        assert_rows_equal([row], [[{**e, "answer": e["text"]} for e in expected]], ("answer", "start", "end"))
    with pytest.raises(ValueError, match="2 questions for 3 texts"):
        multitask.answer_questions(ours, TEXTS[:3], questions)


def test_summarize_matches_reference(models):
    reference, ours = models
    summarizer = REF.GLiNERSummarizer(model=reference, device="cpu")
    prompted = summarizer.prepare_texts(TEXTS)
    threshold = threshold_for(reference, prompted, ["summary"], 0.8)
    raw = reference.inference(prompted, ["summary"], threshold=threshold)
    assert summarizer(TEXTS, threshold=threshold) == [" ".join(e["text"] for e in row) for row in raw]
    kept = in_text(raw, multitask.SUMMARY_PROMPT)
    assert sum(map(len, kept)) > 1
    assert multitask.summarize(ours, TEXTS, threshold=threshold) == [" ".join(e["text"] for e in row) for row in kept]
    spans = multitask.extract(ours, TEXTS, ["summary"], multitask.SUMMARY_PROMPT, threshold)
    assert_rows_equal(spans, kept, ("start", "end", "text", "label"))
    assert_offsets(TEXTS, spans, "text")


@pytest.mark.parametrize("quantile", [0.9, 0.99])
def test_classify_matches_reference(models, quantile):
    """The label is the text of a "match" span, in the prompt (a class name, or any other words) or in the text."""
    reference, ours = models
    classifier = REF.GLiNERClassifier(model=reference, device="cpu")
    threshold = threshold_for(reference, classifier.prepare_texts(TEXTS, CLASSES), ["match"], quantile)
    for multi_label in (False, True):
        expected = classifier(TEXTS, classes=CLASSES, threshold=threshold, multi_label=multi_label)
        got = multitask.classify(ours, TEXTS, CLASSES, threshold=threshold, multi_label=multi_label)
        assert any(row[0]["label"] != "other" for row in expected)
        assert_rows_equal(got, expected, ("label",))


def test_classify_without_spans_is_other(models):
    reference, ours = models
    expected = REF.GLiNERClassifier(model=reference, device="cpu")(TEXTS, classes=CLASSES, threshold=1.0)
    assert expected == [[{"label": "other", "score": 1.0}]] * len(TEXTS)
    assert multitask.classify(ours, TEXTS, CLASSES, threshold=1.0) == expected


def test_relations_match_reference(models):
    reference, ours = models
    entities, relations = ["person", "organization", "location"], ["works at", "born in"]
    ner_threshold = threshold_for(reference, TEXTS, entities, 0.99)
    ner = reference.inference(TEXTS, entities, threshold=ner_threshold)
    # Each distinct entity text, in order of first appearance, with each relation (gliner iterates over a set).
    labels = [[f"{h} <> {r}" for r in relations for h in dict.fromkeys(e["text"] for e in row)] for row in ner]
    extractor = REF.GLiNERRelationExtractor(model=reference, device="cpu", return_index=True)
    assert [set(row) for row in labels] == [set(row) for row in extractor.prepare_source_relation(ner, relations)]
    assert 0 < max(map(len, labels)) <= (MAX_LEN // 2 - 1) // 2  # one label pass, as the reference
    prompted = extractor.prepare_texts(TEXTS)
    rel_threshold = threshold_for(reference, prompted, sorted({x for row in labels for x in row}), 0.95)
    expected = extractor(TEXTS, relation_labels=labels, rel_threshold=rel_threshold)
    expected = [[r for r in row if r["start"] >= 0] for row in expected]
    assert sum(map(len, expected)) > 0
    options = dict(ner_threshold=ner_threshold, rel_threshold=rel_threshold)
    got = multitask.extract_relations(ours, TEXTS, relations, entities, **options)
    assert_rows_equal(got, expected, ("source", "relation", "target", "start", "end"))
    assert_offsets(TEXTS, got, "target")
    assert multitask.extract_relations(ours, TEXTS, relation_labels=labels, rel_threshold=rel_threshold) == got
    none_found = multitask.extract_relations(ours, TEXTS, relations, entities, ner_threshold=1.0)
    assert none_found == [[]] * len(TEXTS)
    with pytest.raises(ValueError, match="head <> relation"):
        multitask.extract_relations(ours, TEXTS[:1], relation_labels=[["works at"]])


@pytest.mark.parametrize("prompt", ["", "Find the people, places and dates:"])
def test_open_extraction_matches_reference(models, prompt):
    reference, ours = models
    labels = ["person", "location", "date"]
    extractor = REF.GLiNEROpenExtractor(model=reference, device="cpu", prompt=prompt)
    prompted = extractor.prepare_texts(TEXTS)
    threshold = threshold_for(reference, prompted, labels, 0.97)
    raw = extractor(TEXTS, labels=labels, threshold=threshold)
    expected = in_text(raw, prompt)
    assert sum(map(len, expected)) > 0
    got = multitask.extract(ours, TEXTS, labels, prompt, threshold)
    assert_rows_equal(got, expected, ("start", "end", "text", "label"))
    assert_offsets(TEXTS, got, "text")


def test_long_text_is_read_in_prompted_windows(models):
    """A text past max_len words is read in windows of max_len - prompt words, each led by the prompt, a quarter
    overlapping; every answer is the reference's answer on one window's prompted text, and the last window is read."""
    reference, ours = models
    text = " ".join(TEXTS * 3)
    words = split_words(text)
    prompt = multitask.QA_PROMPT.format(QUESTION)
    size = MAX_LEN - len(split_words(prompt))
    stride = size - max(MAX_WIDTH, size // 4)
    starts = list(range(0, len(words) - size + stride, stride))
    windows = [text[words[s][1] : words[min(s + size, len(words)) - 1][2]] for s in starts]
    threshold = threshold_for(reference, [f"{prompt} \n {w}" for w in windows[:2]], ["answer"], 0.95)
    raw = reference.inference([f"{prompt} \n {w}" for w in windows], ["answer"], threshold=threshold)
    best: dict[tuple[int, int], float] = {}  # a span read in two windows keeps its better score
    for start, row in zip(starts, in_text(raw, prompt), strict=True):
        for e in row:
            span = (e["start"] + words[start][1], e["end"] + words[start][1])
            best[span] = max(e["score"], best.get(span, 0.0))
    got = multitask.answer_questions(ours, text, QUESTION, threshold=threshold)[0]
    assert_offsets([text], [got], "answer")
    assert len(starts) > 2 and max(a["start"] for a in got) >= words[len(words) * 3 // 4][1]
    for answer in got:
        assert answer["score"] == pytest.approx(best[(answer["start"], answer["end"])], abs=1e-5)
    spans = sorted((a["start"], a["end"]) for a in got)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # flat: no overlaps


def test_prompted_windows_fit_the_tokenizer_limit(models, monkeypatch):
    """Under a tokenizer limit, every row keeps its prompt and fits the limit (the windows shrink instead of the
    rows being split again or cut), and the text is read to its end."""
    _, ours = models
    text = " ".join(TEXTS * 3)
    prompt = split_words(multitask.QA_PROMPT.format(QUESTION) + PROMPT_SEPARATOR)
    limit = 90  # the prompts take 52 tokens: about 12 of the 21 words a window could hold fit beside them
    monkeypatch.setattr(ours.tokenizer, "model_max_length", limit)
    rows = []
    collate_rows = ours.processor.collate_rows

    def recording(row_words, labels, **kwargs):
        rows.extend(zip(row_words, labels, strict=True))
        return collate_rows(row_words, labels, **kwargs)

    monkeypatch.setattr(ours.processor, "collate_rows", recording)
    multitask.answer_questions(ours, text, QUESTION, threshold=0.5)
    prompt_words = [w for w, _, _ in prompt]
    assert len(rows) > 3
    last_words = [w for w, _, _ in split_words(text)][-3:]
    assert any([w for w, _, _ in row][-3:] == last_words for row, _ in rows)
    for row, labels in rows:
        words = [w for w, _, _ in row]
        assert words[: len(prompt_words)] == prompt_words
        tokens = ours.tokenizer([*ours.processor.prompt(labels), *words], is_split_into_words=True)["input_ids"]
        assert len(tokens) <= limit


def test_prompt_longer_than_max_len_is_refused(models):
    _, ours = models
    with pytest.raises(ValueError, match="the prompt takes 71 words"):
        multitask.extract(ours, TEXTS[0], ["person"], prompt=" ".join(["word"] * 70) + ":")

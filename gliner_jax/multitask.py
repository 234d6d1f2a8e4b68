"""Multi-task information extraction with prompted GLiNER models (gliner's `gliner.multitask` helpers): question
answering, extractive summarization, relation extraction, open information extraction and text classification.

Every task runs span extraction on `f"{prompt} \\n {text}"` with the helpers' prompts and labels. Returned offsets
index the caller's `text`, and spans inside the prompt are dropped (except in classification, whose answer is a
class name in the prompt). A text longer than the model's `max_len` words less the prompt is read in overlapping
windows, each led by the prompt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from gliner_jax.data_formats import PROMPT_SEPARATOR
from gliner_jax.decoding import merge_spans
from gliner_jax.model import GLiNER
from gliner_jax.text.splitters import WordSplitter
from gliner_jax.windows import word_windows

QA_PROMPT = "Answer the following question: {}"
SUMMARY_PROMPT = "Summarize the following text highlighting the most important information:"
RELATION_PROMPT = "Extract relationships between entities from the text: "
CLASSIFICATION_PROMPT = "Classify text into the following classes: {}"

Span = tuple[int, int, str, float]  # first word, last word (inclusive), label, score


@dataclasses.dataclass(frozen=True)
class _Prompted:
    """`prompt + PROMPT_SEPARATOR + text` as the model reads it: its words (offsets into `string`), the first
    `prompt_words` of them the prompt's, and the offset at which the text starts."""

    string: str
    words: list[tuple[str, int, int]]
    prompt_words: int
    text_start: int

    @classmethod
    def build(cls, prompt: str, text: str, split: WordSplitter) -> _Prompted:
        """The prompted text split as one string by the model's word splitter; the prompt's words are those that
        start before the text (the separator ends in whitespace, so no word runs from the prompt into the text)."""
        head = prompt + PROMPT_SEPARATOR
        words = split(head + text)
        return cls(head + text, words, sum(start < len(head) for _, start, _ in words), len(head))

    def span_text(self, span: Span) -> str:
        return self.string[self.words[span[0]][1] : self.words[span[1]][2]]

    def entity(self, span: Span) -> dict:
        """A span of text words as {start, end, text, label, score}, offsets into the text."""
        start, end = self.words[span[0]][1] - self.text_start, self.words[span[1]][2] - self.text_start
        return {"start": start, "end": end, "text": self.span_text(span), "label": span[2], "score": span[3]}


def _as_list(texts: str | Sequence[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


def _windows(model: GLiNER, item: _Prompted, labels: list[str]) -> list[range]:
    """Text-word ranges read with the prompt: at most max_len words in all, overlapping as in `GLiNER.inference`,
    and, under a token limit, few enough tokens that the row is never split away from its prompt."""
    size = model.config.max_len - item.prompt_words
    if size < 1:
        raise ValueError(f"the prompt takes {item.prompt_words} words; the model reads at most {model.config.max_len}")
    words = [word for word, _, _ in item.words]
    prompt, text = words[: item.prompt_words], words[item.prompt_words :]
    budget = model.processor.word_budget(labels)
    if budget is not None:
        budget -= int(model.processor.tokens_per_word(prompt).sum())
    windows = word_windows(model.processor, text, size, model.config.max_width, budget, "the prompted text")
    return [range(first, stop) for first, stop in windows]


def _prompted_spans(
    model: GLiNER,
    items: list[_Prompted],
    labels: list[list[str]],
    threshold: float,
    flat_ner: bool = True,
    multi_label: bool = False,
    batch_size: int = 8,
) -> list[list[Span]]:
    """Spans of each prompted text as indices into its words, by start; an item without labels has none.

    In a window past the first, a span from the prompt into the text joins words that are not neighbours in the
    prompted text: it is dropped."""
    rows, origins = [], []
    for index, (item, item_labels) in enumerate(zip(items, labels, strict=True)):
        prompt = [word for word, _, _ in item.words[: item.prompt_words]]
        for window in _windows(model, item, item_labels) if item_labels else []:
            rows.append(prompt + [item.words[item.prompt_words + i][0] for i in window])
            origins.append((index, window.start))
    found = model.predict_words(rows, [labels[i] for i, _ in origins], threshold, flat_ner, multi_label, batch_size)
    spans: list[list[Span]] = [[] for _ in items]
    windows = [0] * len(items)
    for (index, shift), row_spans in zip(origins, found, strict=True):
        windows[index] += 1
        size = items[index].prompt_words
        for first, last, label, score in row_spans:
            if shift and first < size <= last:
                continue
            spans[index].append((first + shift * (first >= size), last + shift * (last >= size), label, score))
    token_level = model.config.span_mode == "token_level"
    return [
        merge_spans(s, row, flat_ner, multi_label, token_level=token_level) if n > 1 else s
        for s, row, n in zip(spans, labels, windows, strict=True)
    ]


def _text_entities(
    model: GLiNER,
    prompts: list[str],
    texts: list[str],
    labels: list[list[str]],
    threshold: float,
    flat_ner: bool = True,
    multi_label: bool = False,
    batch_size: int = 8,
) -> list[list[dict]]:
    """Entities {start, end, text, label, score} of each text, read after its prompt, by start."""
    items = [
        _Prompted.build(prompt, text, model.processor.split_words) for prompt, text in zip(prompts, texts, strict=True)
    ]
    labels = [row if len(item.words) > item.prompt_words else [] for item, row in zip(items, labels, strict=True)]
    found = _prompted_spans(model, items, labels, threshold, flat_ner, multi_label, batch_size)
    return [
        [item.entity(s) for s in spans if s[0] >= item.prompt_words] for item, spans in zip(items, found, strict=True)
    ]


def extract(
    model: GLiNER,
    texts: str | Sequence[str],
    labels: Sequence[str],
    prompt: str = "",
    threshold: float = 0.5,
    flat_ner: bool = True,
    multi_label: bool = False,
    batch_size: int = 8,
) -> list[list[dict]]:
    """Open information extraction: spans of `labels` in each text, read after a free `prompt` (an instruction
    such as "Find the symptoms:"), as {start, end, text, label, score} by start."""
    texts = _as_list(texts)
    if isinstance(labels, str) or not labels:
        raise ValueError(f"labels must be a non-empty list of label strings, got {labels!r}")
    shared = [list(labels)] * len(texts)
    return _text_entities(model, [prompt] * len(texts), texts, shared, threshold, flat_ner, multi_label, batch_size)


def answer_questions(
    model: GLiNER,
    texts: str | Sequence[str],
    questions: str | Sequence[str],
    threshold: float = 0.5,
    batch_size: int = 8,
    prompt: str = QA_PROMPT,
) -> list[list[dict]]:
    """Extractive question answering: for each text, answers {answer, start, end, score} by decreasing score.

    One question is asked of every text; a list holds one question per text."""
    texts = _as_list(texts)
    questions = [questions] * len(texts) if isinstance(questions, str) else list(questions)
    if len(questions) != len(texts):
        raise ValueError(f"got {len(questions)} questions for {len(texts)} texts")
    prompts = [prompt.format(question) for question in questions]
    found = _text_entities(model, prompts, texts, [["answer"]] * len(texts), threshold, batch_size=batch_size)
    return [
        [{"answer": e["text"], "start": e["start"], "end": e["end"], "score": e["score"]} for e in _by_score(row)]
        for row in found
    ]


def summarize(
    model: GLiNER,
    texts: str | Sequence[str],
    threshold: float = 0.25,
    batch_size: int = 8,
    prompt: str = SUMMARY_PROMPT,
) -> list[str]:
    """Extractive summary of each text: its "summary" spans in text order, joined by spaces.

    `extract(model, texts, ["summary"], SUMMARY_PROMPT, 0.25)` gives the spans with their offsets."""
    texts = _as_list(texts)
    found = _text_entities(
        model, [prompt] * len(texts), texts, [["summary"]] * len(texts), threshold, batch_size=batch_size
    )
    return [" ".join(e["text"] for e in row) for row in found]


def classify(
    model: GLiNER,
    texts: str | Sequence[str],
    classes: Sequence[str],
    threshold: float = 0.5,
    multi_label: bool = False,
    batch_size: int = 8,
    prompt: str = CLASSIFICATION_PROMPT,
) -> list[list[dict]]:
    """Text classification: the model marks a class name among those listed in the prompt ("match" spans).

    For each text a list of {label, score}: with `multi_label`, every marked span's text with its score, by
    decreasing score; otherwise only the best, scored by a softmax over all marked spans' scores. A text with no
    span above `threshold` gets [{"label": "other", "score": 1.0}]. As in gliner, a marked span is taken as the label
    whether or not it is one of `classes`."""
    texts = _as_list(texts)
    if isinstance(classes, str) or not classes:
        raise ValueError(f"classes must be a non-empty list of class names, got {classes!r}")
    items = [_Prompted.build(prompt.format(", ".join(classes)), text, model.processor.split_words) for text in texts]
    found = _prompted_spans(model, items, [["match"]] * len(texts), threshold, batch_size=batch_size)
    results = []
    for item, spans in zip(items, found, strict=True):
        ranked = _by_score([{"label": item.span_text(s), "score": s[3]} for s in spans])
        if not ranked:
            results.append([{"label": "other", "score": 1.0}])
        elif multi_label:
            results.append(ranked)
        else:
            weights = np.exp(np.array([r["score"] for r in ranked]) - ranked[0]["score"])  # softmax over all
            results.append([{"label": ranked[0]["label"], "score": float(weights[0] / weights.sum())}])
    return results


def extract_relations(
    model: GLiNER,
    texts: str | Sequence[str],
    relations: Sequence[str] | None = None,
    entities: Sequence[str] = ("named entity",),
    relation_labels: Sequence[Sequence[str]] | None = None,
    ner_threshold: float = 0.5,
    rel_threshold: float = 0.5,
    batch_size: int = 8,
    prompt: str = RELATION_PROMPT,
) -> list[list[dict]]:
    """Relation extraction: for each text, {source, relation, target, score, start, end} with start/end the
    target's offsets in the text, by target start.

    First the `entities` of each text are found (NER at `ner_threshold`); each distinct entity text `head` and
    relation `r` then make a label "head <> r", and the spans of those labels (read after the prompt, at
    `rel_threshold`) are the targets. `relation_labels` (one list of "head <> relation" per text) skips the NER step.
    """
    texts = _as_list(texts)
    if relation_labels is None:
        if isinstance(relations, str) or not relations:
            raise ValueError(f"relations must be a non-empty list of relation names, got {relations!r}")
        found = model.inference(texts, list(entities), threshold=ner_threshold, batch_size=batch_size)
        heads = [list(dict.fromkeys(e["text"] for e in row)) for row in found]
        relation_labels = [[f"{head} <> {relation}" for relation in relations for head in row] for row in heads]
    if isinstance(relation_labels, str) or any(isinstance(row, str) for row in relation_labels):
        raise ValueError("relation_labels holds one list of 'head <> relation' labels per text")
    if len(relation_labels) != len(texts):
        raise ValueError(f"got {len(relation_labels)} relation label lists for {len(texts)} texts")
    for label in (label for row in relation_labels for label in row):
        if "<>" not in label:
            raise ValueError(f"relation labels read 'head <> relation'; got {label!r}")
    labels = [list(row) for row in relation_labels]
    found = _text_entities(model, [prompt] * len(texts), texts, labels, rel_threshold, batch_size=batch_size)
    return [[_relation(target) for target in row] for row in found]


def _relation(target: dict) -> dict:
    head, _, relation = target["label"].rpartition("<>")
    return {
        "source": head.strip(),
        "relation": relation.strip(),
        "target": target["text"],
        "score": target["score"],
        "start": target["start"],
        "end": target["end"],
    }


def _by_score(rows: list[dict]) -> list[dict]:
    """Rows by decreasing "score", ties in their given order."""
    return sorted(rows, key=lambda row: row["score"], reverse=True)

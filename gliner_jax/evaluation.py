"""Span-level exact-match evaluation: micro precision, recall and F1, and the same per label."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gliner_jax.inference import GLiNER

Span = tuple[int, int, str]  # (first word, last word inclusive, label)


@dataclasses.dataclass(frozen=True)
class Scores:
    """Micro precision / recall / F1 (0 where undefined) and the counts they come from."""

    precision: float
    recall: float
    f1: float
    true_positives: int
    predicted: int
    gold: int

    @classmethod
    def from_counts(cls, true_positives: int, predicted: int, gold: int) -> Scores:
        precision = true_positives / predicted if predicted else 0.0
        recall = true_positives / gold if gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return cls(precision, recall, f1, true_positives, predicted, gold)


def span_scores(
    predicted: Sequence[Iterable[Span]], gold: Sequence[Iterable[Span]]
) -> tuple[Scores, dict[str, Scores]]:
    """Exact-match scores over texts: a predicted (start, end, label) counts when the same text's gold has it.

    Returns the micro scores over all labels and the scores of each label (gold or predicted).
    """
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predicted texts but {len(gold)} gold texts")
    hits, predicted_counts, gold_counts = Counter(), Counter(), Counter()
    for text_predicted, text_gold in zip(predicted, gold, strict=True):
        text_predicted, text_gold = set(map(tuple, text_predicted)), set(map(tuple, text_gold))
        hits.update(span[2] for span in text_predicted & text_gold)
        predicted_counts.update(span[2] for span in text_predicted)
        gold_counts.update(span[2] for span in text_gold)
    per_label = {
        label: Scores.from_counts(hits[label], predicted_counts[label], gold_counts[label])
        for label in sorted(predicted_counts | gold_counts)
    }
    micro = Scores.from_counts(hits.total(), predicted_counts.total(), gold_counts.total())
    return micro, per_label


def evaluate_examples(
    model: GLiNER,
    examples: list[dict],
    *,
    labels: list[str] | None = None,
    threshold: float = 0.5,
    batch_size: int = 16,
    flat_ner: bool = True,
) -> tuple[Scores, dict[str, Scores]]:
    """Span scores of `model` on examples in the GLiNER training format, predicting every label of the set."""
    if labels is None:
        labels = sorted({entity[2] for example in examples for entity in example["ner"]})
    predicted = model.predict_words(
        [example["tokenized_text"] for example in examples], labels, threshold, flat_ner, batch_size=batch_size
    )
    gold = [{(s, e, label) for s, e, label in example["ner"]} for example in examples]
    return span_scores([{(s, e, label) for s, e, label, _ in spans} for spans in predicted], gold)

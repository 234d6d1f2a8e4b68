"""Span-level exact-match evaluation: micro precision, recall and F1, and the same per label.

The numbers are those of gliner's `BaseNEREvaluator`: a predicted (start, end, label) of a text counts when the
same text's gold has it; duplicates count once; a ratio with a zero denominator is 0. Any model with a
`predict_words` method (`WordPredictor`) can be evaluated; reading gold data is `data_formats`' job. A threshold
sweep (`evaluate_thresholds`) scores several thresholds from one model pass (`SweepPredictor`). A relation model
(`RelationPredictor`) also gets relation scores (`evaluate_relations`), as gliner's `BaseRelexEvaluator` counts them.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from gliner_jax.data_formats import Example, labels_of

Span = tuple[int, int, str]  # (first word, last word inclusive, label)
WordEntity = tuple[int, int, str, float]  # (first word, last word inclusive, label, score)


class WordPredictor(Protocol):
    """What evaluation needs of a model: entities of pre-split texts (as `GLiNER.predict_words` returns them)."""

    def predict_words(
        self,
        word_lists: Sequence[Sequence[str]],
        labels: Sequence[str],
        threshold: float = 0.5,
        flat_ner: bool = True,
        multi_label: bool = False,
        batch_size: int = 8,
        *,
        progress: bool = False,
    ) -> list[list[WordEntity]]: ...


class SweepPredictor(Protocol):
    """What a threshold sweep needs: `predict_words` at several thresholds from one pass (as
    `GLiNER.predict_words_sweep` returns them), {threshold: entities of each text}."""

    def predict_words_sweep(
        self,
        word_lists: Sequence[Sequence[str]],
        labels: Sequence[str],
        thresholds: Sequence[float],
        flat_ner: bool = True,
        multi_label: bool = False,
        batch_size: int = 8,
        *,
        progress: bool = False,
    ) -> dict[float, list[list[WordEntity]]]: ...


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


class Evaluation(NamedTuple):
    """Micro scores over all labels and the scores of each label that is in the gold or the predictions.

    Unpacks as (micro, per_label); `str()` is the reference's summary line "P: x%\\tR: y%\\tF1: z%".
    """

    micro: Scores
    per_label: dict[str, Scores]

    @property
    def precision(self) -> float:
        return self.micro.precision

    @property
    def recall(self) -> float:
        return self.micro.recall

    @property
    def f1(self) -> float:
        return self.micro.f1

    def __str__(self) -> str:
        return f"P: {self.precision:.2%}\tR: {self.recall:.2%}\tF1: {self.f1:.2%}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the micro scores and counts, and "per_label": {label: scores and counts}."""
        per_label = {label: dataclasses.asdict(scores) for label, scores in self.per_label.items()}
        return {**dataclasses.asdict(self.micro), "per_label": per_label}

    def scalars(self, prefix: str) -> dict[str, float]:
        """Flat scores for a metrics log: "PREFIX/f1" (precision, recall) micro, "PREFIX/f1/LABEL" of each label."""
        values = {}
        for metric in ("precision", "recall", "f1"):
            values[f"{prefix}/{metric}"] = getattr(self.micro, metric)
            values |= {f"{prefix}/{metric}/{label}": getattr(s, metric) for label, s in self.per_label.items()}
        return values

    def table(self) -> str:
        """A plain-text table: one row per label, then the micro row."""
        rows = [*self.per_label.items(), ("(micro)", self.micro)]
        width = max(len("label"), *(len(label) for label, _ in rows))
        lines = [f"{'label':<{width}}  {'gold':>6}  {'pred':>6}  {'correct':>7}  {'P':>7}  {'R':>7}  {'F1':>7}"]
        for label, s in rows:
            lines.append(
                f"{label:<{width}}  {s.gold:>6}  {s.predicted:>6}  {s.true_positives:>7}  "
                f"{s.precision:>7.2%}  {s.recall:>7.2%}  {s.f1:>7.2%}"
            )
        return "\n".join(lines)


def span_scores(predicted: Sequence[Iterable[Span]], gold: Sequence[Iterable[Span]]) -> Evaluation:
    """Exact-match scores over texts: a predicted (start, end, label) counts when the same text's gold has it."""
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
    return Evaluation(micro, per_label)


def _labels_to_predict(examples: Sequence[Example], labels: Sequence[str] | None) -> list[str]:
    labels = labels_of(examples) if labels is None else labels
    if not labels:
        raise ValueError("no labels to predict: the data has no entities; pass labels")
    return list(labels)


def _scores_of(examples: Sequence[Example], predicted: Sequence[Iterable[WordEntity]]) -> Evaluation:
    gold = [{(s, e, label) for s, e, label in example["ner"]} for example in examples]
    return span_scores([{(s, e, label) for s, e, label, _ in spans} for spans in predicted], gold)


def evaluate_examples(
    model: WordPredictor,
    examples: Sequence[Example],
    *,
    labels: Sequence[str] | None = None,
    threshold: float = 0.5,
    batch_size: int = 16,
    flat_ner: bool = True,
    multi_label: bool = False,
    progress: bool = False,
) -> Evaluation:
    """Span scores of `model` on examples in the GLiNER training format, every text given every label of `labels`
    (default: the sorted set of the examples' labels). Gold entities of other labels still count as missed."""
    predicted = model.predict_words(
        [example["tokenized_text"] for example in examples],
        _labels_to_predict(examples, labels),
        threshold,
        flat_ner,
        multi_label,
        batch_size,
        progress=progress,
    )
    return _scores_of(examples, predicted)


def evaluate_thresholds(
    model: SweepPredictor,
    examples: Sequence[Example],
    thresholds: Sequence[float],
    *,
    labels: Sequence[str] | None = None,
    batch_size: int = 16,
    flat_ner: bool = True,
    multi_label: bool = False,
    progress: bool = False,
) -> dict[float, Evaluation]:
    """`evaluate_examples` at each of `thresholds` from one model pass: {threshold: its scores}, in the given order."""
    predicted = model.predict_words_sweep(
        [example["tokenized_text"] for example in examples],
        _labels_to_predict(examples, labels),
        list(thresholds),
        flat_ner,
        multi_label,
        batch_size,
        progress=progress,
    )
    return {threshold: _scores_of(examples, predicted[threshold]) for threshold in thresholds}


def best_threshold(sweep: Mapping[float, Evaluation]) -> float:
    """The threshold of the highest micro F1 in `sweep`; of equal F1s, the lowest threshold."""
    return min(sweep, key=lambda threshold: (-sweep[threshold].f1, threshold))


def sweep_scalars(sweep: Mapping[float, Evaluation], prefix: str) -> dict[str, float]:
    """Flat sweep scores for a metrics log: "PREFIX/f1@T" of each threshold T, "PREFIX/best_threshold" and
    "PREFIX/best_f1"."""
    best = best_threshold(sweep)
    values = {f"{prefix}/f1@{threshold:g}": evaluation.f1 for threshold, evaluation in sweep.items()}
    return values | {f"{prefix}/best_threshold": best, f"{prefix}/best_f1": sweep[best].f1}


def sweep_table(sweep: Mapping[float, Evaluation]) -> str:
    """A plain-text table: one row per threshold (micro scores), the best marked with '*'."""
    best = best_threshold(sweep)
    lines = [f"{'threshold':>9}  {'pred':>6}  {'correct':>7}  {'P':>7}  {'R':>7}  {'F1':>7}"]
    for threshold, evaluation in sweep.items():
        s, mark = evaluation.micro, " *" if threshold == best else ""
        lines.append(
            f"{threshold:>9g}  {s.predicted:>6}  {s.true_positives:>7}  "
            f"{s.precision:>7.2%}  {s.recall:>7.2%}  {s.f1:>7.2%}{mark}"
        )
    return "\n".join(lines)


RelationTuple = tuple[int, str, int, float]  # (head entity index, relation, tail entity index, score)


class RelationPredictor(Protocol):
    """A relation extraction model: (entities, relations) of pre-split texts (`GLiNER.predict_word_relations`)."""

    def predict_word_relations(
        self,
        word_lists: Sequence[Sequence[str]],
        labels: Sequence[str],
        relations: Sequence[str],
        threshold: float,
        adjacency_threshold: float | None,
        relation_threshold: float | None,
        flat_ner: bool,
        multi_label: bool,
        batch_size: int,
    ) -> list[tuple[list[WordEntity], list[RelationTuple]]]: ...


class RelationEvaluation(NamedTuple):
    """A relation model's scores: its entities' and its relations' (each an `Evaluation`, micro and per label)."""

    entities: Evaluation
    relations: Evaluation


def relation_scores(
    predicted: Sequence[tuple[Sequence[WordEntity], Sequence[RelationTuple]]], examples: Sequence[Example]
) -> Evaluation:
    """gliner's `BaseRelexEvaluator`: a predicted relation (type, head span, tail span) of a text counts when the
    same text's gold has it (entity labels play no part; duplicates count once). Gold relations are the examples'
    "relations" ([head, tail, type] indexing "ner"), predicted ones index the predicted entities."""

    def triples(entities: Sequence[Sequence[Any]], relations: Iterable[tuple[int, int, str]]) -> set:
        return {(tuple(entities[h][:2]), tuple(entities[t][:2]), kind) for h, t, kind in relations}

    gold = [triples(example["ner"], example.get("relations", ())) for example in examples]
    found = [triples(entities, ((h, t, kind) for h, kind, t, _ in rels)) for entities, rels in predicted]
    return span_scores(found, gold)


def relation_types_of(examples: Iterable[Example]) -> list[str]:
    """The sorted set of the examples' relation types."""
    return sorted({kind for example in examples for _, _, kind in example.get("relations", ())})


def evaluate_relations(
    model: RelationPredictor,
    examples: Sequence[Example],
    *,
    labels: Sequence[str] | None = None,
    relations: Sequence[str] | None = None,
    threshold: float = 0.5,
    adjacency_threshold: float | None = None,
    relation_threshold: float | None = None,
    batch_size: int = 16,
    flat_ner: bool = True,
    multi_label: bool = False,
) -> RelationEvaluation:
    """Entity and relation scores of a relation model on examples with "relations", as gliner's relation model's
    `evaluate(..., entity_types=labels, relation_types=relations)` computes them: every text gets every label
    (default: the sorted set of the examples' labels) and every relation type (default: their sorted set)."""
    relations = relation_types_of(examples) if relations is None else list(relations)
    if not relations:
        raise ValueError("no relation types to predict: the data has no relations; pass relations")
    predicted = model.predict_word_relations(
        [example["tokenized_text"] for example in examples],
        _labels_to_predict(examples, labels),
        relations,
        threshold,
        adjacency_threshold,
        relation_threshold,
        flat_ner,
        multi_label,
        batch_size,
    )
    entities = _scores_of(examples, [spans for spans, _ in predicted])
    return RelationEvaluation(entities, relation_scores(predicted, examples))

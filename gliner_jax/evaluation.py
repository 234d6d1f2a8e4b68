"""Span-level exact-match evaluation: micro precision, recall and F1, and the same per label, on GLiNER JSON / JSONL
data or CoNLL-style files.

The numbers are those of gliner's `BaseNEREvaluator`: a predicted (start, end, label) of a text counts when the
same text's gold has it; duplicates count once; a ratio with a zero denominator is 0.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import yaml

from gliner_jax.training.data import Example, bio_spans, check_record, read_examples

if TYPE_CHECKING:
    from gliner_jax.inference import GLiNER

Span = tuple[int, int, str]  # (first word, last word inclusive, label)
CONLL_SUFFIXES = (".conll", ".txt", ".bio")
JSON_SUFFIXES = (".json", ".jsonl")
DOCSTART = "-DOCSTART-"


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


def evaluate_examples(
    model: GLiNER,
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
    if labels is None:
        labels = sorted({entity[2] for example in examples for entity in example["ner"]})
    if not labels:
        raise ValueError("no labels to predict: the data has no entities; pass labels")
    predicted = model.predict_words(
        [example["tokenized_text"] for example in examples],
        list(labels),
        threshold,
        flat_ner,
        multi_label,
        batch_size,
        progress=progress,
    )
    gold = [{(s, e, label) for s, e, label in example["ner"]} for example in examples]
    return span_scores([{(s, e, label) for s, e, label, _ in spans} for spans in predicted], gold)


def read_conll(path: str | Path, *, strict_iob2: bool = False) -> list[Example]:
    """Sentences of a CoNLL-style file as examples: a token in the first column and a BIO / IOB1 / IOB2 tag in the
    last (columns split by tabs when the line has one, else by whitespace), a blank line between sentences,
    "-DOCSTART-" lines skipped. Entity types are the tags' suffixes ("B-geo-loc" -> "geo-loc").

    `strict_iob2` refuses an "I-X" that does not continue an X entity (IOB1 files use that to start one).
    Errors name the file and line.
    """
    path = Path(path)
    examples: list[Example] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    for number, line in enumerate([*lines, ""], 1):
        if not line.strip():
            if tokens:
                examples.append({"tokenized_text": tokens, "ner": [list(span) for span in bio_spans(tags)]})
            tokens, tags = [], []
            continue
        columns = [column.strip() for column in line.split("\t")] if "\t" in line else line.split()
        if columns[0] == DOCSTART:
            continue
        if len(columns) < 2 or not columns[0] or not columns[-1]:
            raise ValueError(f"{path}:{number}: expected a token and a tag, got {line!r}")
        tag = columns[-1]
        prefix, _, kind = tag.partition("-")
        if tag != "O" and (prefix not in ("B", "I") or not kind):
            raise ValueError(f"{path}:{number}: not a BIO tag: {tag!r} (expected O, B-TYPE or I-TYPE)")
        if strict_iob2 and prefix == "I" and (not tags or tags[-1] not in (f"B-{kind}", f"I-{kind}")):
            raise ValueError(f"{path}:{number}: {tag!r} continues no {kind!r} entity (strict IOB2)")
        tokens.append(columns[0])
        tags.append(tag)
    return examples


def load_label_map(path: str | Path) -> dict[str, str | None]:
    """A {type: label} mapping from a JSON or YAML file; a type mapped to null is dropped."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        mapping = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: not valid JSON / YAML: {error}") from None
    if not isinstance(mapping, dict) or not all(
        isinstance(key, str) and (value is None or (isinstance(value, str) and value.strip()))
        for key, value in mapping.items()
    ):
        raise ValueError(f"{path}: a label map must be a {{type: label}} mapping of strings (null drops a type)")
    return mapping


def rename_labels(examples: Sequence[Example], label_map: Mapping[str, str | None]) -> list[Example]:
    """The examples with their entity labels renamed by `label_map`: unmapped labels kept, those mapped to None
    dropped."""
    renamed = []
    for example in examples:
        ner = [[s, e, label_map.get(label, label)] for s, e, label in example["ner"]]
        renamed.append({**example, "ner": [entity for entity in ner if entity[2] is not None]})
    return renamed


def _is_conll(path: Path) -> bool:
    """By extension (.conll / .txt / .bio vs .json / .jsonl), else by content (JSON starts with [ or {)."""
    if path.suffix.lower() in CONLL_SUFFIXES:
        return True
    if path.suffix.lower() in JSON_SUFFIXES:
        return False
    with path.open(encoding="utf-8-sig") as file:
        head = file.read(4096).lstrip()
    return not head.startswith(("[", "{"))


def read_eval_data(
    data: str | Path | Sequence[Mapping[str, Any]],
    label_map: Mapping[str, str | None] | None = None,
    *,
    strict_iob2: bool = False,
) -> list[Example]:
    """Gold examples from a JSON / JSONL / CoNLL file (see `read_conll`) or a list of records, labels renamed by
    `label_map`. Every record must be valid: a bad one raises ValueError naming it."""
    if isinstance(data, str | Path):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        if _is_conll(path):
            examples = read_conll(path, strict_iob2=strict_iob2)
        else:
            try:
                examples = read_examples(path, strict=True)[0]
            except json.JSONDecodeError as error:  # a JSON list; JSONL lines are reported by record
                raise ValueError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from None
    else:
        examples = []
        for index, record in enumerate(data):
            reason = check_record(record)
            if reason is not None:
                raise ValueError(f"example {index}: {reason}")
            examples.append({"tokenized_text": list(record["tokenized_text"]), "ner": list(record["ner"])})
    return rename_labels(examples, label_map) if label_map else examples

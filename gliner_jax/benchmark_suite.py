"""A benchmark suite in gliner's layout, read and evaluated as gliner's `get_for_all_path` does.

The root folder holds one folder per dataset (folders whose name has `sample_` are skipped, so are plain files and
hidden entries); a dataset folder holds JSON files whose names contain `train`, `dev`, `test` or `labels` (the first
of these in that order names the file's role; only `test` and `labels` are read). A test record is
`{"sentence": str, "entities": [{"pos": [first_char, end_char], "type": str}, ...]}`, mapped to whitespace words;
labels are lower-cased. Each test split is evaluated at threshold 0.5, 12 texts a batch, nested for a name holding
ACE, GENIA or Corpus and flat otherwise. Two averages of F1: over the zero-shot sets (`ZERO_SHOT`) and over all the
others.

Where we differ from gliner on purpose: roles and `sample_` are matched against the file or folder name, not the
whole path (gliner's match on the path turns every file into training data under a root named e.g. `train_sets`);
an empty group's average is None (gliner divides by zero); a missing test or labels file, two files of one role,
invalid JSON or a malformed record is a ValueError naming the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from gliner_jax.data_formats import Example, read_json
from gliner_jax.evaluation import Evaluation, WordPredictor, evaluate_examples

ZERO_SHOT = (
    "mit-movie",
    "mit-restaurant",
    "CrossNER_AI",
    "CrossNER_literature",
    "CrossNER_music",
    "CrossNER_politics",
    "CrossNER_science",
)
NESTED_MARKERS = ("ACE", "GENIA", "Corpus")
ROLES = ("train", "dev", "test", "labels")
THRESHOLD = 0.5
BATCH_SIZE = 12


def char_span_to_words(words: Sequence[str], start: int, end: int) -> tuple[int | None, int | None]:
    """(first word, last word inclusive) of the characters [start, end) of `words` joined by single spaces, as
    gliner's `process` maps them; None for a side that falls inside a word. gliner stops looking at the word that
    ends at `end`, so a start after it is None too."""
    starts, ends, offset = {}, {}, 0
    for index, word in enumerate(words):
        starts[offset], ends[offset + len(word)] = index, index
        offset += len(word) + 1
    last = ends.get(end)
    first = starts.get(start)
    if first is not None and last is not None and first > last:
        first = None
    return first, last


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, dict) or not isinstance(record.get("sentence"), str):
        return 'expected {"sentence": str, "entities": [...]}'
    entities = record.get("entities")
    if not isinstance(entities, list):
        return '"entities" must be a list'
    for entity in entities:
        pos = entity.get("pos") if isinstance(entity, dict) else None
        if not (isinstance(pos, list) and len(pos) == 2 and all(type(p) is int for p in pos)):
            return f'entity {entity!r}: expected "pos": [first_char, end_char]'
        if not isinstance(entity.get("type"), str):
            return f'entity {entity!r}: expected "type": str'
    return None


def sentence_example(record: dict[str, Any]) -> Example:
    """A `{"sentence", "entities"}` record as an Example over its whitespace words; an entity whose characters do
    not start or end at a word keeps None there (it stays in the gold and is never matched, as in gliner)."""
    words = record["sentence"].split()
    ner = [[*char_span_to_words(words, *entity["pos"]), entity["type"].lower()] for entity in record["entities"]]
    return {"tokenized_text": words, "ner": ner}


@dataclasses.dataclass(frozen=True)
class BenchmarkDataset:
    """One dataset's test split as Examples, its labels (lower-cased, file order) and whether it is nested."""

    name: str
    examples: list[Example]
    labels: list[str]
    nested: bool

    @property
    def zero_shot(self) -> bool:
        return self.name in ZERO_SHOT


def _role_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.glob("*.json")):
        role = next((role for role in ROLES if role in path.name), None)
        if role is None or path.name.startswith("."):
            continue
        if role in found:
            raise ValueError(f"{folder}: two {role} files, {found[role].name} and {path.name}")
        found[role] = path
    for role in ("test", "labels"):
        if role not in found:
            raise ValueError(f"{folder}: no {role} file (a *.json file whose name contains '{role}')")
    return found


def read_dataset(folder: str | Path) -> BenchmarkDataset:
    """A dataset folder's test split and labels; ValueError naming the file for anything malformed."""
    folder = Path(folder)
    files = _role_files(folder)
    records = read_json(files["test"])
    if not isinstance(records, list):
        raise ValueError(f"{files['test']}: expected a JSON list of records")
    for index, record in enumerate(records):
        if problem := _record_problem(record):
            raise ValueError(f"{files['test']}: record {index}: {problem}")
    labels = read_json(files["labels"])
    if not (isinstance(labels, list) and labels and all(isinstance(label, str) for label in labels)):
        raise ValueError(f"{files['labels']}: expected a non-empty JSON list of label strings")
    nested = any(marker in folder.name for marker in NESTED_MARKERS)
    examples = [sentence_example(record) for record in records]
    return BenchmarkDataset(folder.name, examples, [label.lower() for label in labels], nested)


def read_benchmark(root: str | Path) -> list[BenchmarkDataset]:
    """Every dataset folder of `root` (by name), `sample_` folders skipped; ValueError when there is none."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder")
    folders = [
        path
        for path in sorted(root.iterdir())
        if path.is_dir() and not path.name.startswith(".") and "sample_" not in path.name
    ]
    if not folders:
        raise ValueError(f"{root}: no dataset folders (expected ROOT/NAME/ with test and labels JSON files)")
    return [read_dataset(folder) for folder in folders]


@dataclasses.dataclass(frozen=True)
class DatasetResult:
    """A dataset's scores and what it was evaluated as."""

    name: str
    examples: int
    nested: bool
    zero_shot: bool
    evaluation: Evaluation


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclasses.dataclass(frozen=True)
class BenchmarkResult:
    """Per-dataset scores, in name order, and the two F1 averages (None for an empty group)."""

    datasets: list[DatasetResult]

    @property
    def zero_shot_f1(self) -> float | None:
        """Mean F1 over the zero-shot datasets."""
        return _mean([result.evaluation.f1 for result in self.datasets if result.zero_shot])

    @property
    def all_f1(self) -> float | None:
        """Mean F1 over every other dataset (gliner's 'all datasets except crossNER')."""
        return _mean([result.evaluation.f1 for result in self.datasets if not result.zero_shot])

    def table(self) -> str:
        """Plain text: the datasets outside the zero-shot set and their average, then the zero-shot ones and theirs."""
        width = max(len("zero-shot average"), *(len(result.name) for result in self.datasets))
        lines = [f"{'dataset':<{width}}  {'P':>7}  {'R':>7}  {'F1':>7}"]
        groups = ((False, self.all_f1, "average"), (True, self.zero_shot_f1, "zero-shot average"))
        for zero_shot, average, title in groups:
            for result in self.datasets:
                if result.zero_shot == zero_shot:
                    e = result.evaluation
                    lines.append(f"{result.name:<{width}}  {e.precision:>7.2%}  {e.recall:>7.2%}  {e.f1:>7.2%}")
            lines.append(f"{title:<{width}}  {'':>7}  {'':>7}  {'-' if average is None else f'{average:.2%}':>7}")
        return "\n".join(lines)

    def scalars(self, prefix: str) -> dict[str, float]:
        """Flat scores for a metrics log: "PREFIX/zero_shot_f1" and "PREFIX/all_f1" (where the group is not empty)
        and "PREFIX/NAME/f1" of each dataset."""
        averages = {f"{prefix}/zero_shot_f1": self.zero_shot_f1, f"{prefix}/all_f1": self.all_f1}
        values = {name: value for name, value in averages.items() if value is not None}
        return values | {f"{prefix}/{result.name}/f1": result.evaluation.f1 for result in self.datasets}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: both averages and, per dataset, its scores (`Evaluation.to_dict`) and how it was read."""
        datasets = {
            result.name: {
                "examples": result.examples,
                "nested": result.nested,
                "zero_shot": result.zero_shot,
                **result.evaluation.to_dict(),
            }
            for result in self.datasets
        }
        return {"zero_shot_f1": self.zero_shot_f1, "all_f1": self.all_f1, "datasets": datasets}


def evaluate_benchmark(
    model: WordPredictor,
    datasets: Sequence[BenchmarkDataset],
    *,
    threshold: float = THRESHOLD,
    batch_size: int = BATCH_SIZE,
    progress: bool = False,
) -> BenchmarkResult:
    """Scores of `model` on each dataset's test split: every text given all the dataset's labels, flat unless the
    dataset is nested; a progress bar over the datasets when `progress`."""
    results = []
    for dataset in tqdm(datasets, desc="benchmark", unit="dataset", disable=not progress):
        evaluation = evaluate_examples(
            model,
            dataset.examples,
            labels=dataset.labels,
            threshold=threshold,
            batch_size=batch_size,
            flat_ner=not dataset.nested,
        )
        results.append(
            DatasetResult(dataset.name, len(dataset.examples), dataset.nested, dataset.zero_shot, evaluation)
        )
    return BenchmarkResult(results)

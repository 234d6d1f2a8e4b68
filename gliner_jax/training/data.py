"""Training data: GLiNER records (`gliner_jax.data_formats`) from JSON / JSONL, ArrayRecord shards or TFDS, and the
Grain pipeline that turns them into batches of the training contract.

Label sampling and entity targets follow gliner 0.2.29's `batch_generate_class_mappings` (the uni-encoder's per
example, the bi-encoder's one list shared by the batch) and the span / token processors' `create_labels`; the only
change is determinism: where gliner iterates over a set (in-batch types, positives + negatives), we iterate over the
sorted set, so a seed fixes every batch.

A bi-encoder's batch holds no label prompt: its labels, shared by the global batch, are tokenized for the label
encoder as a table (`labels_input_ids`, `labels_attention_mask` [L, T_l], identical on every host, L a multiple of
`label_rows_multiple` so that the table splits evenly over the data devices) and `labels_index` [B, C] places them
in each row.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grain
import numpy as np

from gliner_jax.buckets import entity_bucket
from gliner_jax.checkpoint_io import new_folder
from gliner_jax.data_formats import (
    Example,
    Split,
    bio_spans,
    check_record,
    labels_of,
    normalize_record,
    read_source,
)
from gliner_jax.packing import pack
from gliner_jax.text.collate import Batch, Processor
from gliner_jax.text.words import split_words
from gliner_jax.training.config import source_name
from gliner_jax.training.decoder_data import BLANK_LABEL, DecoderBatches

logger = logging.getLogger(__name__)

NUM_SAMPLED_NEGATIVES = 100  # gliner's `sampled_neg`: in-batch types drawn per batch
RELATION_NEGATIVE_RATIO = (1.0, 10.0)  # gliner's negative_ratio: negative pairs per positive, drawn per example
SHARD_PATTERN = "examples.array_record-{index:05d}-of-{count:05d}"
SOURCE_COUNTS = "source_counts"  # a mixture's batch: records drawn from each source so far (see make_train_dataset)


class ArrayRecordExamples:
    """Random access to the examples in ArrayRecord shards (a folder written by `prepare_array_record`, or paths).

    Records are decoded lazily; the pipeline checks each one and skips those that are not valid examples.
    """

    def __init__(self, paths: str | Path | Sequence[str | Path]):
        if isinstance(paths, str | Path) and Path(paths).is_dir():
            folder, paths = paths, sorted(Path(paths).glob("*.array_record-*"))
            if not paths:
                raise FileNotFoundError(f"no ArrayRecord shards (*.array_record-*) in {folder}")
        elif isinstance(paths, str | Path):
            paths = [paths]
        self._source = grain.sources.ArrayRecordDataSource([str(path) for path in paths])

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> Any:
        return json.loads(self._source[index])


class TfdsExamples:
    """Random access to a TFDS data source of tokens + ClassLabel BIO tags, converted to examples."""

    def __init__(
        self,
        source: Any,
        tag_names: Sequence[str],
        *,
        tokens_feature: str = "tokens",
        tags_feature: str = "ner",
        label_map: Mapping[str, str] | None = None,
    ):
        self._source = source
        self.tag_names = list(tag_names)
        self.tokens_feature = tokens_feature
        self.tags_feature = tags_feature
        self.label_map = dict(label_map or {})

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> Example:
        record = self._source[index]
        tokens = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in record[self.tokens_feature]]
        tags = [self.tag_names[int(tag)] for tag in record[self.tags_feature]]
        if len(tags) != len(tokens):
            raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")
        ner = [[s, e, self.label_map.get(kind, kind)] for s, e, kind in bio_spans(tags)]
        return {"tokenized_text": tokens, "ner": ner}


def tfds_source(
    name: str,
    split: str,
    *,
    data_dir: str | Path | None = None,
    tags_feature: str = "ner",
    tokens_feature: str = "tokens",
    label_map: Mapping[str, str] | None = None,
) -> TfdsExamples:
    """A prepared TFDS dataset (array_record format, read with `tfds.data_source`, no TensorFlow) of tokens and
    ClassLabel BIO / IOB tags (e.g. conll2003's or wikiann's "ner"), as examples: "B-PER"/"I-PER" -> "PER", then
    renamed through `label_map` where it has the type (e.g. {"PER": "person"})."""
    import tensorflow_datasets as tfds

    source = tfds.data_source(name, split=split, data_dir=None if data_dir is None else str(data_dir))
    tag_names = source.dataset_info.features[tags_feature].feature.names
    return TfdsExamples(
        source, tag_names, tokens_feature=tokens_feature, tags_feature=tags_feature, label_map=label_map
    )


def open_source(
    spec: str, *, strict: bool = False, data_format: str = "auto", split: Split = split_words
) -> Sequence[Any]:
    """A training source from its description: "tfds:NAME:SPLIT", a folder of ArrayRecord shards, or a file in
    `data_format` (`data_formats.read_source`: read and checked up front; `strict` refuses bad records; `split`, the
    model's word splitter, splits the texts of character-offset records)."""
    if spec.startswith("tfds:"):
        name, _, split = spec.removeprefix("tfds:").partition(":")  # splits may hold ":" (train[:10%])
        if not name or not split:
            raise ValueError(f"expected tfds:NAME:SPLIT, got {spec!r}")
        return tfds_source(name, split)
    source = (
        ArrayRecordExamples(spec)
        if Path(spec).is_dir()
        else read_source(spec, data_format, strict=strict, split=split)[0]
    )
    if not len(source):
        raise ValueError(f"{spec}: no training examples")
    return source


@dataclasses.dataclass(frozen=True)
class WeightedSource:
    """A source of a mixture: its name (in the logs and metrics), its examples and its weight."""

    name: str
    examples: Sequence[Any]
    weight: float = 1.0


def open_mixture(
    specs: Sequence[Mapping[str, Any]], *, strict: bool = False, split: Split = split_words
) -> list[WeightedSource]:
    """The sources of a `data.sources` mixture ({path, weight, format, name}, see `config.DataSection`), opened with
    `open_source` (texts split by `split`); logs each one's size and weight."""
    sources = [
        WeightedSource(
            source_name(spec),
            open_source(spec["path"], strict=strict, data_format=spec.get("format", "auto"), split=split),
            float(spec.get("weight", 1.0)),
        )
        for spec in specs
    ]
    total = sum(source.weight for source in sources)
    for source in sources:
        logger.info(
            "data source %s: %d examples, weight %g (%.1f%% of the stream)",
            source.name,
            len(source.examples),
            source.weight,
            100 * source.weight / total,
        )
    return sources


@dataclasses.dataclass(frozen=True)
class _Tag(grain.transforms.MapWithIndex):
    """A mixture's record as (its source, its position in that source's stream, the record)."""

    source: int

    def map_with_index(self, index: int, record: Example | None) -> tuple[int, int, Example | None]:
        return self.source, index, record


class CheckedSource:
    """A source whose bad records read as None, logged with a running count, so that the pipeline skips them."""

    def __init__(self, source: Sequence[Any]):
        self._source = source
        self.skipped = 0  # in this process; worker processes count their own

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> Example | None:
        try:
            record = self._source[index]
        except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError) as error:  # JSON errors included
            reason = f"unreadable: {error}"
        else:
            reason = check_record(record)
        if reason is None:
            return normalize_record(record)
        self.skipped += 1
        logger.warning("skipping record %d (%d skipped so far): %s", index, self.skipped, reason)
        return None


def sample_labels(
    examples: Sequence[Example], rng: random.Random, *, max_types: int = 25, max_neg_type_ratio: int = 1
) -> list[list[str]]:
    """Each example's labels (class id c is labels[c - 1]), drawn as gliner draws them for a training batch.

    `rng.sample` of at most 100 of the batch's types; per example r = `rng.randint(0, max_neg_type_ratio)` and
    negatives = the first len(ner) * r of them (or its "ner_negatives"); then the set of its positives and
    negatives, shuffled, capped at `max_types` (or its "ner_labels" verbatim). An example with no entity and no
    label gets one empty label. Calls on `rng` happen in gliner's order, on sorted sets.
    """
    types = labels_of(examples)
    negatives = rng.sample(types, k=min(NUM_SAMPLED_NEGATIVES, len(types)))
    max_neg_type_ratio = int(max_neg_type_ratio)
    label_sets = []
    for example in examples:
        ratio = rng.randint(0, max_neg_type_ratio) if max_neg_type_ratio else 0
        if "ner_negatives" in example:
            example_negatives = example["ner_negatives"]
        else:
            example_negatives = negatives[: len(example["ner"]) * ratio]
        if "ner_labels" in example:
            labels = list(example["ner_labels"])
        else:
            labels = sorted({label for _, _, label in example["ner"]} | set(example_negatives))
            rng.shuffle(labels)
            labels = labels[: int(max_types)]
        if not example["ner"] and not labels:
            labels = [""]
        label_sets.append(labels)
    return label_sets


def sample_shared_labels(examples: Sequence[Example], rng: random.Random, *, max_types: int = 25) -> list[str]:
    """The one label list a bi-encoder's batch shares (class id c is labels[c - 1] in every example), drawn as
    gliner's bi-encoder processor draws it: the union of each example's positives and its "ner_negatives" (or its
    "ner_labels" verbatim), shuffled, capped at `max_types` per example. A batch without any entity or label gets
    one empty label."""
    classes: set[str] = set()
    for example in examples:
        if "ner_labels" in example:
            classes.update(example["ner_labels"])
        else:
            classes.update(label for _, _, label in example["ner"])
            classes.update(example.get("ner_negatives", ()))
    labels = sorted(classes)
    rng.shuffle(labels)
    labels = labels[: int(max_types) * len(examples)]
    return labels or ([""] if examples and not any(example["ner"] for example in examples) else [])


def entity_rows(
    examples: Sequence[Example], label_sets: Sequence[Sequence[str]], lengths: Sequence[int], max_width: int | None
) -> list[list[tuple[int, int, int]]]:
    """Per example, the distinct (start, end, class id) targets, sorted: entities whose label is among its labels
    (class id = position + 1 in the deduplicated label list), that end inside its first `lengths[i]` words (after
    truncation) and, for the span model (`max_width` set), are at most `max_width` words wide."""
    rows = []
    for example, labels, length in zip(examples, label_sets, lengths, strict=True):
        class_ids = {label: c for c, label in enumerate(dict.fromkeys(labels), start=1)}
        targets = {
            (start, end, class_ids[label])
            for start, end, label in example["ner"]
            if label in class_ids and end < length and (max_width is None or end - start < max_width)
        }
        rows.append(sorted(targets))
    return rows


def token_span_rows(
    example: Example,
    labels: Sequence[str],
    length: int,
    neg_spans_ratio: float,
    max_width: int,
    rng: random.Random,
) -> list[tuple[int, int, int]]:
    """One example's span targets for a token model with `represent_spans`, as gliner's token processor builds them
    (`prepare_span_idx`): (start, end, class id) for each entity of its "ner", in order, whose label is among
    `labels` and which ends inside its first `length` words; then int(count * neg_spans_ratio) negatives (class 0)
    drawn from `rng` as gliner draws them (`_generate_negative_spans`: a random start and width of at most
    `max_width` words, kept if it overlaps no gold span and is new; at most 20 draws per negative wanted)."""
    class_ids = {label: c for c, label in enumerate(dict.fromkeys(labels), start=1)}
    rows = [
        (start, end, class_ids[label]) for start, end, label in example["ner"] if label in class_ids and end < length
    ]
    gold = {(start, end) for start, end, _ in rows}
    wanted, negatives, attempts = int(len(rows) * neg_spans_ratio), [], 0
    while length > 0 and len(negatives) < wanted and attempts < wanted * 20:
        attempts += 1
        start = rng.randint(0, length - 1)
        end = start + rng.randint(1, min(max_width, length - start)) - 1
        if (start, end) in gold or (start, end) in negatives:
            continue
        if all(end < first or start > last for first, last in gold):
            negatives.append((start, end))
    return rows + [(start, end, 0) for start, end in negatives]


def sample_relation_labels(
    examples: Sequence[Example], rng: random.Random, *, max_types: int = 25, max_neg_type_ratio: int = 1
) -> list[list[str]]:
    """Each example's relation labels (relation class id c is labels[c - 1]), drawn as gliner's relation processor
    draws them: `rng.sample` of at most 100 of the batch's relation types; per example r = `rng.randint(0,
    max_neg_type_ratio)` and negatives = the first len(relations) * r of them (or its "rel_negatives"); then the set
    of its relation types and negatives, shuffled, capped at `max_types` (or its "rel_labels" verbatim). gliner
    draws r once per example for its entity and relation types; here each has its own draw."""
    types = sorted({kind for example in examples for _, _, kind in example.get("relations", ())})
    negatives = rng.sample(types, k=min(NUM_SAMPLED_NEGATIVES, len(types)))
    max_neg_type_ratio = int(max_neg_type_ratio)
    label_sets = []
    for example in examples:
        relations = example.get("relations", [])
        ratio = rng.randint(0, max_neg_type_ratio) if max_neg_type_ratio else 0
        example_negatives = example.get("rel_negatives", negatives[: len(relations) * ratio])
        if "rel_labels" in example:
            labels = list(example["rel_labels"])
        else:
            labels = sorted({kind for _, _, kind in relations} | set(example_negatives))
            rng.shuffle(labels)
            labels = labels[: int(max_types)]
        label_sets.append(labels)
    return label_sets


def relation_targets(
    example: Example,
    entities: Sequence[tuple[int, int, int]],
    relation_labels: Sequence[str],
    rng: random.Random,
    *,
    negative_ratio: tuple[float, float] = RELATION_NEGATIVE_RATIO,
    labels: Sequence[str] | None = None,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], list[tuple[int, int, int]]]:
    """One example's relation targets, as gliner's relation processor builds them (`create_relation_labels`):
    (the gold entity spans (start, end), in span order, which the model selects in training; the pairs (head,
    tail) of the gold adjacency, as positions in that list; the relation rows (head, tail, class id)).

    `entities` are the example's `entity_rows`; a relation counts when both its entities are among them and its
    type among `relation_labels`. The adjacency holds the positive pairs, each positive's reverse (when not itself
    positive), then random pairs (i != j) until there are max(1, int(positives * ratio)) negatives, ratio =
    `rng.uniform(*negative_ratio)`, at most 10 draws per negative wanted, as gliner does.

    A token-level model (its entity `labels` given) sees every entity row, as gliner's token relation processor
    does (two labels of one span are two entities); a span model each distinct span once."""
    ner = example["ner"]
    if labels is None:
        spans = sorted({(start, end) for start, end, _ in entities})
        position: dict[tuple, int] = {span: i for i, span in enumerate(spans)}
        keys = [tuple(entity[:2]) for entity in ner]
    else:
        entity_ids = {label: c for c, label in enumerate(dict.fromkeys(labels), start=1)}
        spans = [(start, end) for start, end, _ in entities]
        position = {tuple(row): i for i, row in enumerate(entities)}
        keys = [(start, end, entity_ids.get(label, 0)) for start, end, label in ner]
    class_ids = {kind: c for c, kind in enumerate(dict.fromkeys(relation_labels), start=1)}
    rows = sorted(
        {
            (position[keys[head]], position[keys[tail]], class_ids[kind])
            for head, tail, kind in example.get("relations", ())
            if keys[head] in position and keys[tail] in position and kind in class_ids
        }
    )
    rows = [row for row in rows if row[0] != row[1]]  # a pair of one entity with itself is never scored
    positives = {(head, tail) for head, tail, _ in rows}
    count = len(spans)
    wanted = max(1, int(len(positives) * rng.uniform(*negative_ratio)))
    negatives = {(tail, head) for head, tail in sorted(positives)} - positives
    attempts = 0
    while count > 1 and len(negatives) < wanted and attempts < wanted * 10:
        attempts += 1
        pair = (rng.randint(0, count - 1), rng.randint(0, count - 1))
        if pair[0] != pair[1] and pair not in positives:
            negatives.add(pair)
    return spans, sorted(positives | negatives), rows


def _relation_arrays(
    examples: Sequence[Example],
    entity_lists: Sequence[Sequence[tuple[int, int, int]]],
    relation_sets: Sequence[Sequence[str]],
    rng: random.Random,
    num_rows: int,
    max_width: int | None,
    label_sets: Sequence[Sequence[str]],
) -> dict[str, np.ndarray]:
    """A relation batch's targets (`loss.RELATION_TARGETS`): entity_index (span model: [B, E], each gold entity's
    span row start * max_width + end - start; token model, `max_width` None: [B, E, 2], its first and last words),
    entity_mask [B, E], adjacency [B, E, E] (int8) and relation_rows [B, P, 3]; E and P entity buckets, padding
    zeros."""
    targets = [
        relation_targets(example, entities, relations, rng, labels=None if max_width else labels)
        for example, entities, relations, labels in zip(examples, entity_lists, relation_sets, label_sets, strict=True)
    ]
    width = entity_bucket(max((len(spans) for spans, _, _ in targets), default=0))
    index = np.zeros((num_rows, width) if max_width else (num_rows, width, 2), np.int32)
    adjacency = np.zeros((num_rows, width, width), np.int8)
    rows = np.zeros((num_rows, entity_bucket(max((len(r) for _, _, r in targets), default=0)), 3), np.int32)
    for i, (spans, pairs, relation_rows) in enumerate(targets):
        if max_width:
            index[i, : len(spans)] = [start * max_width + end - start for start, end in spans]
        elif spans:
            index[i, : len(spans)] = spans
        for head, tail in pairs:
            adjacency[i, head, tail] = 1
        rows[i, : len(relation_rows)] = np.asarray(relation_rows, np.int32).reshape(-1, 3)
    counts = np.zeros(num_rows, np.int32)
    counts[: len(targets)] = [len(spans) for spans, _, _ in targets]
    mask = np.arange(width) < counts[:, None]
    return {"entity_index": index, "entity_mask": mask, "adjacency": adjacency, "relation_rows": rows}


def _token_span_arrays(
    examples: Sequence[Example],
    label_lists: Sequence[Sequence[str]],
    lengths: np.ndarray,
    processor: Processor,
    rng: random.Random,
    num_rows: int,
) -> dict[str, np.ndarray]:
    """A represent_spans token model's span targets (`loss.TOKEN_SPAN_TARGETS`): token_spans [B, N, 3] (start, end,
    class id; 0 a negative span) and token_span_mask [B, N], N an entity bucket, padding rows (0, 0, 0) unmasked."""
    rows = [
        token_span_rows(example, labels, int(length), processor.neg_spans_ratio, processor.max_width, rng)
        for example, labels, length in zip(examples, label_lists, lengths, strict=False)
    ]
    spans = np.zeros((num_rows, entity_bucket(max(map(len, rows), default=0)), 3), np.int32)
    for i, row in enumerate(rows):
        spans[i, : len(row)] = np.asarray(row, np.int32).reshape(-1, 3)
    counts = np.zeros(num_rows, np.int64)
    counts[: len(rows)] = [len(row) for row in rows]
    return {"token_spans": spans, "token_span_mask": np.arange(spans.shape[1]) < counts[:, None]}


def collate(
    examples: Sequence[Example],
    label_sets: Sequence[Sequence[str]],
    processor: Processor,
    *,
    batch_size: int | None = None,
    label_table: Sequence[str] | None = None,
    label_rows_multiple: int = 1,
    relation_sets: Sequence[Sequence[str]] | None = None,
    rng: random.Random | None = None,
    decoder: DecoderBatches | None = None,
) -> dict[str, np.ndarray]:
    """The training batch contract for `examples` with their labels: the processor's bucketed arrays (rows padded
    to `batch_size`) plus `entities` [B, E, 3] (E a power of two >= 8, padding rows (0, 0, 0)); a bi-encoder's
    label table is `label_table` (default: the examples' distinct labels), its rows a multiple of
    `label_rows_multiple`. A token model with `represent_spans` (the processor's `neg_spans_ratio`) also has its span
    targets (`_token_span_arrays`), the negatives drawn from `rng`. A relation model's batch (the processor has a
    rel_token) also has its `relation_sets` in the prompts, `relations_valid` [B, R] and the relation targets of
    `_relation_arrays`, their negative pairs drawn from `rng`. A decoder model's batch (`decoder`) has its
    blank-entity draw from `rng`, one label per gold span, and the decoder arrays of `decoder_data.DecoderBatches`."""
    label_lists = [list(dict.fromkeys(labels)) for labels in label_sets]
    rng = rng or random.Random(0)
    token_decoder = decoder is not None and decoder.token_level
    blank = decoder is not None and not token_decoder and decoder.blank(rng)
    relex = processor.rel_token is not None
    if relex:
        relation_sets = [list(dict.fromkeys(r)) for r in (relation_sets or [[] for _ in examples])]

    def collate_prompts(blank: bool) -> Batch:
        return processor.collate_words(
            [example["tokenized_text"] for example in examples],
            [[BLANK_LABEL] for _ in label_lists] if blank else label_lists,
            bucket=True,
            batch_size=batch_size,
            label_table=label_table,
            label_rows_multiple=label_rows_multiple,
            relations=relation_sets if relex else None,
        )

    batch = collate_prompts(blank)
    max_width = None if processor.span_mode == "token_level" else processor.max_width
    lengths = batch.text_lengths[: len(examples)].tolist()
    if decoder is None or token_decoder:
        rows = entity_rows(examples, label_lists, lengths, max_width)
    else:
        spans = decoder.gold_spans(examples, label_lists, lengths, blank)
        rows = [[(s, e, c) for s, e, c, _ in row] for row in spans]
    entities = np.zeros((len(batch.input_ids), entity_bucket(max(map(len, rows), default=0)), 3), np.int32)
    for i, row in enumerate(rows):
        entities[i, : len(row)] = np.asarray(row, np.int32).reshape(-1, 3)
    arrays = {"entities": entities}
    if processor.neg_spans_ratio is not None:
        arrays |= _token_span_arrays(examples, label_lists, batch.text_lengths, processor, rng, len(batch.input_ids))
    if token_decoder:  # its blank draw follows the negative spans' draws; its targets keep their classes
        blank = decoder.blank(rng)
        batch = collate_prompts(blank) if blank else batch
        token_spans = (arrays["token_spans"], arrays["token_span_mask"])
        spans = decoder.token_gold_spans(examples, label_lists, lengths, *token_spans)
    arrays = batch.model_arrays() | arrays
    if decoder is not None:
        prompt_words = [processor.prompt([BLANK_LABEL] if blank else labels) for labels in label_lists]
        extra = {"token_spans": token_spans} if token_decoder else {}
        return arrays | decoder.arrays(batch.words, prompt_words, spans, len(batch.input_ids), **extra)
    if not relex:
        return arrays
    targets = _relation_arrays(examples, rows, relation_sets, rng, len(batch.input_ids), max_width, label_lists)
    return arrays | {"relations_valid": batch.relations_valid} | targets


def batch_rng(seed: int, batch_index: int) -> random.Random:
    """The random generator of global batch `batch_index`: the same on every host and after a restore."""
    return random.Random(int(np.random.SeedSequence((seed, batch_index)).generate_state(1, np.uint64)[0]))


@dataclasses.dataclass(frozen=True)
class Packing:
    """Training rows packed with several examples (`gliner_jax.packing`): rows of about `row_length` tokens, their
    number a multiple of `row_multiple` (this host's data shards)."""

    row_length: int = 512
    row_multiple: int = 1

    def __post_init__(self) -> None:
        if self.row_length < 1 or self.row_multiple < 1:
            raise ValueError(f"packing needs row_length and row_multiple >= 1, got {self}")


@dataclasses.dataclass(frozen=True)
class _CollateHostSlice(grain.transforms.MapWithIndex):
    """Samples the labels of global batch `index` (its valid records) and collates this host's share of it: the
    records at positions [process_index * rows, (process_index + 1) * rows), one per row with bad ones left as
    padding rows, or `packing` several per row (bad ones left out). A bi-encoder's shared labels are drawn over the
    global batch and tokenized whole on every host."""

    processor: Processor
    seed: int
    rows: int
    process_index: int
    max_types: int
    max_neg_type_ratio: int
    packing: Packing | None = None
    label_rows_multiple: int = 1
    sources: int = 0
    fixed_labels: tuple[str, ...] | None = None
    decoder: DecoderBatches | None = None

    def map_with_index(self, index: int, records: list[Any]) -> dict[str, np.ndarray]:
        if not self.sources:
            return self._collate(index, records)
        counts = np.zeros(self.sources, np.int64)  # per source, the records drawn through this batch
        for source, position, _ in records:
            counts[source] = max(counts[source], position + 1)
        return self._collate(index, [record for _, _, record in records]) | {SOURCE_COUNTS: counts}

    def _collate(self, index: int, records: list[Example | None]) -> dict[str, np.ndarray]:
        positions = [i for i, record in enumerate(records) if record is not None]
        examples = [records[i] for i in positions]
        rng, table = batch_rng(self.seed, index), None
        if self.fixed_labels is not None:  # gliner's precomputed_prompts_mode: the stored labels, nothing drawn
            label_sets = [list(self.fixed_labels)] * len(examples)
            table = None if self.processor.label_prompt else list(self.fixed_labels)
        elif self.processor.label_prompt:
            label_sets = sample_labels(
                examples, rng, max_types=self.max_types, max_neg_type_ratio=self.max_neg_type_ratio
            )
        else:
            table = sample_shared_labels(examples, rng, max_types=self.max_types)
            label_sets = [table] * len(examples)
        relation_sets = None
        if self.processor.rel_token is not None:  # drawn over the global batch, like the labels
            relation_sets = sample_relation_labels(
                examples, rng, max_types=self.max_types, max_neg_type_ratio=self.max_neg_type_ratio
            )
        first = self.process_index * self.rows
        mine = [j for j, i in enumerate(positions) if first <= i < first + self.rows]
        examples, label_sets = [examples[j] for j in mine], [label_sets[j] for j in mine]
        if relation_sets is not None:
            relation_sets = [relation_sets[j] for j in mine]
        if self.packing is None:
            return collate(
                examples,
                label_sets,
                self.processor,
                batch_size=self.rows,
                label_table=table,
                label_rows_multiple=self.label_rows_multiple,
                relation_sets=relation_sets,
                rng=rng,
                decoder=self.decoder,
            )
        return pack(
            collate(examples, label_sets, self.processor, relation_sets=relation_sets, rng=rng, decoder=self.decoder),
            row_length=self.packing.row_length,
            pad_id=self.processor.tokenizer.pad_token_id,
            multiple=self.packing.row_multiple,
            max_tokens=self.processor.max_tokens,
        )


def mixed_records(
    sources: Sequence[WeightedSource], seed: int, *, shuffle: bool = True, num_epochs: int | None = None
) -> grain.MapDataset:
    """A mixture's stream of (source index, position in that source's stream, record or None when bad): each source
    shuffled (source i with seed + i) and repeated `num_epochs` times (None: forever) on its own, interleaved by
    Grain's `MapDataset.mix` in proportion to the weights (a fixed pattern; finite, it ends when its first source
    runs out)."""
    parts = [
        _shuffled(part.examples, seed + i, shuffle, num_epochs).map_with_index(_Tag(i))
        for i, part in enumerate(sources)
    ]
    return grain.MapDataset.mix(parts, [part.weight for part in sources])


def _shuffled(source: Sequence[Any], seed: int, shuffle: bool, num_epochs: int | None) -> grain.MapDataset:
    dataset = grain.MapDataset.source(CheckedSource(source))
    return (dataset.shuffle(seed) if shuffle else dataset).repeat(num_epochs)


def make_train_dataset(
    source: Sequence[Any] | Sequence[WeightedSource],
    processor: Processor,
    *,
    global_batch_size: int,
    seed: int,
    max_types: int = 25,
    max_neg_type_ratio: int = 1,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    packing: Packing | None = None,
    read_options: grain.ReadOptions | None = None,
    label_rows_multiple: int = 1,
    fixed_labels: Sequence[str] | None = None,
    decoder: DecoderBatches | None = None,
) -> grain.IterDataset:
    """Training batches (the batch contract, NumPy) of this host from a random-access source of records, or from a
    mixture of `WeightedSource`s.

    Every host reads the same global batches (shuffled with `seed`, reshuffled each epoch, `num_epochs` None =
    forever, a last partial batch dropped), samples their labels from (seed, batch index) and collates its own
    `global_batch_size / process_count` examples, one per row or, with `packing`, several per row (the packed
    layout of `gliner_jax.packing`: the same examples, labels and targets), with shapes from the buckets. Records
    are checked as they are read: a bad one is logged and skipped (its row stays a neutral padding row; packed, it
    is left out). A bi-encoder's label table has a multiple of `label_rows_multiple` rows (the trainer's data
    devices). `fixed_labels` (an entity model in `precomputed_prompts_mode`: its stored labels) are every
    example's labels, in that order, as gliner's collator gives them (no label drawn). Batches are collated ahead in
    background threads (`read_options`, default 2 threads, 4 batches). The iterator is checkpointable
    (get_state / set_state, Grain's Orbax handler).

    A mixture's records are those of `mixed_records` (every stretch of the stream holds the sources in proportion;
    with `num_epochs`, the stream ends when the first source runs out). Its batches carry
    SOURCE_COUNTS: per source, the records drawn from it since the start of training, through this batch (0 for a
    source the batch has none of). A decoder model's batches (`decoder`) carry its decoder arrays.
    """
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if global_batch_size % process_count:
        raise ValueError(f"global_batch_size={global_batch_size} is not divisible by {process_count} processes")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is not in [0, {process_count})")
    mixture = isinstance(source, list | tuple) and bool(source) and isinstance(source[0], WeightedSource)
    if mixture:
        dataset = mixed_records(source, seed, shuffle=shuffle, num_epochs=num_epochs)
    else:
        dataset = _shuffled(source, seed, shuffle, num_epochs)
    transform = _CollateHostSlice(
        processor,
        seed,
        global_batch_size // process_count,
        process_index,
        max_types,
        max_neg_type_ratio,
        packing,
        label_rows_multiple,
        len(source) if mixture else 0,
        None if fixed_labels is None else tuple(fixed_labels),
        decoder,
    )
    return (
        dataset.batch(global_batch_size, drop_remainder=True, batch_fn=list)
        .map_with_index(transform)
        .to_iter_dataset(read_options or grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
    )


def prepare_array_record(
    sources: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    *,
    num_shards: int = 1,
    strict: bool = False,
    examples: int | None = None,
    seed: int = 0,
    split: Split = split_words,
) -> dict[str, Any]:
    """Write training sources ({path, weight, format, name}, as `data.sources`) into ArrayRecord shards (one JSON
    example each, group size 1 for random access) in a new folder, split into contiguous runs; returns a summary.

    One source without `examples`: its valid records, in order. Otherwise the mixture as `mixed_records` draws it
    with `seed`: its first `examples` records, or, without `examples`, one pass: until its first source runs out
    (no record twice). Bad records are left out; texts of character-offset records are split into words by `split`
    (the word splitter of the model to train). The shards are written into a temporary sibling folder, renamed to
    `out_dir` when complete; an `out_dir` that exists and is not empty is refused.
    """
    from array_record.python.array_record_module import ArrayRecordWriter

    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if examples is not None and examples < 1:
        raise ValueError(f"examples must be >= 1, got {examples}")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"{out_dir}: exists and is not empty; give a new output folder")
    parts = open_mixture(sources, strict=strict, split=split)
    if len(parts) == 1 and examples is None:
        stream = grain.MapDataset.source(CheckedSource(parts[0].examples)).map_with_index(_Tag(0))
    else:
        stream = mixed_records(parts, seed, num_epochs=1 if examples is None else None)
        stream = stream[:examples] if examples is not None else stream
    bounds = np.linspace(0, len(stream), num_shards + 1).astype(int)
    written = np.zeros(len(parts), np.int64)
    with new_folder(out_dir) as partial:  # written beside, renamed in when complete
        for index in range(num_shards):
            writer = ArrayRecordWriter(
                str(partial / SHARD_PATTERN.format(index=index, count=num_shards)), "group_size:1"
            )
            for source, _, record in stream[bounds[index] : bounds[index + 1]]:
                if record is not None:
                    writer.write(json.dumps(record, ensure_ascii=False).encode("utf-8"))
                    written[source] += 1
            writer.close()
    summary = [
        {"name": part.name, "path": spec["path"], "weight": part.weight, "examples": len(part.examples)}
        | {"written": int(count)}
        for part, spec, count in zip(parts, sources, written, strict=True)
    ]
    for row in summary:
        logger.info("data source %s: %d of its %d examples written", row["name"], row["written"], row["examples"])
    return {
        "sources": summary,
        "records": int(written.sum()),
        "skipped": len(stream) - int(written.sum()),
        "shards": [str(out_dir / SHARD_PATTERN.format(index=i, count=num_shards)) for i in range(num_shards)],
    }

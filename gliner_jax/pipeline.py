"""The inference loop, pipelined: while the devices run batch i, a host thread prepares batch i+1 (windows, collation,
transfer to the devices) and the caller's thread decodes batch i-1; results come out in input order.

Texts come in chunks. A chunk's model rows (`windows.plan_model_rows`: windows x label passes) are sorted by length and
cut into batches, so rows of similar length share a batch; each row's result does not depend on its batch, except for
the span modes that read their batch (markerV1, markerV2: `gliner_batch`), whose rows are batched in order as gliner
batches them. A chunk's word-level entities, merged over its rows with gliner's tie-breaking, are yielded once its last
batch is decoded; entities carry each text's labels (the model reads their prompts). At most a few batches are in
flight, so memory is bounded by the chunk size, whatever the length of the stream. `run_sweep` decodes each batch's
probabilities at several thresholds: one model pass gives the entities of a separate run at each.

A bi-encoder's labels are a table (`LabelTable`): the request's label prompts, embedded once, on the devices. Each
batch carries its rows' `labels_index` (which row of the table each label is) beside its wire array (`to_wire`), and the
table goes to every forward call with it.

With `pack_tokens`, a batch's rows are packed several to an encoder row of up to that many tokens
(`gliner_jax.packing`: block-diagonal attention, positions restarting in each segment), as gliner's inference packing
does, and each row's probabilities are read back from its slot: the same entities, less padding.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import jax
import numpy as np

from gliner_jax.decoding import (
    decode_relations,
    decode_span_batch,
    decode_token_batch,
    merge_spans,
    select_entities,
    select_token_entities,
)
from gliner_jax.packing import pack
from gliner_jax.text.collate import Batch, Processor
from gliner_jax.text.wire import WireSizes, to_wire
from gliner_jax.text.words import Word
from gliner_jax.windows import ModelRow, plan_model_rows

T = TypeVar("T")
WordSpan = tuple[int, int, str, float]  # (first word, last word inclusive, label, score)
RelationTuple = tuple[int, str, int, float]  # (head entity index, relation, tail entity index, score)
# One chunk: anything the caller wants back with its results, the words of each text, and the label set of each
# text as `normalize_labels` gives it ({prompt: label}).
Chunk = tuple[Any, list[list[Word]], list[dict[str, str]]]


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """`items` in order, produced up to `depth` ahead by a background thread. An exception raised while producing
    them is raised here, in its place in the order; closing this iterator stops the thread at its next item."""
    entries: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[str, Any]) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                entries.put(entry, timeout=0.05)
                return True
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
        except BaseException as error:  # handed to the consumer, which raises it
            put(("error", error))
            return
        put(("done", None))

    threading.Thread(target=produce, name="gliner-jax-prefetch", daemon=True).start()
    try:
        while True:
            kind, value = entries.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


@dataclasses.dataclass(frozen=True)
class LabelTable:
    """A bi-encoder request's label table: the label prompts its rows' `labels_index` points into (a prompt's first
    row where it repeats) and their embeddings [L, D] on the devices (L padded to a label bucket, replicated)."""

    prompts: list[str]
    embeddings: jax.Array

    def arrays(self, labels_index: jax.Array) -> dict[str, jax.Array]:
        """The bi-encoder's label arguments of the model for a batch whose labels are `labels_index` (on the
        devices)."""
        return {"labels_index": labels_index, "labels_embeddings": self.embeddings}


@dataclasses.dataclass
class _ChunkState:
    payload: Any
    label_sets: list[dict[str, str]]  # per text, {prompt: label}
    found: dict[float, list[list[WordSpan]]]  # per threshold, per text, from all its rows
    rows_per_text: collections.Counter
    num_batches: int


@dataclasses.dataclass
class _Prepared:
    chunk: _ChunkState
    rows: list[ModelRow]
    inputs: jax.Array | None  # the batch's wire array (`to_wire`) on the devices; None for a chunk without rows
    labels_index: jax.Array | None  # bi-encoder: each row's (or packed slot's) labels in the table, on the devices
    sizes: WireSizes  # what takes it apart
    slots: np.ndarray | None  # packed: where each row's output is among the [rows * slots] outputs
    num_words: np.ndarray
    num_labels: np.ndarray
    last: bool  # the chunk's last batch


@dataclasses.dataclass
class Pipeline:
    """Word-level entities of chunks of texts. `place_rows` puts a batch's wire array (`to_wire`) (and a bi-encoder's
    `labels_index`) on the devices, `forward` runs the model on it, its sizes and a bi-encoder's label arrays
    (labels_index, labels_embeddings; None for a uni-encoder), returning probabilities without waiting for them;
    `batch_rows` and the packed rows of a batch are multiples of `row_multiple`, the row splits of `place_rows`.
    `label_table`: a bi-encoder's (required for one, refused for a uni-encoder), the labels of every chunk.
    `gliner_batch`: rows keep their order and each batch holds that many (padded to `batch_rows`), as gliner
    batches them, for span modes whose logits depend on the batch. `pipelined=False` runs each batch from
    preparation to decoding before the next (no thread); `pack_tokens` packs each batch's rows into encoder rows of
    up to that many tokens (module doc). `sweep`: more thresholds every batch is also decoded at (`run_sweep`)."""

    processor: Processor
    place_rows: Callable[[np.ndarray], jax.Array]
    forward: Callable[[jax.Array, WireSizes, dict[str, jax.Array] | None], jax.Array]
    batch_rows: int
    row_multiple: int
    threshold: float
    flat_ner: bool
    multi_label: bool
    truncate: bool = False
    gliner_batch: int | None = None
    pipelined: bool = True
    pack_tokens: int | None = None
    on_batch: Callable[[int], None] | None = None  # called after each batch with its chunk's number of batches
    label_table: LabelTable | None = None
    sweep: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.processor.label_prompt != (self.label_table is None):
            raise ValueError("a bi-encoder's pipeline needs its label table; a uni-encoder's takes none")

    def run(self, chunks: Iterable[Chunk]) -> Iterator[tuple[Any, list[list[WordSpan]]]]:
        """(payload, entities of each text) per chunk, in order."""
        for payload, found in self.run_sweep(chunks):
            yield payload, found[self.threshold]

    def run_sweep(self, chunks: Iterable[Chunk]) -> Iterator[tuple[Any, dict[float, list[list[WordSpan]]]]]:
        """(payload, {threshold: entities of each text}) per chunk, in order, for `threshold` and each of `sweep`:
        the entities of a run at that threshold, decoded from the same probabilities."""
        batches = self._prepare(chunks)
        if not self.pipelined:
            for prepared in batches:
                yield from self._finish(prepared, self._dispatch(prepared))
            return
        in_flight = None
        with contextlib.closing(prefetch(batches, depth=2)) as ready:
            for prepared in ready:
                output = self._dispatch(prepared)  # asynchronous: the devices work while the host decodes
                if in_flight is not None:
                    yield from self._finish(*in_flight)
                in_flight = (prepared, output)
        if in_flight is not None:
            yield from self._finish(*in_flight)

    def _prepare(self, chunks: Iterable[Chunk]) -> Iterator[_Prepared]:
        for payload, words, label_sets in chunks:
            prompts = [list(label_set) for label_set in label_sets]
            rows = list(plan_model_rows(self.processor, words, prompts, truncate=self.truncate))
            if self.gliner_batch is None:
                rows.sort(key=lambda r: len(r.words) + 2 * len(r.labels))
            per_batch = self.gliner_batch or self.batch_rows
            begins = range(0, len(rows), per_batch)
            counts = collections.Counter(r.text for r in rows)
            found = {threshold: [[] for _ in words] for threshold in self._thresholds}
            chunk = _ChunkState(payload, label_sets, found, counts, len(begins))
            if not rows:
                empty = np.zeros(0, np.int64)
                yield _Prepared(chunk, [], None, None, WireSizes(0, 0, None, None), None, empty, empty, last=True)
            table = None if self.label_table is None else self.label_table.prompts
            for begin in begins:
                part = rows[begin : begin + per_batch]
                batch = self.processor.collate_rows(
                    [r.words for r in part],
                    [r.labels for r in part],
                    batch_size=self.batch_rows,
                    label_table=table,
                    encode_table=False,
                )
                check_not_cut(batch, part, self.processor.tokenizer.model_max_length)
                array, labels_index, sizes, slots = self._layout(batch)
                yield _Prepared(
                    chunk,
                    part,
                    self.place_rows(array),
                    None if labels_index is None else self.place_rows(labels_index),
                    sizes,
                    slots,
                    batch.text_lengths[: len(part)],
                    np.array([len(r.labels) for r in part]),
                    last=begin + per_batch >= len(rows),
                )

    def _layout(self, batch: Batch) -> tuple[np.ndarray, np.ndarray | None, WireSizes, np.ndarray | None]:
        """The batch's wire array (`to_wire`), a bi-encoder's labels_index, their sizes and, packed, where each row's
        output is."""
        if self.pack_tokens is None:
            return batch.to_wire(), batch.labels_index, batch.wire_sizes, None
        arrays = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "words_mask": batch.words_mask,
            "word_counts": batch.text_lengths,
            "label_counts": batch.labels_valid.sum(axis=1),
            "example": np.arange(1, len(batch.input_ids) + 1),  # 0 marks an unused slot
        }
        if batch.labels_index is not None:
            arrays["labels_index"] = batch.labels_index  # per example: [rows, slots, C] once packed
        pad_id, limit = self.processor.tokenizer.pad_token_id, self.processor.max_tokens
        packed = pack(arrays, row_length=self.pack_tokens, pad_id=pad_id, multiple=self.row_multiple, max_tokens=limit)
        names = ("input_ids", "attention_mask", "words_mask", "word_counts", "label_counts")
        examples = packed["example"]
        filled = np.flatnonzero(examples)
        slots = np.empty(len(filled), np.int64)
        slots[examples.flat[filled] - 1] = filled  # rows without words (batch padding) take no slot
        transfer = to_wire(*(packed[name] for name in names))
        return transfer, packed.get("labels_index"), batch.wire_sizes._replace(num_slots=examples.shape[1]), slots

    @property
    def _thresholds(self) -> list[float]:
        return list(dict.fromkeys((self.threshold, *self.sweep)))

    @property
    def _token_level(self) -> bool:
        return self.processor.span_mode == "token_level"

    def _dispatch(self, prepared: _Prepared) -> jax.Array | None:
        if prepared.inputs is None:
            return None
        labels = None if self.label_table is None else self.label_table.arrays(prepared.labels_index)
        return self.forward(prepared.inputs, prepared.sizes, labels)

    def _finish(self, prepared: _Prepared, output: jax.Array | None) -> Iterator[tuple[Any, list[list[WordSpan]]]]:
        chunk = prepared.chunk
        if output is not None:
            probs = np.asarray(output)
            if prepared.slots is None:
                probs = probs[: len(prepared.rows)]
            else:  # [rows, slots, ...] -> the batch's rows
                probs = probs.reshape(-1, *probs.shape[2:])[prepared.slots]
            decode = decode_token_batch if self._token_level else decode_span_batch
            for threshold, found in chunk.found.items():
                options = dict(threshold=threshold, flat_ner=self.flat_ner, multi_label=self.multi_label)
                decoded = decode(probs, prepared.num_words, prepared.num_labels, **options)
                for row, spans in zip(prepared.rows, decoded, strict=True):
                    first, prompts, label_of = row.first_word, row.labels, chunk.label_sets[row.text]
                    found[row.text] += [(first + s, first + e, label_of[prompts[c]], p) for s, e, c, p in spans]
            if self.on_batch is not None:
                self.on_batch(chunk.num_batches)
        if prepared.last:
            options = dict(flat_ner=self.flat_ner, multi_label=self.multi_label, token_level=self._token_level)
            merged = {
                threshold: [
                    merge_spans(spans, list(chunk.label_sets[i].values()), **options)
                    if chunk.rows_per_text[i] > 1
                    else spans
                    for i, spans in enumerate(found)
                ]
                for threshold, found in chunk.found.items()
            }
            yield chunk.payload, merged


def check_not_cut(batch: Batch, rows: list[ModelRow], model_max_length: int) -> None:
    """Refuse rows whose last words the tokenizer cut off (prompt + words over its model_max_length)."""
    marked = batch.words_mask.max(axis=1)
    for i, row in enumerate(rows):
        if marked[i] < len(row.words):
            raise ValueError(
                f"text {row.text}: its label prompt and {len(row.words)} words exceed the tokenizer's "
                f"model_max_length ({model_max_length} tokens); lower max_len or use fewer labels"
            )


@dataclasses.dataclass
class RelationPipeline:
    """Entities and relations of texts with a relation extraction model, batched as gliner batches them (the texts
    with words, in order, `batch_size` to a batch: the entities its relation stage reads depend on the batch's label
    count). Per batch: `entities_forward` (the model's `relex` on the batch's arrays, placed by `place_rows`) gives
    entity probabilities, the states entities are read from and relation prompts; the host selects the entities
    (`decoding.select_entities`, a token model's `select_token_entities`), `relations_forward` gives their
    adjacency and pair probabilities, and both are decoded on the host. A text longer than `max_len` words is cut
    there, as gliner does."""

    processor: Processor
    place_rows: Callable[[np.ndarray], jax.Array]
    entities_forward: Callable[[dict[str, jax.Array]], tuple[jax.Array, jax.Array, jax.Array]]
    relations_forward: Callable[..., tuple[jax.Array | None, jax.Array]]
    batch_size: int
    batch_rows: int
    threshold: float
    adjacency_threshold: float
    relation_threshold: float
    flat_ner: bool
    multi_label: bool

    def run(
        self, words: list[list[Word]], label_sets: list[dict[str, str]], relation_sets: list[list[str]]
    ) -> list[tuple[list[WordSpan], list[RelationTuple]]]:
        """(entities, relations) of each text; a relation names its head and tail by their index among the text's
        entities."""
        results: list[tuple[list[WordSpan], list[RelationTuple]]] = [([], []) for _ in words]
        live = [i for i, row in enumerate(words) if row]
        for begin in range(0, len(live), self.batch_size):
            texts = live[begin : begin + self.batch_size]
            for i, found in zip(texts, self._batch(texts, words, label_sets, relation_sets), strict=True):
                results[i] = found
        return results

    def _batch(
        self,
        texts: list[int],
        words: list[list[Word]],
        label_sets: list[dict[str, str]],
        relation_sets: list[list[str]],
    ) -> list[tuple[list[WordSpan], list[RelationTuple]]]:
        prompts = [list(label_sets[i]) for i in texts]
        relations = [relation_sets[i] for i in texts]
        batch = self.processor.collate_rows(
            [words[i] for i in texts], prompts, batch_size=self.batch_rows, relations=relations
        )
        kept = [ModelRow(i, 0, words[i][: self.processor.max_len], p) for i, p in zip(texts, prompts, strict=True)]
        check_not_cut(batch, kept, self.processor.tokenizer.model_max_length)
        arrays = batch.model_arrays() | {"relations_valid": batch.relations_valid}
        probs, states, relation_prompts = self.entities_forward({k: self.place_rows(v) for k, v in arrays.items()})
        probs = np.asarray(probs)
        num_words, num_labels = batch.text_lengths[: len(texts)], [len(p) for p in prompts]
        options = dict(threshold=self.threshold, flat_ner=self.flat_ner, multi_label=self.multi_label)
        if self.processor.span_mode == "token_level":
            bounds, mask = select_token_entities(probs, self.threshold, int(num_words.max()), max(num_labels))
            index = bounds
            entities = decode_token_batch(probs[: len(texts)], num_words, num_labels, **options)
        else:
            index, mask, bounds = select_entities(probs, batch.span_mask, self.threshold, max(num_labels))
            entities = decode_span_batch(probs[: len(texts)], num_words, num_labels, **options)
        adjacency, pair_probs = self.relations_forward(
            states, self.place_rows(index), self.place_rows(mask), relation_prompts
        )
        found = decode_relations(
            entities,
            bounds,
            mask,
            None if adjacency is None else np.asarray(adjacency),
            np.asarray(pair_probs),
            [len(r) for r in relations],
            adjacency_threshold=self.adjacency_threshold,
            relation_threshold=self.relation_threshold,
        )
        out = []
        for i, spans_i, relations_i, prompts_i, rel_i in zip(texts, entities, found, prompts, relations, strict=True):
            label_of = label_sets[i]
            out.append(
                (
                    [(s, e, label_of[prompts_i[c]], p) for s, e, c, p in spans_i],
                    [(head, rel_i[c], tail, p) for head, c, tail, p in relations_i],
                )
            )
        return out

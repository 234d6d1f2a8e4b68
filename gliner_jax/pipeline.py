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
does, and each row's probabilities are read back from its slot: the same entities, less padding. A relation
batch's rows are packed the same way; the relation stage reads each row's states and relation prompts from its slot.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
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
    decode_token_spans,
    merge_spans,
    select_entities,
    select_token_entities,
)
from gliner_jax.label_generation import DecoderRows, LabelGeneration
from gliner_jax.packing import pack
from gliner_jax.text.collate import Batch, Processor
from gliner_jax.text.wire import WireSizes, to_wire
from gliner_jax.text.words import Word, word_strings
from gliner_jax.windows import ModelRow, plan_model_rows

T = TypeVar("T")
WordSpan = tuple[int, int, str, float]  # (first word, last word inclusive, label, score)
RelationTuple = tuple[int, str, int, float]  # (head entity index, relation, tail entity index, score)
# A span with what was asked for beside it (`Pipeline.class_probs`, `vectors`, `label_vectors`): an entity's extra keys.
DetailedSpan = tuple[int, int, str, float, dict[str, Any]]
# One chunk: anything the caller wants back with its results, the words of each text, the label set of each text as
# `normalize_labels` gives it ({prompt: label}), and None, or per text the only (first, last) word spans to classify
# (gliner's `input_spans`), and None, or per text its relation labels (a relation pipeline's: `RelationStage`).
Chunk = tuple[Any, list[list[Word]], list[dict[str, str]], list[list[tuple[int, int]]] | None, list[list[str]] | None]
# Entities asked for per batch of vectors gathered on the devices are padded up to a power of two, at least this.
MIN_GATHER = 8


@functools.partial(jax.jit, static_argnums=(3, 4))
def _gather(array: jax.Array, examples: jax.Array, positions: jax.Array, lead: int, merge: bool) -> jax.Array:
    """Rows [N, H] of an array of [..., H] on the devices, at (example, position): its `lead` leading axes (row, and
    slot when packed) are the example axis, and with `merge` its two position axes (a span model's W and K) are one."""
    array = array.reshape(-1, *array.shape[lead:])
    if merge:
        array = array.reshape(array.shape[0], -1, array.shape[-1])
    return array[examples, positions]


@jax.jit
def _example_rows(array: jax.Array, examples: jax.Array) -> jax.Array:
    """Rows `examples` [N] of a packed output [rows, slots, ...] on the devices, its rows and slots one axis."""
    return array.reshape(-1, *array.shape[2:])[examples]


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


@dataclasses.dataclass(frozen=True)
class RelationStage:
    """A relation extraction model's second stage, run on the entities the host selects from each batch's entity
    probabilities: `forward` (states, entity index, entity mask, relation prompts, the batch's real rows and each
    row's relation slots, all on the devices; the adjacency threshold) gives the adjacency (None without a relations
    layer) and the pair probabilities, without waiting for them; a relation is kept above both thresholds."""

    forward: Callable[..., tuple[jax.Array | None, jax.Array]]
    adjacency_threshold: float
    relation_threshold: float


@dataclasses.dataclass
class _ChunkState:
    payload: Any
    label_sets: list[dict[str, str]]  # per text, {prompt: label}
    found: dict[float, list[list[WordSpan]]]  # per threshold, per text, from all its rows
    rows_per_text: collections.Counter
    num_batches: int
    relation_sets: list[list[str]] | None = None  # a relation pipeline's: per text, its relation labels
    relations: list[list[RelationTuple]] | None = None  # and per text, its relations


@dataclasses.dataclass
class _Prepared:
    chunk: _ChunkState
    rows: list[ModelRow]
    # the batch's wire array (`to_wire`) on the devices (a relation batch's model arrays); None for a chunk without rows
    inputs: jax.Array | dict[str, jax.Array] | None
    labels_index: jax.Array | None  # bi-encoder: each row's (or packed slot's) labels in the table, on the devices
    sizes: WireSizes  # what takes it apart
    slots: np.ndarray | None  # packed: where each row's output is among the [rows * slots] outputs
    num_words: np.ndarray
    num_labels: np.ndarray
    last: bool  # the chunk's last batch
    allowed: np.ndarray | None = None  # input spans: the candidate spans of each row (see the decoders)
    span_mask: np.ndarray | None = None  # a relation batch of a span model: its span_mask, read to select entities
    decoder: DecoderRows | None = None  # a decoder model's batch: its rows as the label decoder reads them


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
    up to that many tokens (module doc). `sweep`: more thresholds every batch is also decoded at (`run_sweep`).

    `class_probs` (span models), `vectors`, `label_vectors`: each entity comes with a dict of gliner's extra keys
    (`DetailedSpan`): class_probs, its 5 best labels {label: probability}; vector, a span model's span representation
    or a token model's mean word state over the span; label_vector, the label embedding its score came from (NumPy
    float32 [hidden_size]). `forward` then returns (probabilities, {"vectors", "label_vectors"}) as `GLiNERModel`
    does; those arrays stay on the devices, and only the rows of the entities found come back. An entity found in
    several rows (windows, label passes) takes them from the row of its best score.

    `relations` makes it a relation extraction model's pipeline (`run_relations`), batched as gliner batches it
    (`gliner_batch` required): each text that has words is one row of all its labels and relation labels, cut at
    `max_len` words, the rows in order (the entities the relation stage reads depend on the batch's label count).
    `forward` then takes the batch's model arrays ({name: array} on the devices) and returns entity probabilities,
    the states entities are read from and the relation prompts; the host selects the entities
    (`decoding.select_entities`, a token model's `select_token_entities`) and dispatches the relation stage, then
    decodes the batch's entities while it runs, and its relations (`decode_relations`).

    `span_stage` makes it the pipeline of a token model with `represent_spans`, which gliner decodes from span
    logits: `forward` then also keeps "span_words" and "span_prompts" on the devices (`GLiNERModel` with
    `span_states`); at each threshold the host selects the spans of each row from its token probabilities
    (`decoding.select_token_entities`, within the row's words and labels), `span_stage(span_words, span_prompts,
    span_idx)` gives their label probabilities [B, N, C], and `decoding.decode_token_spans` their entities.

    `label_generation` makes it a decoder model's pipeline (decoder_mode "span"), batched as gliner batches it
    (`gliner_batch` required; rows as a relation pipeline's): `forward` returns the span representations too (as with
    `vectors`), the host selects the spans the decoder writes a label for (`label_generation.LabelGeneration`), and
    each entity of such a span carries `generated_labels` first among its extra keys. A token decoder model's
    pipeline has both `span_stage` and `label_generation`: its labels are written for the spans of the span stage,
    from the word states it reads."""

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
    class_probs: bool = False
    vectors: bool = False
    label_vectors: bool = False
    relations: RelationStage | None = None
    label_generation: LabelGeneration | None = None
    span_stage: Callable[[jax.Array, jax.Array, jax.Array], jax.Array] | None = None

    def __post_init__(self) -> None:
        if self.processor.label_prompt != (self.label_table is None):
            raise ValueError("a bi-encoder's pipeline needs its label table; a uni-encoder's takes none")
        if self._detailed and self.sweep:
            raise ValueError("entity details are decoded at one threshold, not in a sweep")
        if (self.relations is not None or self.label_generation is not None) and self.gliner_batch is None:
            raise ValueError("a relation or label-generating pipeline batches rows as gliner does (gliner_batch)")
        if self.label_generation is not None and (self.sweep or self.pack_tokens is not None):
            raise ValueError("label generation runs at one threshold (no sweep), on unpacked rows (no pack_tokens)")

    def run(self, chunks: Iterable[Chunk]) -> Iterator[tuple[Any, list[list[WordSpan]]]]:
        """(payload, entities of each text) per chunk, in order."""
        for payload, found in self.run_sweep(chunks):
            yield payload, found[self.threshold]

    def run_sweep(self, chunks: Iterable[Chunk]) -> Iterator[tuple[Any, dict[float, list[list[WordSpan]]]]]:
        """(payload, {threshold: entities of each text}) per chunk, in order, for `threshold` and each of `sweep`:
        the entities of a run at that threshold, decoded from the same probabilities."""
        if self.relations is not None:
            raise ValueError("a relation pipeline's results come from run_relations")
        for chunk, found in self._run(chunks):
            yield chunk.payload, found

    def run_relations(
        self, chunks: Iterable[Chunk]
    ) -> Iterator[tuple[Any, list[list[WordSpan]], list[list[RelationTuple]]]]:
        """A relation pipeline's (payload, entities of each text, relations of each text) per chunk, in order; a
        relation names its head and tail by their index among its text's entities."""
        if self.relations is None or self._detailed or self.sweep:
            raise ValueError("run_relations needs a relation pipeline (relations), without sweep or entity details")
        for chunk, found in self._run(chunks):
            yield chunk.payload, found[self.threshold], chunk.relations

    def _run(self, chunks: Iterable[Chunk]) -> Iterator[tuple[_ChunkState, dict[float, list[list[WordSpan]]]]]:
        """(chunk, {threshold: entities of each text}) per chunk, in order."""
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
        for payload, words, label_sets, input_spans, relation_sets in chunks:
            prompts = [list(label_set) for label_set in label_sets]
            if self.relations is None and self.label_generation is None:
                rows = list(plan_model_rows(self.processor, words, prompts, truncate=self.truncate))
            else:  # gliner's relation / decoder batches: each text with words, all its labels, its first max_len words
                rows = [ModelRow(i, 0, w[: self.processor.max_len], prompts[i]) for i, w in enumerate(words) if w]
            if self.gliner_batch is None:
                rows.sort(key=lambda r: len(r.words) + 2 * len(r.labels))
            per_batch = self.gliner_batch or self.batch_rows
            begins = range(0, len(rows), per_batch)
            counts = collections.Counter(r.text for r in rows)
            found = {threshold: [[] for _ in words] for threshold in self._thresholds}
            chunk = _ChunkState(payload, label_sets, found, counts, len(begins))
            if self.relations is not None:
                if relation_sets is None or len(relation_sets) != len(words):
                    raise ValueError("a relation pipeline's chunks carry one list of relation labels per text")
                chunk.relation_sets, chunk.relations = relation_sets, [[] for _ in words]
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
                    relations=None if self.relations is None else [relation_sets[r.text] for r in part],
                )
                check_not_cut(batch, part, self.processor)
                if self.relations is None:
                    array, labels_index, sizes, slots = self._layout(batch)
                    inputs = self.place_rows(array)
                else:
                    arrays, slots = batch.model_arrays() | {"relations_valid": batch.relations_valid}, None
                    if self.pack_tokens is not None:
                        arrays, slots = self._pack(arrays)
                    inputs = {name: self.place_rows(value) for name, value in arrays.items()}
                    labels_index, sizes = None, batch.wire_sizes
                yield _Prepared(
                    chunk,
                    part,
                    inputs,
                    None if labels_index is None else self.place_rows(labels_index),
                    sizes,
                    slots,
                    batch.text_lengths[: len(part)],
                    np.array([len(r.labels) for r in part]),
                    last=begin + per_batch >= len(rows),
                    allowed=None
                    if input_spans is None
                    else self._allowed(part, input_spans, batch.words_valid.shape[1]),
                    span_mask=None if self.relations is None else batch.span_mask,
                    decoder=None if self.label_generation is None else self._decoder_rows(part),
                )

    def _decoder_rows(self, rows: list[ModelRow]) -> DecoderRows | None:
        """A decoder batch's rows as the label decoder reads them (label prompt and words), rows padded to
        `batch_rows` on the devices."""
        prompts = [self.processor.prompt(row.labels) for row in rows]
        sequences = [prompt + word_strings(row.words) for prompt, row in zip(prompts, rows, strict=True)]

        def place(array: np.ndarray) -> jax.Array:
            return self.place_rows(np.pad(array, ((0, self.batch_rows - len(array)), (0, 0))))

        return self.label_generation.rows(sequences, [len(prompt) for prompt in prompts], place)

    def _allowed(self, rows: list[ModelRow], input_spans: list[list[tuple[int, int]]], num_words: int) -> np.ndarray:
        """The candidate spans of each row from its text's input spans, shifted into its window: [B, W, K] by start
        and width for a span model (a span wider than max_width is never one, as in gliner), [B, W, W] by start and
        end for the token model."""
        width = num_words if self._token_level else self.processor.max_width
        allowed = np.zeros((len(rows), num_words, width), bool)
        for i, row in enumerate(rows):
            for first, last in input_spans[row.text]:
                start, end = first - row.first_word, last - row.first_word
                if 0 <= start <= end < len(row.words) and (self._token_level or end - start < width):
                    allowed[i, start, end if self._token_level else end - start] = True
        return allowed

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
        }
        if batch.labels_index is not None:
            arrays["labels_index"] = batch.labels_index  # per example: [rows, slots, C] once packed
        packed, slots = self._pack(arrays)
        names = ("input_ids", "attention_mask", "words_mask", "word_counts", "label_counts")
        transfer = to_wire(*(packed[name] for name in names))
        sizes = batch.wire_sizes._replace(num_slots=packed["word_counts"].shape[1])
        return transfer, packed.get("labels_index"), sizes, slots

    def _pack(self, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """A batch's arrays (one row per example) packed into encoder rows of up to `pack_tokens` tokens
        (`gliner_jax.packing.pack`), and where each row's output is among the [rows * slots] outputs (rows without
        tokens, the batch's padding, take no slot)."""
        count = len(arrays["input_ids"])
        pad_id, limit = self.processor.tokenizer.pad_token_id, self.processor.max_tokens
        packed = pack(
            arrays | {"example": np.arange(1, count + 1)},  # 0 marks an unused slot
            row_length=self.pack_tokens,
            pad_id=pad_id,
            multiple=self.row_multiple,
            max_tokens=limit,
        )
        examples = packed.pop("example")
        filled = np.flatnonzero(examples)
        slots = np.empty(len(filled), np.int64)
        slots[examples.flat[filled] - 1] = filled
        return packed, slots

    @property
    def _keeps(self) -> bool:
        """Whether `forward` returns (probabilities, arrays kept on the devices)."""
        keeps = self.vectors or self.label_vectors
        return keeps or self.span_stage is not None or self.label_generation is not None

    def _decode_spans(
        self,
        prepared: _Prepared,
        probs: np.ndarray,
        kept: dict[str, jax.Array],
        examples: np.ndarray,
        options: dict[str, Any],
    ) -> tuple[list[list[tuple[int, int, int, float]]], list[dict[tuple[int, int], list[str]]]]:
        """A represent_spans token model's entities of a batch's rows (token probabilities `probs`, one row per model
        row): each row's spans selected at the threshold, their label probabilities from `span_stage` (the batch's
        rows padded to `batch_rows`; packed, each row's states gathered out of its slot), then decoded; and a token
        decoder model's generated labels per row ({(first, last): [label]}, empty for any other model)."""
        threshold = options["threshold"]
        bounds, mask = select_token_entities(probs, threshold, prepared.num_words, prepared.num_labels)
        if not mask.any():
            return [[] for _ in prepared.rows], [{} for _ in prepared.rows]
        span_idx = np.zeros((self.batch_rows, *bounds.shape[1:]), bounds.dtype)
        span_idx[: len(bounds)] = bounds
        words, prompts = kept["span_words"], kept["span_prompts"]
        if prepared.slots is not None:
            rows = np.zeros(self.batch_rows, np.int32)
            rows[: len(examples)] = examples
            words, prompts = (_example_rows(value, rows) for value in (words, prompts))
        span_probs = np.asarray(self.span_stage(words, prompts, self.place_rows(span_idx)))[: len(bounds)]
        generated = [{} for _ in prepared.rows]
        if self.label_generation is not None:
            stage = self.label_generation
            generated = stage.token_labels(span_probs, bounds, mask, prepared.num_labels, words, prepared.decoder)
        decoded = decode_token_spans(span_probs, bounds, mask, prepared.num_labels, allowed=prepared.allowed, **options)
        return decoded, generated

    @property
    def _thresholds(self) -> list[float]:
        return list(dict.fromkeys((self.threshold, *self.sweep)))

    @property
    def _detailed(self) -> bool:
        return self.class_probs or self.vectors or self.label_vectors

    @property
    def _token_level(self) -> bool:
        return self.processor.span_mode == "token_level"

    def _dispatch(self, prepared: _Prepared) -> jax.Array | None:
        if prepared.inputs is None:
            return None
        labels = None if self.label_table is None else self.label_table.arrays(prepared.labels_index)
        return self.forward(prepared.inputs, prepared.sizes, labels)

    def _finish(
        self, prepared: _Prepared, output: Any
    ) -> Iterator[tuple[_ChunkState, dict[float, list[list[WordSpan]]]]]:
        chunk = prepared.chunk
        if output is not None and self.relations is not None:
            self._relate(prepared, *output)
            if self.on_batch is not None:
                self.on_batch(chunk.num_batches)
        elif output is not None:
            output, kept = output if self._keeps else (output, {})
            probs = np.asarray(output)
            examples = np.arange(len(prepared.rows)) if prepared.slots is None else prepared.slots
            # packed: [rows, slots, ...] -> one axis of examples, the batch's rows among them
            probs = probs.reshape(-1, *probs.shape[1 + (prepared.slots is not None) :])[examples]
            decode = decode_token_batch if self._token_level else decode_span_batch
            for threshold, found in chunk.found.items():
                options = dict(threshold=threshold, flat_ner=self.flat_ner, multi_label=self.multi_label)
                if self.span_stage is None:
                    decoded = decode(
                        probs, prepared.num_words, prepared.num_labels, allowed=prepared.allowed, **options
                    )
                    generated = None
                else:
                    decoded, generated = self._decode_spans(prepared, probs, kept, examples, options)
                details = self._details(decoded, probs, kept, examples, prepared) if self._detailed else None
                if self.label_generation is not None:
                    if generated is None:  # a span model's: from its span representations
                        stage, count = self.label_generation, len(prepared.rows)
                        generated = stage.labels(
                            probs[:count],
                            kept["vectors"],
                            prepared.num_words,
                            prepared.num_labels,
                            threshold,
                            prepared.decoder,
                        )
                    details = self._generated(decoded, details, generated)
                for i, (row, spans) in enumerate(zip(prepared.rows, decoded, strict=True)):
                    first, prompts, label_of = row.first_word, row.labels, chunk.label_sets[row.text]
                    found[row.text] += [
                        (first + s, first + e, label_of[prompts[c]], p, *([] if details is None else [details[i][j]]))
                        for j, (s, e, c, p) in enumerate(spans)
                    ]
            if self.on_batch is not None:
                self.on_batch(chunk.num_batches)
        if prepared.last:
            options = dict(flat_ner=self.flat_ner, multi_label=self.multi_label, token_level=self._token_level)
            merged = {
                threshold: [
                    _merge_detailed(spans, list(chunk.label_sets[i].values()), **options)
                    if chunk.rows_per_text[i] > 1
                    else spans
                    for i, spans in enumerate(found)
                ]
                for threshold, found in chunk.found.items()
            }
            yield chunk, merged

    @staticmethod
    def _generated(
        decoded: list[list[tuple[int, int, int, float]]],
        details: list[list[dict[str, Any]]] | None,
        generated: list[dict[tuple[int, int], list[str]]],
    ) -> list[list[dict[str, Any]]]:
        """Each decoded span's extra keys with its generated labels first (where the decoder wrote one for it)."""
        return [
            [
                {
                    **({"generated_labels": row[s, e]} if (s, e) in row else {}),
                    **({} if details is None else details[i][j]),
                }
                for j, (s, e, _, _) in enumerate(spans)
            ]
            for i, (spans, row) in enumerate(zip(decoded, generated, strict=True))
        ]

    def _relate(self, prepared: _Prepared, probs: jax.Array, states: jax.Array, relation_prompts: jax.Array) -> None:
        """A relation batch's entities and relations into its chunk: the entities the relation stage reads selected
        on the host, that stage dispatched, the batch's entities decoded while it runs, then its relations."""
        chunk, rows, stage = prepared.chunk, prepared.rows, self.relations
        probs = np.asarray(probs)
        if prepared.slots is not None:  # packed: each row's outputs out of its slot, the batch's padding rows empty
            examples = np.zeros(self.batch_rows, np.int32)
            examples[: len(prepared.slots)] = prepared.slots
            flat = probs.reshape(-1, *probs.shape[2:])
            probs = np.zeros((self.batch_rows, *flat.shape[1:]), flat.dtype)
            probs[: len(prepared.slots)] = flat[prepared.slots]
            states, relation_prompts = (_example_rows(value, examples) for value in (states, relation_prompts))
        num_labels = int(prepared.num_labels.max())
        if self._token_level:
            bounds, mask = select_token_entities(probs, self.threshold, int(prepared.num_words.max()), num_labels)
            index = bounds
        else:
            index, mask, bounds = select_entities(probs, prepared.span_mask, self.threshold, num_labels)
        counts = np.zeros(len(index), np.int32)
        counts[: len(rows)] = [len(chunk.relation_sets[row.text]) for row in rows]
        examples = self.place_rows(np.arange(len(index)) < len(rows))
        relations_valid = self.place_rows(np.arange(relation_prompts.shape[1])[None] < counts[:, None])
        threshold = np.float32(stage.adjacency_threshold)
        placed = [self.place_rows(index), self.place_rows(mask), relation_prompts, examples, relations_valid]
        adjacency, pair_probs = stage.forward(states, *placed, threshold)
        decode = decode_token_batch if self._token_level else decode_span_batch
        options = dict(threshold=self.threshold, flat_ner=self.flat_ner, multi_label=self.multi_label)
        entities = decode(probs[: len(rows)], prepared.num_words, prepared.num_labels, **options)
        found = decode_relations(
            entities,
            bounds,
            mask,
            None if adjacency is None else np.asarray(adjacency),
            np.asarray(pair_probs),
            [len(chunk.relation_sets[row.text]) for row in rows],
            adjacency_threshold=stage.adjacency_threshold,
            relation_threshold=stage.relation_threshold,
        )
        for row, spans, relations in zip(rows, entities, found, strict=True):
            label_of, names = chunk.label_sets[row.text], chunk.relation_sets[row.text]
            chunk.found[self.threshold][row.text] = [(s, e, label_of[row.labels[c]], p) for s, e, c, p in spans]
            chunk.relations[row.text] = [(head, names[c], tail, p) for head, c, tail, p in relations]

    def _details(
        self,
        decoded: list[list[tuple[int, int, int, float]]],
        probs: np.ndarray,
        kept: dict[str, jax.Array],
        examples: np.ndarray,
        prepared: _Prepared,
    ) -> list[list[dict[str, Any]]]:
        """Per row, per decoded span, its extra keys in gliner's order (class_probs, vector, label_vector)."""
        flat = [(i, s, e, c) for i, spans in enumerate(decoded) for s, e, c, _ in spans]
        details = [[{} for _ in spans] for spans in decoded]
        cells = [entry for row in details for entry in row]
        if not flat:
            return details
        rows, starts, ends, classes = (np.array(column, np.int64) for column in zip(*flat, strict=True))
        take = functools.partial(_take, examples=examples[rows], packed=prepared.slots is not None)
        if self.class_probs and not self._token_level:  # gliner's token decoder gives none
            for entry, i, s, e in zip(cells, rows, starts, ends, strict=True):
                row = prepared.rows[i]
                label_of = prepared.chunk.label_sets[row.text]
                scores = probs[i, s, e - s, : prepared.num_labels[i]]
                best = np.argsort(-scores, kind="stable")[:5]
                entry["class_probs"] = {label_of[row.labels[c]]: float(scores[c]) for c in best}
        if self.vectors:
            if self._token_level:  # the mean word state: a difference of running sums over the span's length
                counts = (ends - starts + 1).astype(np.float32)[:, None]
                vectors = (take(kept["vectors"], positions=ends + 1) - take(kept["vectors"], positions=starts)) / counts
            else:  # span (s, e) of the [W, K] representations
                width = kept["vectors"].shape[-2]
                vectors = take(kept["vectors"], positions=starts * width + ends - starts, merge=True)
            for entry, vector in zip(cells, vectors.astype(np.float32), strict=True):
                entry["vector"] = vector
        if self.label_vectors:
            for entry, vector in zip(cells, take(kept["label_vectors"], positions=classes), strict=True):
                entry["label_vector"] = vector
        return details


def _take(
    array: jax.Array, *, examples: np.ndarray, positions: np.ndarray, packed: bool, merge: bool = False
) -> np.ndarray:
    """array's rows [N, H] at (example, position), gathered on the devices (`_gather`, N padded to a power of two):
    the example axes (row, and slot when `packed`) are one axis, and with `merge` so are the two position axes (a
    span model's W and K)."""
    count = len(examples)
    padded = max(MIN_GATHER, 1 << (count - 1).bit_length())
    index = np.zeros((2, padded), np.int32)
    index[:, :count] = examples, positions
    return np.asarray(_gather(array, index[0], index[1], 2 if packed else 1, merge), np.float32)[:count]


def _merge_detailed(
    spans: list[WordSpan | DetailedSpan], labels: list[str], **options: Any
) -> list[WordSpan | DetailedSpan]:
    """`merge_spans` over one text's rows, each kept span with the details of the row that gave its score (the first
    such row on equal scores)."""
    best: dict[tuple[int, int, str], tuple[float, dict[str, Any]]] = {}
    for start, end, label, score, *details in spans:
        if details and ((start, end, label) not in best or score > best[start, end, label][0]):
            best[start, end, label] = (score, details[0])
    merged = merge_spans([span[:4] for span in spans], labels, **options)
    return [(*span, best[span[:3]][1]) for span in merged] if best else merged


def check_not_cut(batch: Batch, rows: list[ModelRow], processor: Processor) -> None:
    """Refuse rows whose last words the tokenizer cut off (prompt + words over its model_max_length): words_mask
    marks fewer words than the row has words with subwords (a word without any, such as the spaces some word
    splitters give, is never marked)."""
    marked = batch.words_mask.max(axis=1)
    for i, row in enumerate(rows):
        if marked[i] < len(row.words) and marked[i] < np.count_nonzero(
            processor.tokens_per_word(word_strings(row.words))
        ):
            raise ValueError(
                f"text {row.text}: its label prompt and {len(row.words)} words exceed the tokenizer's "
                f"model_max_length ({processor.tokenizer.model_max_length} tokens); lower max_len or use fewer labels"
            )

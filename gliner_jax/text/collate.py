"""Collation on the host, in NumPy: rows of words and their labels into a `Batch` of model inputs (label prompt,
tokenization, words_mask, span indices, padding).

It follows gliner 0.2.29 (`prepare_batch` and `collate_batch` of `BaseEncoderGLiNER`, with the uni- and bi-encoder
span and token processors and collators): with `bucket=False` the arrays equal the reference's collated tensors.
A bi-encoder's text is its words alone (no label prompt); its labels are the batch's distinct labels, tokenized by
the label tokenizer, and `labels_index` places them in each row (gliner's `labels_gather_indices`).

With `bucket=True` the array shapes are padded up to the sizes of `gliner_jax.buckets`, so that a jit-compiled model
sees few shapes; W is never padded past `max_len`, nor T past the number of absolute position embeddings of an
encoder that has them (its config's `max_tokens`).

With `batch_size`, rows B are padded to that number (bucketing or not). All padding is neutral: input_ids hold
the tokenizer's pad id; attention_mask and words_mask 0; span_idx (0, 0); span_mask, words_valid and labels_valid
False; text_lengths 0.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from gliner_jax.buckets import NO_LIMIT, label_bucket, label_token_bucket, length_bucket
from gliner_jax.modeling.word_pooling import SUBTOKEN_POOLING
from gliner_jax.text.labels import Labels, normalize_labels
from gliner_jax.text.splitters import WordSplitter
from gliner_jax.text.wire import WireSizes, span_arrays, to_wire
from gliner_jax.text.words import Word, WordPieces, joined_word_offsets, prepare_tokenizer, word_strings


@dataclasses.dataclass
class Batch:
    """Model inputs (NumPy, possibly padded to bucket shapes) and per-row host data for decoding."""

    input_ids: np.ndarray  # [B, T] int32
    attention_mask: np.ndarray  # [B, T] int32
    words_mask: np.ndarray  # [B, T] int32 (reference semantics)
    text_lengths: np.ndarray  # [B] int32, number of words per row (0 for padded rows)
    words_valid: np.ndarray  # [B, W] bool, = arange(W) < text_lengths[:, None]
    labels_valid: np.ndarray  # [B, C] bool, True for the row's real labels
    span_idx: np.ndarray | None  # [B, W*K, 2] int32, span model only
    span_mask: np.ndarray | None  # [B, W*K] bool, span model only
    labels_index: np.ndarray | None  # [B, C] int32, bi-encoder only: row of each label in the label table (0: pad)
    labels_input_ids: np.ndarray | None  # [L, T_l] int32, bi-encoder only: the label table's labels, tokenized
    labels_attention_mask: np.ndarray | None  # [L, T_l] int32 (None with precomputed label embeddings)
    word_offsets: list[list[Word]]  # per real row: its (word, char start, char end exclusive), after truncation
    labels: list[list[str]]  # per real row: its label prompts in order (class id c+1 = labels[c])
    relations_valid: np.ndarray | None = None  # [B, R] bool, relation extraction only: the row's real relations
    relations: list[list[str]] | None = None  # relation extraction only, per real row: its relation labels in order

    @property
    def words(self) -> list[list[str]]:
        """Per real row: its words."""
        return list(map(word_strings, self.word_offsets))

    @property
    def word_starts(self) -> list[list[int]]:
        """Per real row: the char start of each word."""
        return [[start for _, start, _ in row] for row in self.word_offsets]

    @property
    def word_ends(self) -> list[list[int]]:
        """Per real row: the char end (exclusive) of each word."""
        return [[end for _, _, end in row] for row in self.word_offsets]

    def model_arrays(self) -> dict[str, np.ndarray]:
        """The arrays `GLiNERModel` takes, by argument name (span_idx / span_mask only for the span model; the label
        arrays only for the bi-encoder)."""
        arrays = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "words_mask": self.words_mask,
            "words_valid": self.words_valid,
            "labels_valid": self.labels_valid,
        }
        if self.span_idx is not None:
            arrays |= {"span_idx": self.span_idx, "span_mask": self.span_mask}
        for name in LABEL_TABLE_ARRAYS:
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        return arrays

    @property
    def wire_sizes(self) -> WireSizes:
        """The `WireSizes` of this batch (not packed)."""
        num_words = self.words_valid.shape[1]
        max_width = None if self.span_idx is None else self.span_idx.shape[1] // max(num_words, 1)
        return WireSizes(num_words, self.labels_valid.shape[1], max_width, None)

    def to_wire(self) -> np.ndarray:
        """The model's inputs as one wire array (`wire.from_wire` takes it apart with `wire_sizes`)."""
        label_counts = self.labels_valid.sum(axis=1)
        return to_wire(self.input_ids, self.attention_mask, self.words_mask, self.text_lengths, label_counts)


# Bi-encoder arrays of the batch contract: labels_index is per row; the tokenized labels are a table shared by the
# batch (leading axis: labels, not rows).
LABEL_TABLE_ARRAYS = ("labels_index", "labels_input_ids", "labels_attention_mask")
SHARED_LABEL_ARRAYS = ("labels_input_ids", "labels_attention_mask")


class Processor:
    """Turns texts (or pre-split words) and entity labels into a `Batch`, as gliner's processor and collator do.

    Like gliner, the tokenizers are adjusted in place: bos/eos are switched on where the text tokenizer defines
    them, and a missing pad token is set to the eos token. With a `labels_tokenizer` it prepares a bi-encoder's
    batches: words alone, labels tokenized by that tokenizer.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        ent_token: str = "<<ENT>>",
        sep_token: str = "<<SEP>>",
        max_width: int = 12,
        max_len: int = 384,
        span_mode: str = "markerV0",
        words_splitter_type: str = "whitespace",
        max_tokens: int | None = None,
        subtoken_pooling: str = "first",
        labels_tokenizer: Any = None,
        labels_max_tokens: int | None = None,
        vocab_size: int | None = None,
        rel_token: str | None = None,
        skip_prompt: bool = False,
        neg_spans_ratio: float | None = None,
    ) -> None:
        """`max_tokens`: the encoder's absolute-position limit, if it has one: longer rows are refused, and token
        buckets never pad past it; `labels_max_tokens` is the label encoder's. `subtoken_pooling` chooses the
        subtokens words_mask marks (see `WordPieces.encode`). `vocab_size`: the text encoder's embedding rows, where
        the tokenizer may give ids past them (a bi-encoder's, to which gliner adds its special tokens without
        embedding them): a text tokenized into such an id is refused. `rel_token`: a relation extraction model's
        relation token; its prompt then holds the relations after the labels. `skip_prompt` (gliner's
        `precomputed_prompts_mode`): the prompt is the `sep_token` alone, the model holding the label prompts.
        `neg_spans_ratio`: a token model with `represent_spans`, whose training batches also hold span targets, with
        that many random negative spans per gold span (`training.data.token_span_rows`); None for other models."""
        if subtoken_pooling not in SUBTOKEN_POOLING:
            raise ValueError(f"unknown subtoken_pooling {subtoken_pooling!r}; known: {SUBTOKEN_POOLING}")
        self.split_words = WordSplitter(words_splitter_type)
        if hasattr(tokenizer, "add_bos_token") and tokenizer.bos_token_id is not None:
            tokenizer.add_bos_token = True
        if hasattr(tokenizer, "add_eos_token") and tokenizer.eos_token_id is not None:
            tokenizer.add_eos_token = True
        self.tokenizer = prepare_tokenizer(tokenizer)
        self.pieces = WordPieces(self.tokenizer)
        self.labels_tokenizer = None if labels_tokenizer is None else prepare_tokenizer(labels_tokenizer)
        self.labels_max_tokens = labels_max_tokens
        self.vocab_size = vocab_size
        self.ent_token = ent_token
        self.sep_token = sep_token
        self.rel_token = rel_token
        self.max_width = max_width
        self.max_len = max_len
        self.span_mode = span_mode
        self.max_tokens = max_tokens
        self.subtoken_pooling = subtoken_pooling
        self.skip_prompt = skip_prompt
        self.neg_spans_ratio = neg_spans_ratio

    @property
    def label_prompt(self) -> bool:
        """Whether labels are written into the text as a prompt (uni-encoder), not read by a label encoder."""
        return self.labels_tokenizer is None

    @classmethod
    def from_config(cls, config: Any, tokenizer: Any, labels_tokenizer: Any = None) -> Processor:
        """A processor for a gliner-style config (ent_token, sep_token, max_width, max_len, span_mode, ...); a
        bi-encoder's (`labels_encoder` set) needs its `labels_tokenizer`."""
        pooling = getattr(config, "subtoken_pooling", "first")
        encoder = getattr(config, "encoder_config", None)
        bi_encoder = getattr(config, "labels_encoder", None) is not None
        if bi_encoder and labels_tokenizer is None:
            raise ValueError(f"the bi-encoder (labels_encoder={config.labels_encoder!r}) needs its label tokenizer")
        return cls(
            tokenizer,
            ent_token=config.ent_token,
            sep_token=config.sep_token,
            max_width=config.max_width,
            max_len=config.max_len,
            span_mode=config.span_mode,
            words_splitter_type=config.words_splitter_type,
            max_tokens=getattr(encoder, "max_tokens", None),
            subtoken_pooling=pooling if isinstance(pooling, str) else "first",  # as gliner's processor reads it
            labels_tokenizer=labels_tokenizer if bi_encoder else None,
            labels_max_tokens=getattr(config.labels_encoder_config, "max_tokens", None) if bi_encoder else None,
            vocab_size=encoder.vocab_size if bi_encoder else None,
            rel_token=config.rel_token if getattr(config, "relations_layer", None) is not None else None,
            skip_prompt=bool(getattr(config, "precomputed_prompts_mode", False)),
            neg_spans_ratio=config.neg_spans_ratio if getattr(config, "represents_spans", False) else None,
        )

    def prepare(self, texts: list[str], labels: Labels, *, bucket: bool = True, batch_size: int | None = None) -> Batch:
        """Split `texts` into words and collate them with `labels` (one list for all texts, or one per text).

        A text without words (empty or whitespace only) gets a neutral row, like a padding row: gliner skips such
        texts and returns no entities for them.
        """
        return self.collate_rows(
            [self.split_words(text) for text in texts], labels, bucket=bucket, batch_size=batch_size
        )

    def collate_words(
        self,
        word_lists: list[list[str]],
        labels: Labels,
        *,
        bucket: bool = True,
        batch_size: int | None = None,
        label_table: Sequence[str] | None = None,
        label_rows_multiple: int = 1,
        relations: Sequence[Sequence[str]] | None = None,
    ) -> Batch:
        """Collate pre-split words with `labels`, as gliner's collator does (an empty word list becomes ["[PAD]"]);
        a bi-encoder's label table and a relation model's `relations` as in `collate_rows`.

        Word offsets are those of the words in `" ".join(words)`.
        """
        rows = [joined_word_offsets(list(words) or ["[PAD]"]) for words in word_lists]
        return self.collate_rows(
            rows,
            labels,
            bucket=bucket,
            batch_size=batch_size,
            label_table=label_table,
            label_rows_multiple=label_rows_multiple,
            relations=relations,
        )

    def word_budget(self, labels: list[str]) -> int | None:
        """How many tokens of words fit beside the prompt of `labels` in the token limit: the tokenizer's
        `model_max_length` (past it the tokenizer cuts words off) or the encoder's absolute positions, whichever is
        lower; None when there is no limit (transformers' huge default `model_max_length`, relative positions)."""
        limit = min(self.tokenizer.model_max_length, self.max_tokens or NO_LIMIT)
        if limit >= NO_LIMIT:
            return None
        prefix, suffix = self.pieces.special_tokens()
        return limit - len(prefix) - int(self.tokens_per_word(self._prompt(labels)).sum()) - len(suffix)

    def tokens_per_word(self, words: list[str]) -> np.ndarray:
        """Subword tokens of each word as the collator tokenizes it (words are tokenized one by one)."""
        return self.pieces.entries(words)[1]

    def _prompt(self, labels: list[str], relations: Sequence[str] = ()) -> list[str]:
        if not self.label_prompt:
            return []
        if self.skip_prompt:
            return [self.sep_token]
        prompt = []
        for label in labels:
            prompt.append(self.ent_token)
            if label:  # gliner keeps the entity token of an empty label but not the label
                prompt.append(label)
        prompt.append(self.sep_token)
        if self.rel_token is not None:  # a relation model's prompt: then each relation (an empty one kept), a <<SEP>>
            for relation in relations:
                prompt += [self.rel_token, relation]
            prompt.append(self.sep_token)
        return prompt

    def _truncate(self, row: list[Word]) -> list[Word]:
        if len(row) > self.max_len:
            warnings.warn(f"Sentence of length {len(row)} has been truncated to {self.max_len}", stacklevel=4)
            return row[: self.max_len]
        return row

    def collate_rows(
        self,
        rows: list[list[Word]],
        labels: Labels,
        *,
        bucket: bool = True,
        batch_size: int | None = None,
        label_table: Sequence[str] | None = None,
        encode_table: bool = True,
        label_rows_multiple: int = 1,
        relations: Sequence[Sequence[str]] | None = None,
    ) -> Batch:
        """Collate rows of (word, char_start, char_end) with `labels`; rows without words become neutral rows.

        Labels are checked as `normalize_labels(..., strict=False)` checks training rows; the model reads their
        prompts.

        Bi-encoder only: `labels_index` points each row's labels into a label table, `label_table` (by default the
        rows' distinct labels, in order of appearance). With `encode_table` the table is tokenized for the label
        encoder, its rows padded (with `bucket`) to a label bucket that is a multiple of `label_rows_multiple`;
        without, the model is given the table's embeddings instead (precomputed).

        Relation extraction models only (`rel_token` set): `relations`, each row's relation labels (default none),
        follow the labels in its prompt (`relations_valid`, padded with `bucket` to a label bucket)."""
        label_sets = [list(prompts) for prompts in normalize_labels(labels, len(rows), strict=False)]
        rows = list(map(self._truncate, rows))  # map, not a comprehension: the warning points at the caller
        num_rows = len(rows) if batch_size is None else batch_size
        if num_rows < len(rows):
            raise ValueError(f"{len(rows)} rows do not fit in batch_size={batch_size}")
        live = [i for i, row in enumerate(rows) if row]

        text_lengths = np.zeros(num_rows, np.int32)
        text_lengths[: len(rows)] = [len(row) for row in rows]
        label_counts = np.zeros(num_rows, np.int32)
        label_counts[live] = [len(label_sets[i]) for i in live]
        num_words, num_labels = int(text_lengths.max(initial=0)), int(label_counts.max(initial=0))
        if relations is not None and self.rel_token is None:
            raise ValueError("relations are read only by a relation extraction model (its processor has a rel_token)")
        relation_sets = [list(r) for r in relations] if relations is not None else [[] for _ in rows]
        if len(relation_sets) != len(rows):
            raise ValueError(f"{len(relation_sets)} relation lists for {len(rows)} rows")
        prompts = [self._prompt(label_sets[i], relation_sets[i]) for i in live]
        sequences = [prompt + word_strings(rows[i]) for prompt, i in zip(prompts, live, strict=True)]
        ids, mask, marks = self.pieces.encode(sequences, [len(prompt) for prompt in prompts], self.subtoken_pooling)
        num_tokens = ids.shape[1]
        self._check_vocabulary(ids)
        if self.max_tokens is not None and num_tokens > self.max_tokens:
            raise ValueError(
                f"a row takes {num_tokens} tokens (label prompt and words), more than the encoder's "
                f"{self.max_tokens} position embeddings; use fewer words or labels"
            )
        if bucket:
            num_words = min(length_bucket(num_words), self.max_len)
            num_tokens = min(length_bucket(num_tokens), self.max_tokens or NO_LIMIT)
            num_labels = label_bucket(num_labels)

        input_ids = np.full((num_rows, num_tokens), self.tokenizer.pad_token_id, np.int32)
        attention_mask = np.zeros((num_rows, num_tokens), np.int32)
        words_mask = np.zeros((num_rows, num_tokens), np.int32)
        width = ids.shape[1]
        cols = slice(num_tokens - width, None) if self.tokenizer.padding_side == "left" else slice(0, width)
        input_ids[live, cols] = ids
        attention_mask[live, cols] = mask
        words_mask[live, cols] = marks

        span_idx = span_mask = None
        if self.span_mode != "token_level":
            span_idx, span_mask = span_arrays(text_lengths, num_words, self.max_width)

        labels_index = labels_input_ids = labels_attention_mask = None
        if not self.label_prompt:
            labels_index, table = self._labels_index(label_sets, live, (num_rows, num_labels), label_table)
            if encode_table:
                table_rows = -(-label_bucket(len(table)) // label_rows_multiple) * label_rows_multiple
                labels_input_ids, labels_attention_mask = self.tokenize_labels(
                    table, rows=table_rows if bucket else None, bucket=bucket
                )

        return Batch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            words_mask=words_mask,
            text_lengths=text_lengths,
            words_valid=np.arange(num_words) < text_lengths[:, None],
            labels_valid=np.arange(num_labels) < label_counts[:, None],
            span_idx=span_idx,
            span_mask=span_mask,
            labels_index=labels_index,
            labels_input_ids=labels_input_ids,
            labels_attention_mask=labels_attention_mask,
            word_offsets=rows,
            labels=label_sets,
            **({} if self.rel_token is None else self._relation_arrays(relation_sets, live, num_rows, bucket)),
        )

    @staticmethod
    def _relation_arrays(relation_sets: list[list[str]], live: list[int], num_rows: int, bucket: bool) -> dict:
        """A relation batch's relations_valid [B, R] (R a label bucket with `bucket`) and relation labels."""
        counts = np.zeros(num_rows, np.int32)
        counts[live] = [len(relation_sets[i]) for i in live]
        width = int(counts.max(initial=0))
        width = label_bucket(width) if bucket else width
        return {"relations_valid": np.arange(width) < counts[:, None], "relations": relation_sets}

    def _check_vocabulary(self, input_ids: np.ndarray) -> None:
        """Refuse token ids the text encoder has no embedding for (see `vocab_size`)."""
        if self.vocab_size is not None and input_ids.size and input_ids.max() >= self.vocab_size:
            token = self.tokenizer.convert_ids_to_tokens(int(input_ids.max()))
            raise ValueError(
                f"the text holds the token {token!r} (id {int(input_ids.max())}), which the text encoder has no "
                f"embedding for (it has {self.vocab_size} rows): gliner adds it to a bi-encoder's tokenizer but never "
                "embeds it"
            )

    def _labels_index(
        self,
        label_sets: list[list[str]],
        live: list[int],
        shape: tuple[int, int],
        table: Sequence[str] | None,
    ) -> tuple[np.ndarray, Sequence[str]]:
        """Bi-encoder: `labels_index` [B, C], the row of each live row's labels in the label table (the first row a
        label has there), and that table (by default the distinct labels of the live rows, in order of appearance)."""
        if table is None:
            table = list(dict.fromkeys(label for i in live for label in label_sets[i]))
        row_of: dict[str, int] = {}
        for j, label in enumerate(table):
            row_of.setdefault(label, j)
        index = np.zeros(shape, np.int32)
        for i in live:
            missing = [label for label in label_sets[i] if label not in row_of]
            if missing:
                raise ValueError(f"labels {missing} have no row in the label table (the given label embeddings)")
            index[i, : len(label_sets[i])] = [row_of[label] for label in label_sets[i]]
        return index, table

    def tokenize_labels(
        self, labels: Sequence[str], *, rows: int | None = None, bucket: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bi-encoder: `labels` tokenized by the label tokenizer as gliner's collator tokenizes them (its special
        tokens, truncation at its `model_max_length`), as input_ids and attention_mask [L, T_l]: padded to `rows`
        rows (neutral rows: pad ids, mask 0) and, with `bucket`, T_l to a label token bucket. An empty list encodes
        gliner's placeholder label "" (never looked up)."""
        if self.labels_tokenizer is None:
            raise ValueError("only a bi-encoder's processor (one with a labels_tokenizer) tokenizes labels")
        encoding = self.labels_tokenizer(list(labels) or [""], truncation=True, padding="longest", return_tensors="np")
        count, width = encoding["input_ids"].shape
        limit = self.labels_max_tokens or NO_LIMIT
        if width > limit:
            raise ValueError(f"a label takes {width} tokens, more than the label encoder's {limit} position embeddings")
        num_rows = max(rows or count, count)
        num_tokens = min(label_token_bucket(width), limit) if bucket else width
        input_ids = np.full((num_rows, num_tokens), self.labels_tokenizer.pad_token_id, np.int32)
        attention_mask = np.zeros((num_rows, num_tokens), np.int32)
        left = self.labels_tokenizer.padding_side == "left"
        cols = slice(num_tokens - width, None) if left else slice(0, width)
        input_ids[:count, cols] = encoding["input_ids"]
        attention_mask[:count, cols] = encoding["attention_mask"]
        return input_ids, attention_mask

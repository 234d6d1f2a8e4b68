"""GLiNER's inference input pipeline on the host, in NumPy: word splitting, label prompt, tokenization, padding.

It follows gliner 0.2.29 (`prepare_batch` and `collate_batch` of `BaseEncoderGLiNER`, with the uni-encoder span
and token processors and collators): with `bucket=False` the arrays equal the reference's collated tensors.

With `bucket=True` the array shapes are padded up to the sizes of `gliner_jax.buckets`, so that a jit-compiled model
sees few shapes; W is never padded past `max_len`, nor T past the number of absolute position embeddings of an
encoder that has them (its config's `max_tokens`).

With `batch_size`, rows B are padded to that number (bucketing or not). All padding is neutral: input_ids hold
the tokenizer's pad id; attention_mask and words_mask 0; span_idx (0, 0); span_mask, words_valid and labels_valid
False; text_lengths 0.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gliner_jax.buckets import NO_LIMIT, label_bucket, length_bucket
from gliner_jax.modeling.word_pooling import SUBTOKEN_POOLING

# gliner's WhitespaceTokenSplitter pattern (Python `re`, Unicode \w).
_WORD = re.compile(r"\w+(?:[-_]\w+)*|\S")

LabelSet = Sequence[str] | Mapping[str, str]  # labels, or {label: description}
Labels = LabelSet | Sequence[LabelSet]  # one label set for every text, or one per text
Word = tuple[str, int, int]  # a word and its character offsets (start, end exclusive) in its text


def split_words(text: str) -> list[Word]:
    """gliner's default ("whitespace") word splitter: (word, char_start, char_end) of each word, in order."""
    return [(match.group(), match.start(), match.end()) for match in _WORD.finditer(text)]


def joined_word_offsets(words: Sequence[str]) -> list[Word]:
    """(word, char_start, char_end) of each word in `" ".join(words)`."""
    row, start = [], 0
    for word in words:
        row.append((word, start, start + len(word)))
        start += len(word) + 1
    return row


def normalize_labels(labels: Labels, num_texts: int, *, strict: bool = True) -> list[dict[str, str]]:
    """One label set per text, as {prompt: label}: the prompt the model reads for each class, in class order, and
    the label an entity of that class is returned with.

    `labels` is one label set for all texts or one per text (a list or tuple of them, one per text). A label set is
    a list of labels, deduplicated keeping the first occurrence (each label is its own prompt), or a
    {label: description} mapping, whose descriptions are the prompts: as gliner 0.2.29's `inference` takes them.

    Raises ValueError for anything else: a bare string, a count of label sets other than `num_texts`, a label or
    description that is not a string, two labels of a mapping with the same description, and, when `strict` (not
    for training rows, which gliner's collator takes as they come), an empty label set or a blank label or
    description."""
    if isinstance(labels, str):
        raise ValueError(f"labels must be a list of label strings, not the string {labels!r}")
    per_text = (
        not isinstance(labels, Mapping)
        and bool(labels)
        and all(isinstance(group, list | tuple | Mapping) for group in labels)
    )
    if per_text and len(labels) != num_texts:
        raise ValueError(f"got {len(labels)} label lists for {num_texts} texts")
    label_sets = list(labels) if per_text else [labels] * num_texts
    return [
        _label_set(label_set, f" for text {index}" if per_text else "", strict)
        for index, label_set in enumerate(label_sets)
    ]


def _label_set(labels: LabelSet, where: str, strict: bool) -> dict[str, str]:
    """{prompt: label} of one label list or {label: description} mapping (see `normalize_labels`)."""
    described = isinstance(labels, Mapping)
    pairs = [(prompt, label) for label, prompt in labels.items()] if described else [(label, label) for label in labels]
    if strict and not pairs:
        raise ValueError(f"the label list{where} is empty")
    what = "labels and descriptions" if described else "labels"
    for value in (value for pair in pairs for value in pair):
        if not isinstance(value, str) or (strict and not value.strip()):
            raise ValueError(f"{what} must be non-empty strings; got {value!r}{where}")
    prompts = dict(pairs)  # a repeated label keeps its first place
    if described and len(prompts) < len(pairs):
        raise ValueError(f"each label needs its own description{where}; got {dict(labels)!r}")
    return prompts


def _words_mask(word_ids: list[int | None], prompt_length: int, pooling: str = "first") -> np.ndarray:
    """gliner's words_mask for one row: the ordinal of distinct word ids seen so far, minus the prompt length, when
    positive, at the subtokens `pooling` reads: each word's first ("first") or last ("last") subtoken, or all of
    them ("mean", "max"); 0 elsewhere (special tokens, prompt words, unread subtokens)."""
    ids = np.array([-1 if i is None else i for i in word_ids], np.int64)
    is_word = ids >= 0
    first = is_word & (ids != np.concatenate([[-1], ids[:-1]]))
    seen = np.cumsum(first)
    if pooling == "first":
        read = first
    elif pooling == "last":
        read = is_word & (ids != np.concatenate([ids[1:], [-1]]))
    else:  # mean, max: every subtoken
        read = is_word
    return np.where(read & (seen > prompt_length), seen - prompt_length, 0)


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
    words: list[list[str]]  # per real row: its words (after truncation)
    word_starts: list[list[int]]  # per real row: char start of each word
    word_ends: list[list[int]]  # per real row: char end (exclusive) of each word
    labels: list[list[str]]  # per real row: its label prompts in order (class id c+1 = labels[c])

    def model_arrays(self) -> dict[str, np.ndarray]:
        """The arrays `GLiNERModel` takes, by argument name (span_idx / span_mask only for the span model)."""
        arrays = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "words_mask": self.words_mask,
            "words_valid": self.words_valid,
            "labels_valid": self.labels_valid,
        }
        if self.span_idx is not None:
            arrays |= {"span_idx": self.span_idx, "span_mask": self.span_mask}
        return arrays


class Processor:
    """Turns texts (or pre-split words) and entity labels into a `Batch`, as gliner's processor and collator do.

    Like gliner, the tokenizer is adjusted in place: bos/eos are switched on where the tokenizer defines them, and
    a missing pad token is set to the eos token.
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
    ) -> None:
        """`max_tokens`: the encoder's absolute-position limit, if it has one: longer rows are refused, and token
        buckets never pad past it. `subtoken_pooling` chooses the subtokens words_mask marks (see `_words_mask`)."""
        if subtoken_pooling not in SUBTOKEN_POOLING:
            raise ValueError(f"unknown subtoken_pooling {subtoken_pooling!r}; known: {SUBTOKEN_POOLING}")
        if words_splitter_type != "whitespace":
            raise NotImplementedError(
                f"words_splitter_type={words_splitter_type!r} is not supported (only 'whitespace')"
            )
        if hasattr(tokenizer, "add_bos_token") and tokenizer.bos_token_id is not None:
            tokenizer.add_bos_token = True
        if hasattr(tokenizer, "add_eos_token") and tokenizer.eos_token_id is not None:
            tokenizer.add_eos_token = True
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has neither a pad token nor an eos token")
        self.tokenizer = tokenizer
        self.ent_token = ent_token
        self.sep_token = sep_token
        self.max_width = max_width
        self.max_len = max_len
        self.span_mode = span_mode
        self.max_tokens = max_tokens
        self.subtoken_pooling = subtoken_pooling

    @classmethod
    def from_config(cls, config: Any, tokenizer: Any) -> Processor:
        """A processor for a gliner-style config (ent_token, sep_token, max_width, max_len, span_mode, ...)."""
        pooling = getattr(config, "subtoken_pooling", "first")
        if getattr(config, "precomputed_prompts_mode", False):
            raise NotImplementedError("precomputed_prompts_mode is not supported")
        encoder = getattr(config, "encoder_config", None)
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
        )

    def prepare(self, texts: list[str], labels: Labels, *, bucket: bool = True, batch_size: int | None = None) -> Batch:
        """Split `texts` into words and collate them with `labels` (one list for all texts, or one per text).

        A text without words (empty or whitespace only) gets a neutral row, like a padding row: gliner skips such
        texts and returns no entities for them.
        """
        return self.collate_rows([split_words(text) for text in texts], labels, bucket=bucket, batch_size=batch_size)

    def collate_words(
        self,
        word_lists: list[list[str]],
        labels: Labels,
        *,
        bucket: bool = True,
        batch_size: int | None = None,
    ) -> Batch:
        """Collate pre-split words with `labels`, as gliner's collator does (an empty word list becomes ["[PAD]"]).

        Word offsets are those of the words in `" ".join(words)`.
        """
        rows = [joined_word_offsets(list(words) or ["[PAD]"]) for words in word_lists]
        return self.collate_rows(rows, labels, bucket=bucket, batch_size=batch_size)

    def word_budget(self, labels: list[str]) -> int | None:
        """How many tokens of words fit beside the prompt of `labels` in the token limit: the tokenizer's
        `model_max_length` (past it the tokenizer cuts words off) or the encoder's absolute positions, whichever is
        lower; None when there is no limit (transformers' huge default `model_max_length`, relative positions)."""
        limit = min(self.tokenizer.model_max_length, self.max_tokens or NO_LIMIT)
        if limit >= NO_LIMIT:
            return None
        prompt = self.tokenizer(self._prompt(labels), is_split_into_words=True)["input_ids"]  # with special tokens
        return limit - len(prompt)

    def tokens_per_word(self, words: list[str]) -> np.ndarray:
        """Subword tokens of each word as the collator tokenizes it (words are tokenized one by one)."""
        word_ids = self.tokenizer(words, is_split_into_words=True, add_special_tokens=False).word_ids()
        return np.bincount([i for i in word_ids if i is not None], minlength=len(words))

    def _prompt(self, labels: list[str]) -> list[str]:
        prompt = []
        for label in labels:
            prompt.append(self.ent_token)
            if label:  # gliner keeps the entity token of an empty label but not the label
                prompt.append(label)
        return [*prompt, self.sep_token]

    def _truncate(self, row: list[Word]) -> list[Word]:
        if len(row) > self.max_len:
            warnings.warn(f"Sentence of length {len(row)} has been truncated to {self.max_len}", stacklevel=4)
            return row[: self.max_len]
        return row

    def collate_rows(
        self, rows: list[list[Word]], labels: Labels, *, bucket: bool = True, batch_size: int | None = None
    ) -> Batch:
        """Collate rows of (word, char_start, char_end) with `labels`; rows without words become neutral rows.

        Labels are checked as `normalize_labels(..., strict=False)` checks training rows; the model reads their
        prompts."""
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
        num_tokens, num_words, num_labels = 0, int(text_lengths.max(initial=0)), int(label_counts.max(initial=0))
        if live:
            prompts = [self._prompt(label_sets[i]) for i in live]
            encoding = self.tokenizer(
                [prompt + [word for word, _, _ in rows[i]] for prompt, i in zip(prompts, live, strict=True)],
                is_split_into_words=True,
                truncation=True,
                padding="longest",
                return_tensors="np",
            )
            num_tokens = encoding["input_ids"].shape[1]
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
        if live:
            width = encoding["input_ids"].shape[1]
            cols = slice(num_tokens - width, None) if self.tokenizer.padding_side == "left" else slice(0, width)
            input_ids[live, cols] = encoding["input_ids"]
            attention_mask[live, cols] = encoding["attention_mask"]
            words_mask[live, cols] = [
                _words_mask(encoding.word_ids(j), len(prompt), self.subtoken_pooling)
                for j, prompt in enumerate(prompts)
            ]

        span_idx = span_mask = None
        if self.span_mode != "token_level":
            starts = np.repeat(np.arange(num_words), self.max_width)
            ends = starts + np.tile(np.arange(self.max_width), num_words)
            lengths = text_lengths[:, None]
            span_idx = np.where((starts < lengths)[..., None], np.stack([starts, ends], -1), 0).astype(np.int32)
            span_mask = ends < lengths

        return Batch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            words_mask=words_mask,
            text_lengths=text_lengths,
            words_valid=np.arange(num_words) < text_lengths[:, None],
            labels_valid=np.arange(num_labels) < label_counts[:, None],
            span_idx=span_idx,
            span_mask=span_mask,
            words=[[word for word, _, _ in row] for row in rows],
            word_starts=[[start for _, start, _ in row] for row in rows],
            word_ends=[[end for _, _, end in row] for row in rows],
            labels=label_sets,
        )

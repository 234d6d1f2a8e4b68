"""A decoder model's label generation on the host (gliner's `UniEncoderSpanDecoderGLiNER`, decoder_mode "span"): the
decoder tokenizer's rows, the spans the decoder writes a label for, gliner's prefix length, the label trie of
`gen_constraints`, and the generated tokens back to text. The decoder itself runs on the devices (`generate`).

gliner's inference, which this follows: every span of a row whose best probability over the row's labels is above the
threshold gets a label (before flat or nested decoding picks the entities), spans in row-major order (start, then
width); the decoder reads the span's prefix (`modeling.label_decoder`) and generates greedily, within the trie of the
`gen_constraints` labels when given; an entity then carries its span's label as `generated_labels` (a list of one).
gliner samples by default (`do_sample=True` at temperature 0.01), whose limit greedy search is.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from gliner_jax.modeling.decoders.generation import TrieTable, trie_table
from gliner_jax.modeling.label_decoder import prefix_length

# Spans generated for per batch are padded up to a power of two, at least this (a bounded number of programs).
MIN_SPANS = 8
# Decoder rows are padded up to a multiple of this many tokens on the devices (gliner's own length sets the prefix).
TOKEN_MULTIPLE = 16


@dataclasses.dataclass(frozen=True)
class GenerationOptions:
    """gliner's generation options of `inference`: `gen_constraints` (the labels generation may write; None: any
    text), `num_gen_sequences` (labels per span) and `max_new_tokens` (gliner's default 15)."""

    gen_constraints: Sequence[str] | None = None
    num_gen_sequences: int = 1
    max_new_tokens: int = 15

    def __post_init__(self) -> None:
        if self.num_gen_sequences != 1:  # gliner runs a beam search of that many beams
            raise NotImplementedError(
                f"num_gen_sequences={self.num_gen_sequences}: only 1 is implemented (gliner's beam search is not)"
            )
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.gen_constraints is not None and (
            isinstance(self.gen_constraints, str) or not all(isinstance(c, str) and c for c in self.gen_constraints)
        ):
            raise ValueError(f"gen_constraints must be a list of non-empty labels, got {self.gen_constraints!r}")


@dataclasses.dataclass(frozen=True)
class DecoderRows:
    """A batch's rows as the decoder reads them: token ids and each token's word (from 1; 0 for prompt and padding
    tokens) [B, T], padded to gliner's length for the batch (its longest row), and on the devices padded further."""

    input_ids: np.ndarray
    words_mask: np.ndarray
    placed: tuple[jax.Array, jax.Array] | None  # (input_ids, words_mask) on the devices; None without context


def generation_ids(tokenizer: Any, decoder_config: Any) -> tuple[int, int]:
    """(end-of-sequence id, pad id) as gliner passes them to generation: the tokenizer's, else the decoder config's;
    the pad id falls back to end-of-sequence (gliner reads an id 0 as none: `pad or config's pad or eos`)."""
    eos = tokenizer.eos_token_id or decoder_config.eos_token_id
    pad = tokenizer.pad_token_id or decoder_config.pad_token_id or eos
    if eos is None:
        raise ValueError("the decoder tokenizer and its config have no end-of-sequence token id")
    return int(eos), int(pad)


def label_trie(tokenizer: Any, labels: Sequence[str]) -> TrieTable:
    """gliner's `set_labels_trie`: each label's decoder tokens (a leading beginning-of-sequence token dropped), then
    end-of-sequence."""
    sequences = []
    for label in labels:
        tokens = list(tokenizer.encode(label))
        if tokens and tokens[0] == tokenizer.bos_token_id:
            tokens = tokens[1:]
        sequences.append([*tokens, tokenizer.eos_token_id])
    return trie_table(sequences)


def decoder_rows(
    tokenizer: Any, sequences: list[list[str]], prompt_lengths: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """gliner's decoder inputs of rows `sequences` (label prompt then words, `prompt_lengths` words of prompt): token
    ids and each token's word (from 1; 0 for prompt and padding tokens) [B, T], padded to the longest row as gliner
    pads them. Every word after the first gets a leading space; the rows are tokenized as words (truncated to the
    tokenizer's limit) and each token numbered with its word after the prompt (a word without tokens takes no
    number, as in gliner)."""
    texts = [[word if i == 0 else f" {word}" for i, word in enumerate(words)] for words in sequences]
    encoded = tokenizer(texts, is_split_into_words=True, truncation=True)
    length = max((len(ids) for ids in encoded["input_ids"]), default=0)
    ids = np.full((len(sequences), length), tokenizer.pad_token_id, np.int32)
    words = np.zeros((len(sequences), length), np.int32)
    for row, skip in enumerate(prompt_lengths):
        ids[row, : len(encoded["input_ids"][row])] = encoded["input_ids"][row]
        seen, previous = 0, None
        for t, word in enumerate(encoded.word_ids(row)):
            if word is not None and word != previous:
                seen += 1
            if word is not None and seen > skip:
                words[row, t] = seen - skip
            previous = word
    return ids, words


def pad_tokens(array: np.ndarray, value: int, multiple: int = TOKEN_MULTIPLE) -> np.ndarray:
    """[B, T] padded with `value` up to a multiple of `multiple` tokens (at least one multiple)."""
    padded = -(-max(array.shape[1], 1) // multiple) * multiple
    return np.pad(array, ((0, 0), (0, padded - array.shape[1])), constant_values=value)


def selected_spans(
    probs: np.ndarray, num_words: np.ndarray, num_labels: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """The spans gliner generates a label for, in its order: (rows [M], flat span index start * K + width [M]) of
    the spans of span probabilities `probs` [B, W, K, C] inside their row (`num_words`) whose best probability over
    the row's `num_labels` labels is above `threshold`."""
    _, width_slots, max_width, _ = probs.shape
    labels_ok = np.arange(probs.shape[-1])[None, :] < num_labels[:, None]
    best = np.where(labels_ok[:, None, None, :], probs, -np.inf).max(axis=-1)  # [B, W, K]
    ends = np.arange(width_slots)[:, None] + np.arange(max_width)[None, :]
    keep = (best > threshold) & (ends[None] < num_words[:, None, None])
    rows, starts, widths = np.nonzero(keep)
    return rows, starts * max_width + widths


@dataclasses.dataclass(frozen=True)
class LabelGeneration:
    """A decoder model's label stage: `generate(span_reps, examples, positions, span_words, context, prefix_len,
    trie)` runs the decoder on the devices over the selected spans (`span_reps`: the batch's span representations
    [B, W, K, H] on the devices; `context`: the placed `DecoderRows` or None) and returns the tokens [M, max_new]
    without waiting for them."""

    generate: Callable[..., jax.Array]
    tokenizer: Any
    max_width: int
    context: bool
    trie: TrieTable | None
    # the pipeline's host thread tokenizes rows while the caller's decodes labels: one tokenizer call at a time
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, compare=False)

    def rows(
        self, sequences: list[list[str]], prompt_lengths: list[int], place: Callable[[np.ndarray], jax.Array]
    ) -> DecoderRows | None:
        """The batch's `DecoderRows` where the prefixes read the span's words (`full_decoder_context`), placed by
        `place` padded to `TOKEN_MULTIPLE` tokens."""
        if not self.context:
            return None
        with self.lock:
            ids, words = decoder_rows(self.tokenizer, sequences, prompt_lengths)
        placed = (place(pad_tokens(ids, self.tokenizer.pad_token_id)), place(pad_tokens(words, 0)))
        return DecoderRows(ids, words, placed)

    def labels(
        self,
        probs: np.ndarray,
        span_reps: jax.Array,
        num_words: np.ndarray,
        num_labels: np.ndarray,
        threshold: float,
        decoder: DecoderRows | None,
    ) -> list[dict[int, list[str]]]:
        """Per real row of a batch (`probs` [B, W, K, C] of its rows), {flat span index: [generated label]} of the
        spans gliner generates for."""
        rows, flat = selected_spans(probs, num_words, num_labels, threshold)
        found: list[dict[int, list[str]]] = [{} for _ in range(len(probs))]
        if not len(rows):
            return found
        starts = flat // self.max_width
        span_words = np.stack([starts, starts + flat % self.max_width], axis=1)
        prefix_len = 1
        if decoder is not None:
            candidates = int(num_words.max()) * self.max_width
            prefix_len = prefix_length(decoder.words_mask, span_words, rows, self.max_width, candidates)
        count = len(rows)
        padded = max(MIN_SPANS, 1 << (count - 1).bit_length())
        index = np.zeros((4, padded), np.int32)
        index[:, :count] = rows, flat, span_words[:, 0], span_words[:, 1]
        arrays = [jax.numpy.asarray(index[0]), jax.numpy.asarray(index[1]), jax.numpy.asarray(index[2:].T)]
        tokens = self.generate(span_reps, *arrays, None if decoder is None else decoder.placed, prefix_len, self.trie)
        tokens = np.asarray(tokens)[:count]
        with self.lock:
            texts = self.tokenizer.batch_decode(tokens, skip_special_tokens=True)
        for row, span, text in zip(rows, flat, texts, strict=True):
            found[row][int(span)] = [text]
        return found

"""A decoder model's label generation on the host (gliner's `UniEncoderSpanDecoderGLiNER` and
`UniEncoderTokenDecoderGLiNER`, decoder_mode "span"): the decoder tokenizer's rows, the spans the decoder writes a
label for, gliner's prefix length, the label trie of `gen_constraints`, and the generated tokens back to text. The
decoder itself runs on the devices (`generate`).

gliner's inference, which this follows: every span of a row whose best probability over the row's labels is above the
threshold gets a label (before flat or nested decoding picks the entities), spans in row-major order (start, then
width); the decoder reads the span's prefix (`modeling.label_decoder`) and generates greedily, within the trie of the
`gen_constraints` labels when given; an entity then carries its span's label as `generated_labels` (a list of one;
with `num_gen_sequences` N > 1, transformers' beam search of N beams gives the N best labels, best first).
The token decoder model differs: its spans are the represent_spans spans found in the token probabilities, those
whose best label probability is above 0.5 (not the threshold) get a label, and their prefixes read the word before
the span (`modeling.label_decoder`). gliner samples by default (`do_sample=True` at temperature 0.01), whose limit
greedy search is.
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
    text), `num_gen_sequences` (labels per span: greedy for one, else a beam search of that many beams, as gliner's
    `do_sample=False`) and `max_new_tokens` (gliner's default 15)."""

    gen_constraints: Sequence[str] | None = None
    num_gen_sequences: int = 1
    max_new_tokens: int = 15

    def __post_init__(self) -> None:
        if self.num_gen_sequences < 1:
            raise ValueError(f"num_gen_sequences must be >= 1, got {self.num_gen_sequences}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.gen_constraints is not None and (
            isinstance(self.gen_constraints, str) or not all(isinstance(c, str) and c for c in self.gen_constraints)
        ):
            raise ValueError(f"gen_constraints must be a list of non-empty labels, got {self.gen_constraints!r}")
        if self.gen_constraints is not None and len(set(self.gen_constraints)) < self.num_gen_sequences:
            raise ValueError(  # its beams past the labels take tokens of tied scores, in torch.topk's order
                f"num_gen_sequences={self.num_gen_sequences} is more than the {len(set(self.gen_constraints))} "
                "gen_constraints labels: gliner fills the other beams with tokens outside the constraints"
            )


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


def selected_token_spans(span_probs: np.ndarray, mask: np.ndarray, num_labels: np.ndarray) -> np.ndarray:
    """The spans gliner's token decoder model generates a label for: [B, N] of a represent_spans token model's spans
    (`mask` [B, N]) whose best label probability (`span_probs` [B, N, C], within the row's `num_labels`) is above
    0.5, gliner's fixed selection whatever the inference threshold."""
    labels_ok = np.arange(span_probs.shape[-1])[None, :] < num_labels[:, None]
    best = np.where(labels_ok[:, None, :], span_probs, -np.inf).max(axis=-1, initial=-np.inf)
    return (best > 0.5) & mask


def token_prefix_length(decoder_words_mask: np.ndarray, bounds: np.ndarray, mask: np.ndarray, keep: np.ndarray) -> int:
    """gliner's decoder prefix length for a token decoder batch (with context): one more than the most decoder tokens
    a span slot covers, a span (first, last) covering the tokens numbered first to last (`prefixes` with word_base
    0). The slots are each row's kept spans (`keep` [B, N] of spans `bounds` [B, N, 2], `mask` their validity) and,
    in a row with fewer kept spans than the batch's span count (gliner's N: the most spans a row has, at least one),
    a padding slot, which reads the row's span N - 1 ((0, 0) where the row has fewer spans)."""
    count = max(int(mask.sum(axis=1).max(initial=0)), 1)
    words = decoder_words_mask[:, None, :]
    covered = ((words >= bounds[:, :, :1]) & (words <= bounds[:, :, 1:])).sum(-1)  # [B, N]
    counts = covered[keep].tolist()
    padded = keep.sum(axis=1) < count
    counts += covered[padded, count - 1].tolist()  # bounds hold at least `count` slots, padding (0, 0)
    return 1 + max(counts, default=0)


@dataclasses.dataclass(frozen=True)
class LabelGeneration:
    """A decoder model's label stage. A span model's: `generate(span_reps, examples, positions, span_words, context,
    prefix_len, trie)` runs the decoder on the devices over the selected spans (`span_reps`: the batch's span
    representations [B, W, K, H] on the devices; `context`: the placed `DecoderRows` or None) and returns the tokens
    [M, max_new] without waiting for them. A token model's (`token_level`): `generate(word_states, examples,
    span_words, context, prefix_len, trie)`, `word_states` [B, W, H] what its span representations are read from."""

    generate: Callable[..., jax.Array]
    tokenizer: Any
    max_width: int
    context: bool
    trie: TrieTable | None
    token_level: bool = False
    # the pipeline's host thread tokenizes rows while the caller's decodes labels: one tokenizer call at a time
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, compare=False)

    def rows(
        self, sequences: list[list[str]], prompt_lengths: list[int], place: Callable[[np.ndarray], jax.Array]
    ) -> DecoderRows | None:
        """The batch's `DecoderRows` where the prefixes read the span's words (`full_decoder_context`), placed by
        `place` padded to `TOKEN_MULTIPLE` tokens (the padding tokens numbered -1: no span reads them)."""
        if not self.context:
            return None
        with self.lock:
            ids, words = decoder_rows(self.tokenizer, sequences, prompt_lengths)
        placed = (place(pad_tokens(ids, self.tokenizer.pad_token_id)), place(pad_tokens(words, -1)))
        return DecoderRows(ids, words, placed)

    def labels(
        self,
        probs: np.ndarray,
        span_reps: jax.Array,
        num_words: np.ndarray,
        num_labels: np.ndarray,
        threshold: float,
        decoder: DecoderRows | None,
    ) -> list[dict[tuple[int, int], list[str]]]:
        """A span model's: per real row of a batch (`probs` [B, W, K, C] of its rows), {(first word, last word):
        [generated label]} of the spans gliner generates for."""
        rows, flat = selected_spans(probs, num_words, num_labels, threshold)
        starts = flat // self.max_width
        span_words = np.stack([starts, starts + flat % self.max_width], axis=1)
        prefix_len = 1
        if decoder is not None and len(rows):
            candidates = int(num_words.max()) * self.max_width
            prefix_len = prefix_length(decoder.words_mask, span_words, rows, self.max_width, candidates)
        return self._generated(len(probs), span_reps, rows, span_words, prefix_len, decoder, flat)

    def token_labels(
        self,
        span_probs: np.ndarray,
        bounds: np.ndarray,
        mask: np.ndarray,
        num_labels: np.ndarray,
        span_words: jax.Array,
        decoder: DecoderRows | None,
    ) -> list[dict[tuple[int, int], list[str]]]:
        """A token model's: per real row of a batch (its represent_spans spans `bounds` [B, N, 2], `mask` [B, N],
        their label probabilities `span_probs` [B, N, C]), {(first word, last word): [generated label]} of the spans
        gliner generates for (`selected_token_spans`; a span found for several labels generates once, gliner's
        copies read the same prefix); `span_words`: the batch's word states on the devices."""
        keep = selected_token_spans(span_probs, mask, num_labels)
        prefix_len = 1 if decoder is None else token_prefix_length(decoder.words_mask, bounds, mask, keep)
        rows, slots = np.nonzero(keep)
        unique = sorted({(int(r), *map(int, bounds[r, n])) for r, n in zip(rows, slots, strict=True)})
        rows = np.array([u[0] for u in unique], np.int64)
        spans = np.array([u[1:] for u in unique], np.int64).reshape(-1, 2)
        return self._generated(len(span_probs), span_words, rows, spans, prefix_len, decoder)

    def _generated(
        self,
        count: int,
        states: jax.Array,
        rows: np.ndarray,
        span_words: np.ndarray,
        prefix_len: int,
        decoder: DecoderRows | None,
        flat: np.ndarray | None = None,
    ) -> list[dict[tuple[int, int], list[str]]]:
        """The labels generated for spans `span_words` [M, 2] of `rows` [M] (a span model's at flat positions
        `flat`), per row of `count`."""
        found: list[dict[tuple[int, int], list[str]]] = [{} for _ in range(count)]
        if not len(rows):
            return found
        padded = max(MIN_SPANS, 1 << (len(rows) - 1).bit_length())
        index = np.zeros((4, padded), np.int32)
        index[0, : len(rows)], index[2:, : len(rows)] = rows, span_words.T
        if flat is not None:
            index[1, : len(rows)] = flat
        positions = [] if flat is None else [jax.numpy.asarray(index[1])]
        arrays = [jax.numpy.asarray(index[0]), *positions, jax.numpy.asarray(index[2:].T)]
        context = None if decoder is None else decoder.placed
        tokens = np.asarray(self.generate(states, *arrays, context, prefix_len, self.trie))[: len(rows)]
        sequences = tokens.shape[1]  # labels per span (`num_gen_sequences`)
        with self.lock:
            texts = self.tokenizer.batch_decode(tokens.reshape(-1, tokens.shape[-1]), skip_special_tokens=True)
        for i, (row, (first, last)) in enumerate(zip(rows, span_words, strict=True)):
            found[row][int(first), int(last)] = texts[i * sequences : (i + 1) * sequences]
        return found

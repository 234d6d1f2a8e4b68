"""A decoder model's training batches (gliner's `UniEncoderSpanDecoderProcessor` with labels): the blank-entity draw,
one label per gold span, the decoder rows, each gold span's label tokens and targets, gliner's prefix length.

gliner 0.2.29, which this follows: with probability `blank_entity_prob` per batch the prompt is the one label
"entity" and every gold span has class 1; a span keeps the first of its labels (in the record's order) among the
example's labels, is at most max_width words wide and ends inside the (truncated) text; the decoder's targets are the
spans' labels in row-major span order, tokenized together (padded to the longest; its padding tokens are targets as
well, gliner's `masked_fill` result being discarded). A token decoder model (`UniEncoderTokenDecoderProcessor`) draws
its blank batch after its negative spans, keeps the original classes in its targets (a blank batch's one prompt then
learns the first class's entities), and gives its gold represent_spans spans, unfiltered by width, the labels of the
same entities sorted by position (`token_gold_spans`).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from gliner_jax.buckets import entity_bucket
from gliner_jax.label_generation import decoder_rows, pad_tokens, token_prefix_length
from gliner_jax.modeling.label_decoder import IGNORE_INDEX, prefix_length

BLANK_LABEL = "entity"  # gliner's blank prompt label
LABEL_TOKEN_MULTIPLE = 8  # label token rows are padded to a multiple of this (beyond gliner's length: no targets)


@dataclasses.dataclass(frozen=True)
class DecoderBatches:
    """What a decoder model's batches need: its decoder tokenizer, max_width, whether the prefixes read the span's
    words (`full_decoder_context`) and gliner's `blank_entity_prob`."""

    tokenizer: Any
    max_width: int
    context: bool
    blank_entity_prob: float
    token_level: bool = False  # a token decoder model's (UniEncoderTokenDecoderGLiNER)

    @classmethod
    def of(cls, config: Any, tokenizer: Any) -> DecoderBatches:
        """The batches of a decoder model's `GLiNERConfig` (decoder_mode "span") and decoder tokenizer."""
        token_level = config.span_mode == "token_level"
        return cls(tokenizer, config.max_width, config.decoder_context, config.blank_entity_prob, token_level)

    def blank(self, rng: random.Random) -> bool:
        """Whether a batch is a blank-entity batch (one draw per batch, as gliner's processor draws it)."""
        return rng.uniform(0, 1) < self.blank_entity_prob

    def gold_spans(
        self, examples: Sequence[dict], label_lists: Sequence[Sequence[str]], lengths: Sequence[int], blank: bool
    ) -> list[list[tuple[int, int, int, str]]]:
        """Per example, its gold spans (start, end, class id, label), sorted: one label per span as gliner keeps it."""
        rows = []
        for example, labels, length in zip(examples, label_lists, lengths, strict=True):
            class_ids = {label: c for c, label in enumerate(labels, start=1)}
            spans: dict[tuple[int, int], tuple[int, str]] = {}
            for start, end, label in example["ner"]:
                fits = start >= 0 and 0 <= end - start < self.max_width and end < length
                if label in class_ids and fits and (start, end) not in spans:
                    spans[start, end] = (1 if blank else class_ids[label], label)
            rows.append([(s, e, c, label) for (s, e), (c, label) in sorted(spans.items())])
        return rows

    @staticmethod
    def token_gold_spans(
        examples: Sequence[dict],
        label_lists: Sequence[Sequence[str]],
        lengths: Sequence[int],
        token_spans: np.ndarray,
        token_span_mask: np.ndarray,
    ) -> list[list[tuple[int, int, int, str]]]:
        """A token decoder model's decoder spans per example, paired as gliner pairs them: its represent_spans gold
        spans (class > 0 in `token_spans` [B, N, 3], in the order of its "ner"), each with the label of the entity at
        the same place in gliner's decoder order (the same entities sorted by start and end): a record whose "ner"
        is not in that order trains spans on other spans' labels, as in gliner."""
        rows = []
        for i, (example, labels, length) in enumerate(zip(examples, label_lists, lengths, strict=False)):
            known = set(labels)
            entities = sorted(example["ner"], key=lambda entity: (entity[0], entity[1]))  # stable: ties as given
            ordered = [label for _, e, label in entities if label in known and e < length]
            kept = [(int(s), int(e)) for s, e, c in token_spans[i][token_span_mask[i]] if c > 0]
            rows.append([(s, e, 0, label) for (s, e), label in zip(kept, ordered, strict=True)])
        return rows

    def arrays(
        self,
        words: Sequence[Sequence[str]],
        prompts: Sequence[Sequence[str]],
        spans: Sequence[Sequence[tuple[int, int, int, str]]],
        num_rows: int,
        token_spans: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """The batch's decoder arrays (`training.loss.DECODER_TARGETS`) for rows of `words` with label `prompts`
        and gold `spans`; rows padded to `num_rows`, spans to an entity bucket. A token decoder model's prefix length
        is read from the batch's represent_spans `token_spans` (spans [B, N, 3], mask [B, N]) as gliner reads it in
        training (`label_generation.token_prefix_length`, the gold spans kept)."""
        flat = [(i, s, e, label) for i, row in enumerate(spans) for s, e, _, label in row]
        count = len(flat)
        padded = entity_bucket(count)
        arrays = {"decoder_spans": np.zeros((padded, 3), np.int32)}
        if flat:
            arrays["decoder_spans"][:count] = [(i, s, e) for i, s, e, _ in flat]
        encoded = self.tokenizer([label for *_, label in flat] or ["other"], padding="longest", truncation=True)
        ids = pad_tokens(np.asarray(encoded["input_ids"], np.int32), 0, LABEL_TOKEN_MULTIPLE)
        mask = pad_tokens(np.asarray(encoded["attention_mask"], np.int32), 0, LABEL_TOKEN_MULTIPLE)
        targets = np.where(np.arange(ids.shape[1]) < len(encoded["input_ids"][0]), ids, IGNORE_INDEX)
        for name, value in (("decoder_labels_ids", ids), ("decoder_labels_mask", mask), ("decoder_labels", targets)):
            arrays[name] = np.zeros((padded, ids.shape[1]), np.int32)
            if flat:
                arrays[name][:count] = value[:count]
        arrays["decoder_labels"][count:] = IGNORE_INDEX
        prefix_len = 1
        if self.context:
            sequences = [[*prompt, *row] for prompt, row in zip(prompts, words, strict=True)]
            input_ids, words_mask = decoder_rows(self.tokenizer, sequences, [len(prompt) for prompt in prompts])
            if token_spans is not None:
                bounds, mask = token_spans[0][: len(words)], token_spans[1][: len(words)]
                count = max(int(mask.sum(axis=1).max(initial=0)), 1)  # gliner's span slots per row
                bounds, mask = bounds[:, :count], mask[:, :count]
                prefix_len = token_prefix_length(words_mask, bounds[..., :2], mask, mask & (bounds[..., 2] > 0))
            elif flat:
                rows = np.array([i for i, *_ in flat])
                span_words = np.array([(s, e) for _, s, e, _ in flat])
                candidates = max(map(len, words)) * self.max_width
                prefix_len = prefix_length(words_mask, span_words, rows, self.max_width, candidates)
            extra = ((0, num_rows - len(words)), (0, 0))
            arrays["decoder_input_ids"] = np.pad(pad_tokens(input_ids, self.tokenizer.pad_token_id), extra)
            # past gliner's length the tokens are numbered -1: no span reads them (a token decoder's span from word 0
            # reads gliner's tokens numbered 0, its padding among them)
            arrays["decoder_words_mask"] = np.pad(pad_tokens(words_mask, -1), extra, constant_values=-1)
        arrays["decoder_prefix_len"] = np.full(num_rows, prefix_len, np.int32)
        return arrays

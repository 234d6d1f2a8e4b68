"""gliner's generative label head (`UniEncoderSpanDecoderModel`'s `decoder` and `_enc2dec_proj`): a causal decoder
that writes a label name for each selected span, from a prefix of decoder embeddings.

A span's prefix, `prefix_len` positions long (every span of a batch the same length, as gliner pads them):

- with context (`decoder_mode="span"`, `full_decoder_context`): zeros, then the span representation projected to
  the decoder's width, then the decoder's token embeddings of the span's words (`decoder_words_mask` numbers each
  decoder token with its word, from 1; gliner's token decoder model reads them one word early, see `prefixes`); the
  positions before the span representation are padding.
- without: the projected span representation alone (`prefix_len` 1).

`prefix_length` is gliner's length for a batch, which counts more than the selected spans' tokens (see there).
Generation reads the whole prefix, padding included (gliner passes no attention mask to `generate`); teacher
forcing (`label_loss`) masks the padding, as gliner's `decode_labels` does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gliner_jax.modeling.decoders import build_decoder
from gliner_jax.modeling.heads import ProjectionMLP

IGNORE_INDEX = -100  # targets that take no part in the loss (torch's cross_entropy ignore_index)


def prefix_length(
    decoder_words_mask: np.ndarray, span_words: np.ndarray, span_rows: np.ndarray, max_width: int, candidates: int
) -> int:
    """gliner's decoder prefix length for a batch (with context): one more than the most decoder tokens a span slot
    covers. The slots are the selected spans (`span_words` [M, 2], first and last word from 0, in rows
    `span_rows` [M]) and, where a row of `decoder_words_mask` [B, T] has fewer selected spans than the batch's
    `candidates` per row (words x max_width: gliner pads each row's slots to all of them, numbering a padding
    slot's span -1), a padding slot, whose span covers the row's tokens numbered 0 to max_width - 1: prompt and
    padding tokens and the first words."""
    counts = [
        int(((decoder_words_mask[r] >= s + 1) & (decoder_words_mask[r] <= e + 1)).sum())
        for r, (s, e) in zip(span_rows, span_words, strict=True)
    ]
    padded = np.bincount(span_rows, minlength=len(decoder_words_mask)) < candidates
    counts += [int((row <= max_width - 1).sum()) for row in decoder_words_mask[padded]]
    return 1 + max(counts, default=0)


class LabelDecoder(nnx.Module):
    """The causal decoder (`decoder`) and, where the span representations' width `hidden_size` differs from the
    decoder's, their projection into it (`enc2dec_proj`, gliner's `create_projection_layer`)."""

    def __init__(self, decoder_config, hidden_size: int, dropout: float, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.decoder = build_decoder(decoder_config, dtype=dtype, rngs=rngs)
        width = decoder_config.hidden_size
        self.enc2dec_proj = None if hidden_size == width else ProjectionMLP(hidden_size, width, dropout, dtype, rngs)

    def project(self, span_rep: jax.Array) -> jax.Array:
        """Span representations [..., hidden_size] in the decoder's width."""
        return span_rep if self.enc2dec_proj is None else self.enc2dec_proj(span_rep)

    def prefixes(
        self,
        span_rep: jax.Array,
        span_words: jax.Array,
        decoder_input_ids: jax.Array | None = None,
        decoder_words_mask: jax.Array | None = None,
        prefix_len: int = 1,
        word_base: int = 1,
    ) -> tuple[jax.Array, jax.Array]:
        """Decoder prefixes [M, prefix_len, d] and their valid positions [M, prefix_len] of M spans: `span_rep`
        [M, hidden_size], `span_words` [M, 2] their first and last word (from 0); with context, each span's text row
        as the decoder reads it, `decoder_input_ids` and `decoder_words_mask` [M, T], and `prefix_len` at least one
        more than the most decoder tokens a span covers. A span's tokens are those numbered first + `word_base` to
        last + `word_base`: gliner's token decoder model compares the words from 0 with the numbers from 1
        (`word_base` 0), and so reads the word before the span (with a first word 0, every token numbered 0)."""
        projected = self.project(span_rep)
        count = projected.shape[0]
        if decoder_input_ids is None:
            return projected[:, None, :], jnp.ones((count, 1), bool)
        words = decoder_words_mask[:, None, :]
        inside = (words >= span_words[:, :1, None] + word_base) & (words <= span_words[:, 1:, None] + word_base)
        inside = inside[:, 0]
        tokens = inside.sum(-1)
        start = prefix_len - tokens  # the span's first token; its representation just before
        slot = jnp.where(inside, jnp.cumsum(inside, -1) - 1 + start[:, None], prefix_len)
        rows = jnp.arange(count)[:, None]
        embeds = self.decoder.embed(decoder_input_ids).astype(projected.dtype)
        prefix = jnp.zeros((count, prefix_len, projected.shape[-1]), projected.dtype)
        prefix = prefix.at[rows, slot].set(embeds, mode="drop")
        prefix = prefix.at[jnp.arange(count), start - 1].set(projected)
        return prefix, jnp.arange(prefix_len)[None, :] >= (start - 1)[:, None]

    def label_logits(
        self, prefix: jax.Array, prefix_valid: jax.Array, label_ids: jax.Array, label_mask: jax.Array
    ) -> jax.Array:
        """Teacher-forced logits [M, P + L - 1, V] of label tokens `label_ids` [M, L] after the prefixes."""
        inputs = jnp.concatenate([prefix, self.decoder.embed(label_ids[:, :-1]).astype(prefix.dtype)], axis=1)
        valid = jnp.concatenate([prefix_valid, label_mask[:, :-1].astype(bool)], axis=1)
        hidden, _ = self.decoder(inputs, valid, self.decoder.init_cache(*valid.shape, inputs.dtype), 0)
        return self.decoder.logits(hidden)

    def label_loss(
        self,
        prefix: jax.Array,
        prefix_valid: jax.Array,
        label_ids: jax.Array,
        label_mask: jax.Array,
        targets: jax.Array,
    ) -> jax.Array:
        """gliner's decoder loss: the summed cross-entropy of `targets` [M, L] (IGNORE_INDEX: none) under teacher
        forcing."""
        logits = self.label_logits(prefix, prefix_valid, label_ids, label_mask)
        blank = jnp.full((targets.shape[0], prefix.shape[1]), IGNORE_INDEX, targets.dtype)
        targets = jnp.concatenate([blank, targets], axis=1)[:, 1:]
        counted = targets != IGNORE_INDEX
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        picked = jnp.take_along_axis(log_probs, jnp.where(counted, targets, 0)[..., None], axis=-1)[..., 0]
        return -jnp.where(counted, picked, 0.0).sum()

    def training_loss(
        self,
        span_rep: jax.Array,
        span_words: jax.Array,
        label_ids: jax.Array,
        label_mask: jax.Array,
        targets: jax.Array,
        decoder_input_ids: jax.Array | None = None,
        decoder_words_mask: jax.Array | None = None,
        prefix_len: jax.Array | int = 1,
        word_base: int = 1,
    ) -> jax.Array:
        """gliner's decoder loss as `label_loss` computes it, with the prefix length a traced scalar (gliner's length
        for the batch varies between batches of one shape): each span's prefix then its label's tokens fill the first
        prefix_len + L - 1 of T + L slots (T: the decoder rows' length, at least the longest prefix less one; without
        context T = 0 and prefix_len 1); the slots after them are never read (causal attention), and the positions
        are those of `label_loss`. `word_base` as in `prefixes` (0: the token decoder model's prefixes)."""
        projected = self.project(span_rep)
        count, width = projected.shape
        length = label_ids.shape[1]
        slots = (0 if decoder_input_ids is None else decoder_input_ids.shape[1]) + length
        rows = jnp.arange(count)
        sequence = jnp.zeros((count, slots, width), projected.dtype)
        start = jnp.full((count,), prefix_len)  # the span's first token; its representation just before
        if decoder_input_ids is not None:
            words = decoder_words_mask[:, None, :]
            first, last = span_words[:, :1, None] + word_base, span_words[:, 1:, None] + word_base
            inside = ((words >= first) & (words <= last))[:, 0]
            start = start - inside.sum(-1)
            slot = jnp.where(inside, jnp.cumsum(inside, -1) - 1 + start[:, None], slots)
            embeds = self.decoder.embed(decoder_input_ids).astype(projected.dtype)
            sequence = sequence.at[rows[:, None], slot].set(embeds, mode="drop")
        sequence = sequence.at[rows, start - 1].set(projected)
        label_slots = prefix_len + jnp.arange(length - 1)
        sequence = sequence.at[:, label_slots].set(self.decoder.embed(label_ids[:, :-1]).astype(projected.dtype))
        position = jnp.arange(slots)[None, :]
        valid = (position >= (start - 1)[:, None]) & (position < prefix_len)
        valid = valid.at[:, label_slots].set(label_mask[:, :-1].astype(bool))
        hidden, _ = self.decoder(sequence, valid, self.decoder.init_cache(count, slots, sequence.dtype), 0)
        logits = self.decoder.logits(hidden[:, prefix_len - 1 + jnp.arange(length)])  # [M, L, V]: each label token
        counted = targets != IGNORE_INDEX
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        picked = jnp.take_along_axis(log_probs, jnp.where(counted, targets, 0)[..., None], axis=-1)[..., 0]
        return -jnp.where(counted, picked, 0.0).sum()

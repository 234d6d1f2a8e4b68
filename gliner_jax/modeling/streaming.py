"""gliner's streaming span model (`StreamingSpanGLiNER`, model_type "gliner_streaming_span"): a span model whose text
backbone is a causal decoder (GPT-2, Llama, Qwen2), so that text read left to right can be extended chunk by chunk
with the decoder's key / value cache.

The prompt comes first and each label is closed by its marker (`label <<LABEL>> label <<LABEL>> <<SEP>> words`), so
that the marker's causal state has read the whole label. The label prompts are the states at the markers after the
prompt (from the first token through the first `<<SEP>>`) has run through its own context encoder
(`labels_encoder_config`); words are pooled from the decoder's (projected) token states; a span context encoder
(`span_encoder_config`) and the span mode (markerV2 by default, its context the last word of each row) score every
span against the projected prompts.

`gliner_jax.config_streaming.StreamingSpanConfig` is its `gliner_config.json`; `StreamingSpanModel` the network,
called as `GLiNERModel` for whole texts, and `step` for one chunk of a session (`gliner_jax.streaming` keeps the
sessions).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from gliner_jax.config_streaming import StreamingSpanConfig
from gliner_jax.modeling import axes
from gliner_jax.modeling.context_encoders import ContextEncoder
from gliner_jax.modeling.decoders import build_decoder
from gliner_jax.modeling.decoders.causal import KVCache
from gliner_jax.modeling.fusion import build_cross_fuser
from gliner_jax.modeling.heads import ProjectionMLP
from gliner_jax.modeling.layers import torch_linear
from gliner_jax.modeling.lstm import BiLSTM
from gliner_jax.modeling.span_modes import SpanMarkerV2, build_span_mode
from gliner_jax.modeling.word_pooling import pool_words, scatter_rows


class StreamingSpanModel(nnx.Module):
    """The streaming span network (see the module doc). Called as `GLiNERModel` on whole texts (input_ids,
    attention_mask, words_mask [B, T], words_valid [B, W], labels_valid [B, C], span_idx [B, W*K, 2], span_mask
    [B, W*K]) -> span logits [B, W, K, C]; `step` runs one chunk against a session's cache."""

    def __init__(self, config: StreamingSpanConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        hidden = config.hidden_size
        # The causal backbone, gliner's decoder base model (no language-model head): named `encoder` as every GLiNER
        # network's text backbone, so that the optimizer's encoder group (gliner's token_rep_layer) finds it.
        self.encoder = build_decoder(
            dataclasses.replace(config.encoder_config, tie_word_embeddings=True), dtype=dtype, rngs=rngs
        )
        width = config.encoder_config.hidden_size
        self.token_projection = (
            torch_linear(width, hidden, (axes.EMBED, axes.HIDDEN), dtype, rngs) if width != hidden else None
        )
        # gliner's labels_encoder (not a bi-encoder's label encoder: trained at the others' rate, as in gliner)
        self.prompt_encoder = ContextEncoder(config.labels_encoder_config, hidden, hidden, dtype=dtype, rngs=rngs)
        self.rnn = BiLSTM(hidden, config.num_rnn_layers, dtype=dtype, rngs=rngs) if config.num_rnn_layers else None
        self.context_encoder = (
            ContextEncoder(config.span_encoder_config, hidden, hidden, dtype=dtype, rngs=rngs)
            if config.span_encoder_config is not None
            else None
        )
        self.span_rep = build_span_mode(config.span_mode, hidden, config.max_width, config.dropout, dtype, rngs)
        if isinstance(self.span_rep, SpanMarkerV2):  # gliner gives it each row's word mask
            self.span_rep.row_context = True
        self.prompt_rep = ProjectionMLP(hidden, hidden, config.dropout, dtype, rngs)
        # gliner builds the cross fuser (`post_fusion_schema`, the decoder's head count) and never runs it here; its
        # decoder backbone reads no `fuse_layers`
        self.cross_fuser = build_cross_fuser(config, dtype, rngs)
        # the train step's heads of other model kinds, which a streaming model has not
        self.relation_head = self.label_decoder = None

    def tokens(
        self, input_ids: jax.Array, key_valid: jax.Array, cache: KVCache, index: jax.Array | int
    ) -> tuple[jax.Array, KVCache]:
        """Token states [B, T, hidden_size] of input_ids [B, T] at cache slots index .. index + T - 1 (projected
        where the decoder's width differs), and the cache with their keys and values written."""
        states, cache = self.encoder(self.encoder.embed(input_ids), key_valid, cache, index)
        return (states if self.token_projection is None else self.token_projection(states)), cache

    def prompts(self, tokens: jax.Array, input_ids: jax.Array, attention_mask: jax.Array, num_labels: int) -> jax.Array:
        """Raw label prompts [B, C, H] of right-padded rows (gliner pads them so): the prompt (the first token
        through the first `<<SEP>>`) through the label encoder, read at each `<<LABEL>>` in order."""
        config = self.config
        attended = attention_mask > 0
        positions = jnp.arange(input_ids.shape[1])
        separators = (input_ids == config.sep_token_index) & attended
        first_separator = jnp.min(jnp.where(separators, positions, input_ids.shape[1]), axis=1)
        in_prompt = attended & (positions <= first_separator[:, None])
        encoded = self.prompt_encoder(tokens * in_prompt[..., None].astype(tokens.dtype), in_prompt)
        marked = (input_ids == config.class_token_index) & in_prompt
        index = jnp.where(marked, jnp.cumsum(marked, axis=1) - 1, num_labels)
        return scatter_rows(encoded, index, num_labels)

    def logits(
        self,
        words: jax.Array,
        words_valid: jax.Array,
        prompts: jax.Array,
        span_idx: jax.Array,
        *,
        vectors: bool = False,
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Span logits [B, W, K, C] of raw word states [B, W, H] (valid where words_valid) against raw prompts
        [B, C, H]; with `vectors`, (logits, span representations [B, W, K, H])."""
        if self.rnn is not None:
            words = self.rnn(words, words_valid)
        if self.context_encoder is not None:
            words = self.context_encoder(words, words_valid)
        spans = self.span_rep.spans(words, span_idx, words_valid)
        logits = jnp.einsum("bwkh,bch->bwkc", spans, self.prompt_rep(prompts))
        return (logits, spans) if vectors else logits

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        words_mask: jax.Array,
        words_valid: jax.Array,
        labels_valid: jax.Array,
        span_idx: jax.Array | None = None,
        span_mask: jax.Array | None = None,
        *,
        vectors: bool = False,
        label_vectors: bool = False,
    ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
        """Whole texts, as `GLiNERModel.__call__` (unpacked rows only)."""
        if words_valid.ndim != 2 or span_idx is None or span_mask is None:
            raise ValueError("the streaming model takes unpacked rows with span_idx and span_mask")
        batch, length = input_ids.shape
        cache = self.encoder.init_cache(batch, length)
        tokens, _ = self.tokens(input_ids, attention_mask > 0, cache, 0)
        prompts = self.prompts(tokens, input_ids, attention_mask, labels_valid.shape[1])
        words = pool_words(tokens, words_mask, words_valid.shape[1], self.config.subtoken_pooling)
        span_idx = span_idx * span_mask[..., None].astype(span_idx.dtype)
        logits, spans = self.logits(words, words_valid, prompts, span_idx, vectors=True)
        if not (vectors or label_vectors):
            return logits
        extras = {"vectors": spans} if vectors else {}
        if label_vectors:
            extras["label_vectors"] = self.prompt_rep(prompts)
        return logits, extras

    def step(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        words_mask: jax.Array,
        cache: KVCache,
        index: jax.Array | int,
        words: jax.Array,
        num_words: jax.Array,
        new_words: jax.Array,
        prompts: jax.Array | None = None,
        num_labels: int = 0,
    ) -> tuple[jax.Array, KVCache, jax.Array, jax.Array]:
        """One chunk of a session (gliner's cached streaming call): input_ids, attention_mask, words_mask [B, T] (the
        chunk's tokens; the label prompt first when `prompts` is None, which then computes the `num_labels` prompts)
        at cache slots index .. index + T - 1 after the `index` tokens the cache [layers, B, S, ...] holds, which the
        chunk attends to; words [B, W, H], the session's raw word states, num_words [B] of them valid, and the
        chunk's new_words [B] appended after them. Returns the logits [B, W, K, C] of every span of the words so far
        (span (i, i + k) at [:, i, k]), the cache, the words and the raw prompts [B, C, H]."""
        slots = jnp.arange(cache.keys.shape[2])
        current = jax.lax.dynamic_update_slice_in_dim(
            jnp.zeros(input_ids.shape[:1] + slots.shape, bool), attention_mask > 0, index, axis=1
        )
        tokens, cache = self.tokens(input_ids, (slots < index)[None] | current, cache, index)
        if prompts is None:
            prompts = self.prompts(tokens, input_ids, attention_mask, num_labels)
        width = words.shape[1]
        chunk = pool_words(tokens, words_mask, width, self.config.subtoken_pooling)
        place = jnp.arange(width)[None]
        target = jnp.where(place < new_words[:, None], num_words[:, None] + place, width)
        words = words.at[jnp.arange(words.shape[0])[:, None], target].set(chunk.astype(words.dtype), mode="drop")
        total = num_words + new_words
        words_valid = place < total[:, None]
        max_width = self.config.max_width
        starts = jnp.repeat(jnp.arange(width), max_width)
        span_idx = jnp.stack([starts, starts + jnp.tile(jnp.arange(max_width), width)], -1)
        span_idx = jnp.where(span_idx[:, 1:] < total[:, None, None], span_idx, 0)
        return self.logits(words, words_valid, prompts, span_idx), cache, words, prompts

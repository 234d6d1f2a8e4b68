"""The GLiNER network: encoder -> label prompts and pooled words -> BiLSTM -> span or token head -> raw logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gliner_jax.config import GLiNERConfig
from gliner_jax.modeling import axes
from gliner_jax.modeling.encoders import build_encoder
from gliner_jax.modeling.heads import ProjectionMLP, TokenScorer
from gliner_jax.modeling.layers import torch_linear
from gliner_jax.modeling.lstm import BiLSTM
from gliner_jax.modeling.span_modes import build_span_mode
from gliner_jax.modeling.word_pooling import pool_words, scatter_rows


class GLiNERModel(nnx.Module):
    """Span (any `span_mode` of `span_modes`) or token (`token_level`) GLiNER returning raw logits.

    Inputs (see `gliner_jax.processing.Batch`): input_ids, attention_mask, words_mask [B, T];
    words_valid [B, W] and labels_valid [B, C], whose shapes fix W and C for jit; span model only:
    span_idx [B, W*K, 2], span_mask [B, W*K]. Output: span logits [B, W, K, C] or token logits
    [B, W, C, 3] (start, end, inside).
    """

    def __init__(self, config: GLiNERConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        hidden, width = config.hidden_size, config.encoder_config.hidden_size
        self.encoder = build_encoder(config.encoder_config, dtype=dtype, rngs=rngs)
        self.projection = (
            torch_linear(width, hidden, (axes.EMBED, axes.HIDDEN), dtype, rngs) if hidden != width else None
        )
        self.rnn = BiLSTM(hidden, config.num_rnn_layers, dtype=dtype, rngs=rngs) if config.num_rnn_layers else None
        if config.span_mode == "token_level":
            self.span_rep = self.prompt_rep = None
            self.scorer = TokenScorer(hidden, config.dropout, dtype, rngs)
        else:
            self.span_rep = build_span_mode(config.span_mode, hidden, config.max_width, config.dropout, dtype, rngs)
            self.prompt_rep = ProjectionMLP(hidden, hidden, config.dropout, dtype, rngs)
            self.scorer = None

    def representations(
        self, input_ids: jax.Array, attention_mask: jax.Array, words_mask: jax.Array, num_labels: int, num_words: int
    ) -> tuple[jax.Array, jax.Array]:
        """Label prompts [B, C, H] (states at `<<ENT>>`, in order) and word states [B, W, H] (subtokens pooled as
        `subtoken_pooling` says)."""
        tokens = self.encoder(input_ids, attention_mask)
        if self.projection is not None:
            tokens = self.projection(tokens)
        is_class = (input_ids == self.config.class_token_index) & (attention_mask > 0)
        label_slots = jnp.where(is_class, jnp.cumsum(is_class, axis=1) - 1, num_labels)
        # embed_ent_token=False reads the token after each <<ENT>> (the label's first subword).
        source = tokens if self.config.embed_ent_token else jnp.roll(tokens, -1, axis=1)
        prompts = scatter_rows(source, label_slots, num_labels)
        words = pool_words(tokens, words_mask, num_words, self.config.subtoken_pooling)
        return prompts, words

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        words_mask: jax.Array,
        words_valid: jax.Array,
        labels_valid: jax.Array,
        span_idx: jax.Array | None = None,
        span_mask: jax.Array | None = None,
    ) -> jax.Array:
        num_words, num_labels = words_valid.shape[1], labels_valid.shape[1]
        prompts, words = self.representations(input_ids, attention_mask, words_mask, num_labels, num_words)
        if self.rnn is not None:
            words = self.rnn(words, words_valid)
        if self.scorer is not None:
            return self.scorer(words, prompts)
        if span_idx is None or span_mask is None:
            raise ValueError("the span model needs span_idx and span_mask")
        span_idx = span_idx * span_mask[..., None].astype(span_idx.dtype)
        return self.span_rep(words, span_idx, self.prompt_rep(prompts), words_valid)

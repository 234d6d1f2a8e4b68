"""The GLiNER network: encoder -> label prompts and pooled words -> BiLSTM -> span or token head -> raw logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gliner_jax.config import GLiNERConfig
from gliner_jax.modeling import axes
from gliner_jax.modeling.encoders import build_encoder
from gliner_jax.modeling.heads import ProjectionMLP, TokenScorer
from gliner_jax.modeling.layers import segment_cumsum, torch_linear
from gliner_jax.modeling.lstm import BiLSTM
from gliner_jax.modeling.span_modes import build_span_mode
from gliner_jax.modeling.word_pooling import pool_words, scatter_rows


class GLiNERModel(nnx.Module):
    """Span (any `span_mode` of `span_modes`) or token (`token_level`) GLiNER returning raw logits.

    Inputs (see `gliner_jax.processing.Batch`): input_ids, attention_mask, words_mask [B, T];
    words_valid [B, W] and labels_valid [B, C], whose shapes fix W and C for jit; span model only:
    span_idx [B, W*K, 2], span_mask [B, W*K]. Output: span logits [B, W, K, C] or token logits
    [B, W, C, 3] (start, end, inside).

    Packed rows (`gliner_jax.packing`): attention_mask holds segment ids (1, 2, ... for the examples of a row, 0
    padding) and every per-example input has a slot axis after the row axis, slot s holding segment s + 1:
    words_valid [B, S, W], labels_valid [B, S, C], span_idx [B, S, W*K, 2], span_mask [B, S, W*K]. Each example's
    words and label prompts are gathered into its own slot before the BiLSTM and the head, so it is scored exactly
    as alone; the logits are per example, [B, S, W, K, C] or [B, S, W, C, 3] (unused slots hold padding).
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
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        words_mask: jax.Array,
        num_slots: int,
        num_labels: int,
        num_words: int,
    ) -> tuple[jax.Array, jax.Array]:
        """Label prompts [B * S, C, H] (states at `<<ENT>>`, in order) and word states [B * S, W, H] (subtokens
        pooled as `subtoken_pooling` says) of the S examples (segments 1..S of `attention_mask`) of each row."""
        tokens = self.encoder(input_ids, attention_mask)
        if self.projection is not None:
            tokens = self.projection(tokens)
        num_examples = input_ids.shape[0] * num_slots
        row_start = jnp.arange(input_ids.shape[0])[:, None] * num_slots
        examples = jnp.where(attention_mask > 0, row_start + attention_mask - 1, num_examples)  # padding: dropped
        is_class = (input_ids == self.config.class_token_index) & (attention_mask > 0)
        label_index = jnp.where(is_class, segment_cumsum(is_class.astype(jnp.int32), attention_mask) - 1, num_labels)
        # embed_ent_token=False reads the token after each <<ENT>> (the label's first subword).
        source = tokens if self.config.embed_ent_token else jnp.roll(tokens, -1, axis=1)
        prompts = scatter_rows(source, label_index, num_labels, examples, num_examples)
        words = pool_words(tokens, words_mask, num_words, self.config.subtoken_pooling, examples, num_examples)
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
        examples = words_valid.shape[:-1]  # (B,) or, packed, (B, S)
        if len(examples) not in (1, 2) or labels_valid.shape[:-1] != examples:
            raise ValueError(
                f"words_valid {words_valid.shape} and labels_valid {labels_valid.shape} need the same leading axes: "
                "(rows,) or, packed, (rows, slots)"
            )
        num_slots = examples[1] if len(examples) == 2 else 1
        num_words, num_labels = words_valid.shape[-1], labels_valid.shape[-1]
        prompts, words = self.representations(input_ids, attention_mask, words_mask, num_slots, num_labels, num_words)
        words_valid = words_valid.reshape(-1, num_words)
        if self.rnn is not None:
            words = self.rnn(words, words_valid)
        if self.scorer is not None:
            logits = self.scorer(words, prompts)
        else:
            if span_idx is None or span_mask is None:
                raise ValueError("the span model needs span_idx and span_mask")
            span_idx = (span_idx * span_mask[..., None].astype(span_idx.dtype)).reshape(-1, *span_idx.shape[-2:])
            logits = self.span_rep(words, span_idx, self.prompt_rep(prompts), words_valid)
        return logits.reshape(*examples, *logits.shape[1:])

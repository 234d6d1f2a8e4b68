"""The GLiNER networks, uni-encoder and bi-encoder: text encoder -> words (and, in the uni-encoder, label prompts read
from the same sequence; in the bi-encoder, labels read by their own encoder) -> span or token head -> raw logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gliner_jax.config import GLiNERConfig
from gliner_jax.modeling import axes
from gliner_jax.modeling.encoders import build_encoder
from gliner_jax.modeling.heads import ProjectionMLP, SpanMarkerV0, TokenScorer
from gliner_jax.modeling.layers import torch_linear
from gliner_jax.modeling.lstm import BiLSTM


def scatter_rows(values: jax.Array, slots: jax.Array, num_slots: int) -> jax.Array:
    """out[b, slots[b, t]] = values[b, t] into zeros [B, num_slots, D]; slots outside [0, num_slots) are dropped."""
    batch = jnp.arange(values.shape[0])[:, None]
    out = jnp.zeros((values.shape[0], num_slots, values.shape[-1]), values.dtype)
    return out.at[batch, slots].set(values, mode="drop")


def word_states(tokens: jax.Array, words_mask: jax.Array, num_words: int) -> jax.Array:
    """The state of each word's first subword [B, W, H]: token t goes to word words_mask[b, t] - 1 (0: no word)."""
    return scatter_rows(tokens, jnp.where(words_mask > 0, words_mask - 1, num_words), num_words)


def masked_mean(states: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of states [N, T, D] over the positions where mask [N, T] is set: gliner's label pooling, sum over the
    mask divided by the mask's count clamped at 1e-9 (a row without tokens gives zeros)."""
    mask = mask.astype(jnp.float32)[..., None]
    mean = jnp.sum(states.astype(jnp.float32) * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1e-9)
    return mean.astype(states.dtype)


def _projection(width: int, hidden: int, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.Linear | None:
    """gliner's Linear from an encoder's width to `hidden_size`, present only where the two differ."""
    return torch_linear(width, hidden, (axes.EMBED, axes.HIDDEN), dtype, rngs) if width != hidden else None


class GLiNERModel(nnx.Module):
    """Span (`markerV0`) or token (`token_level`) GLiNER, uni- or bi-encoder, returning raw logits.

    Inputs (see `gliner_jax.processing.Batch`): input_ids, attention_mask, words_mask [B, T]; words_valid [B, W]
    and labels_valid [B, C], whose shapes fix W and C for jit; span model only: span_idx [B, W*K, 2], span_mask
    [B, W*K]. Output: span logits [B, W, K, C] or token logits [B, W, C, 3] (start, end, inside).

    Uni-encoder: the labels are the `<<ENT>>` states of a prompt in input_ids, and the words run through the BiLSTM.
    Bi-encoder: label c of row b is row labels_index[b, c] of a label table [L, D], either given
    (`labels_embeddings`, from `encode_labels`) or encoded here from labels_input_ids / labels_attention_mask
    [L, T_l]; the BiLSTM is built (gliner's checkpoints hold it) but, as in gliner, never run.
    """

    def __init__(self, config: GLiNERConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        hidden = config.hidden_size
        self.encoder = build_encoder(config.encoder_config, dtype=dtype, rngs=rngs)
        self.projection = _projection(config.encoder_config.hidden_size, hidden, dtype, rngs)
        if config.is_bi_encoder:
            self.labels_encoder = build_encoder(config.labels_encoder_config, dtype=dtype, rngs=rngs)
            self.labels_projection = _projection(config.labels_encoder_config.hidden_size, hidden, dtype, rngs)
        else:
            self.labels_encoder = self.labels_projection = None
        self.rnn = BiLSTM(hidden, config.num_rnn_layers, dtype=dtype, rngs=rngs) if config.num_rnn_layers else None
        if config.span_mode == "markerV0":
            self.span_rep = SpanMarkerV0(hidden, config.max_width, config.dropout, dtype, rngs)
            self.prompt_rep = ProjectionMLP(hidden, hidden, config.dropout, dtype, rngs)
            self.scorer = None
        else:
            self.span_rep = self.prompt_rep = None
            self.scorer = TokenScorer(hidden, config.dropout, dtype, rngs)

    def encode_text(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """Token states [B, T, hidden_size] of the text encoder (projected where its width differs)."""
        tokens = self.encoder(input_ids, attention_mask)
        return tokens if self.projection is None else self.projection(tokens)

    def encode_labels(self, labels_input_ids: jax.Array, labels_attention_mask: jax.Array) -> jax.Array:
        """Bi-encoder label embeddings [L, hidden_size] of tokenized labels [L, T_l]: the label encoder's states,
        projected token by token where its width differs, then averaged over every attended token (special tokens
        included), as gliner pools them."""
        if self.labels_encoder is None:
            raise NotImplementedError("label embeddings exist only for bi-encoder models (config.labels_encoder)")
        states = self.labels_encoder(labels_input_ids, labels_attention_mask)
        if self.labels_projection is not None:
            states = self.labels_projection(states)
        return masked_mean(states, labels_attention_mask)

    def representations(
        self, input_ids: jax.Array, attention_mask: jax.Array, words_mask: jax.Array, num_labels: int, num_words: int
    ) -> tuple[jax.Array, jax.Array]:
        """Uni-encoder: label prompts [B, C, H] (states at `<<ENT>>`, in order) and first-subword word states
        [B, W, H]."""
        tokens = self.encode_text(input_ids, attention_mask)
        is_class = (input_ids == self.config.class_token_index) & (attention_mask > 0)
        label_slots = jnp.where(is_class, jnp.cumsum(is_class, axis=1) - 1, num_labels)
        # embed_ent_token=False reads the token after each <<ENT>> (the label's first subword).
        source = tokens if self.config.embed_ent_token else jnp.roll(tokens, -1, axis=1)
        return scatter_rows(source, label_slots, num_labels), word_states(tokens, words_mask, num_words)

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
        labels_index: jax.Array | None = None,
        labels_input_ids: jax.Array | None = None,
        labels_attention_mask: jax.Array | None = None,
        labels_embeddings: jax.Array | None = None,
    ) -> jax.Array:
        num_words, num_labels = words_valid.shape[1], labels_valid.shape[1]
        if self.labels_encoder is None:
            prompts, words = self.representations(input_ids, attention_mask, words_mask, num_labels, num_words)
            if self.rnn is not None:
                words = self.rnn(words, words_valid)
            return self._logits(words, prompts, span_idx, span_mask)
        if labels_index is None:
            raise ValueError("the bi-encoder needs labels_index")
        if labels_embeddings is None:
            if labels_input_ids is None or labels_attention_mask is None:
                raise ValueError("the bi-encoder needs labels_embeddings or labels_input_ids and labels_attention_mask")
            labels_embeddings = self.encode_labels(labels_input_ids, labels_attention_mask)
        words = word_states(self.encode_text(input_ids, attention_mask), words_mask, num_words)
        table = labels_embeddings.astype(words.dtype)
        if self.span_rep is not None and self.prompt_rep.dropout.deterministic:
            return self._span_logits_from_table(words, span_idx, span_mask, table, labels_index, labels_valid)
        prompts = table[labels_index] * labels_valid[..., None].astype(words.dtype)  # gliner zeroes absent labels
        return self._logits(words, prompts, span_idx, span_mask)

    def _logits(
        self, words: jax.Array, prompts: jax.Array, span_idx: jax.Array | None, span_mask: jax.Array | None
    ) -> jax.Array:
        """The head on words [B, W, H] and label prompts [B, C, H]."""
        if self.scorer is not None:
            return self.scorer(words, prompts)
        return self.span_rep(words, _masked_spans(span_idx, span_mask), self.prompt_rep(prompts))

    def _span_logits_from_table(
        self,
        words: jax.Array,
        span_idx: jax.Array | None,
        span_mask: jax.Array | None,
        table: jax.Array,
        labels_index: jax.Array,
        labels_valid: jax.Array,
    ) -> jax.Array:
        """Bi-encoder span logits with the prompt projection and the label fold run once per label table [L, H],
        not once per (row, label) slot: the same numbers, without B x C copies of that work (eval mode; dropout
        would draw one mask per slot). A slot without a label reads an appended zero row, as gliner zeroes it."""
        table = self.prompt_rep(jnp.concatenate([table, jnp.zeros((1, table.shape[1]), table.dtype)]))
        weights, bias = self.span_rep.fold_labels(table)  # [4H, L + 1], [L + 1]
        index = jnp.where(labels_valid, labels_index, table.shape[0] - 1)
        folded = (jnp.moveaxis(weights[:, index], 0, 1), bias[index])  # [B, 4H, C], [B, C]
        return self.span_rep(words, _masked_spans(span_idx, span_mask), folded=folded)


def _masked_spans(span_idx: jax.Array | None, span_mask: jax.Array | None) -> jax.Array:
    """span_idx with masked spans set to (0, 0), as gliner multiplies them by the mask."""
    if span_idx is None or span_mask is None:
        raise ValueError("the span model needs span_idx and span_mask")
    return span_idx * span_mask[..., None].astype(span_idx.dtype)

"""The GLiNER networks, uni-encoder and bi-encoder: text encoder -> pooled words (and, in the uni-encoder, label
prompts read from the same sequence, then the BiLSTM; in the bi-encoder, labels read by their own encoder) -> span or
token head -> raw logits."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gliner_jax.config import GLiNERConfig
from gliner_jax.modeling import axes
from gliner_jax.modeling.context_encoders import ContextEncoder
from gliner_jax.modeling.encoders import build_encoder
from gliner_jax.modeling.fusion import LayersFuser, build_cross_fuser
from gliner_jax.modeling.heads import ProjectionMLP, SpanMarkerV0, TokenScorer
from gliner_jax.modeling.label_decoder import LabelDecoder
from gliner_jax.modeling.layers import segment_cumsum, torch_linear
from gliner_jax.modeling.lstm import BiLSTM
from gliner_jax.modeling.relations import PairSelection, RelationHead
from gliner_jax.modeling.span_modes import batch_width, build_span_mode
from gliner_jax.modeling.word_pooling import pool_words, scatter_rows


def masked_mean(states: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of states [N, T, D] over the positions where mask [N, T] is set: gliner's label pooling, sum over the
    mask divided by the mask's count clamped at 1e-9 (a row without tokens gives zeros)."""
    mask = mask.astype(jnp.float32)[..., None]
    mean = jnp.sum(states.astype(jnp.float32) * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1e-9)
    return mean.astype(states.dtype)


def _projection(width: int, hidden: int, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.Linear | None:
    """gliner's Linear from an encoder's width to `hidden_size`, present only where the two differ."""
    return torch_linear(width, hidden, (axes.EMBED, axes.HIDDEN), dtype, rngs) if width != hidden else None


class PrecomputedPrompts(nnx.Variable):
    """gliner's `precomputed_prompts` [L, hidden_size] (`compress_prompt_embeddings`): stored label prompts, saved
    with the parameters and never trained (gliner keeps them out of its optimizer)."""


def _stored_prompts(labels: list[str] | None, hidden: int) -> PrecomputedPrompts | None:
    """Room for the stored prompts of these labels [len(labels), hidden] (filled when read or compressed)."""
    return None if labels is None else PrecomputedPrompts(jnp.zeros((len(labels), hidden), jnp.float32))


def _broadcast_stored(stored: PrecomputedPrompts, num_prompts: int, num_examples: int, dtype: jnp.dtype) -> jax.Array:
    """Stored prompts [L, H] as every example's first prompts [num_examples, num_prompts, H] (zero rows after L)."""
    value = stored.get_value().astype(dtype)[:num_prompts]
    value = jnp.pad(value, ((0, num_prompts - value.shape[0]), (0, 0)))
    return jnp.broadcast_to(value, (num_examples, *value.shape))


def _layers_fuser(config: GLiNERConfig, encoder_config: Any, dtype: jnp.dtype, rngs: nnx.Rngs) -> LayersFuser | None:
    """gliner's layers fuser of one encoder (`fuse_layers`: the text encoder's and a bi-encoder's label encoder's)."""
    if not config.fuse_layers:
        return None
    return LayersFuser(encoder_config.num_hidden_layers, encoder_config.hidden_size, dtype, rngs)


def _encode(
    encoder: nnx.Module, fuser: LayersFuser | None, input_ids: jax.Array, attention_mask: jax.Array
) -> jax.Array:
    """An encoder's last hidden states, or (`fuser`) its layers' outputs fused."""
    if fuser is None:
        return encoder(input_ids, attention_mask)
    return fuser(encoder(input_ids, attention_mask, all_layers=True), attention_mask)


def _examples(attention_mask: jax.Array, num_slots: int) -> tuple[jax.Array, int]:
    """The example of each token [B, T] (row b, segment s: b * num_slots + s - 1; padding: out of range) and the
    number of examples B * num_slots."""
    num_examples = attention_mask.shape[0] * num_slots
    row_start = jnp.arange(attention_mask.shape[0])[:, None] * num_slots
    return jnp.where(attention_mask > 0, row_start + attention_mask - 1, num_examples), num_examples


class GLiNERModel(nnx.Module):
    """Span (any `span_mode` of `span_modes`) or token (`token_level`) GLiNER, uni- or bi-encoder, returning raw
    logits.

    Inputs (see `gliner_jax.text.collate.Batch`): input_ids, attention_mask, words_mask [B, T];
    words_valid [B, W] and labels_valid [B, C], whose shapes fix W and C for jit; span model only:
    span_idx [B, W*K, 2], span_mask [B, W*K]. Output: span logits [B, W, K, C] or token logits
    [B, W, C, 3] (start, end, inside).

    Uni-encoder: the labels are the `<<ENT>>` states of a prompt in input_ids, and the words run through the BiLSTM.
    A span model with `span_encoder_config` runs its words through that context encoder before the span head
    (`span_words`; a token relation model before its entity representation).
    Bi-encoder: label c of row b is row labels_index[b, c] of a label table [L, D], either given
    (`labels_embeddings`, from `encode_labels`) or encoded here from labels_input_ids / labels_attention_mask
    [L, T_l]; the BiLSTM is built (gliner's checkpoints hold it) but, as in gliner, never run. With
    `post_fusion_schema` the label prompts and word states pass the cross fuser before the head (the bi-encoder only:
    a uni-encoder holds its parameters unused, as gliner does).

    A decoder model (`labels_decoder`) holds gliner's label decoder (`label_decoder`), which writes a label for each
    selected span from its span representation (the `vectors` of `__call__`).

    Packed rows (`gliner_jax.packing`): attention_mask holds segment ids (1, 2, ... for the examples of a row, 0
    padding) and every per-example input has a slot axis after the row axis, slot s holding segment s + 1:
    words_valid [B, S, W], labels_valid [B, S, C], span_idx [B, S, W*K, 2], span_mask [B, S, W*K] (labels_index
    [B, S, C]). Each example's words and label prompts are gathered into its own slot before the BiLSTM and the head,
    so it is scored exactly as alone; the logits are per example, [B, S, W, K, C] or [B, S, W, C, 3] (unused slots
    hold padding).
    """

    def __init__(self, config: GLiNERConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        hidden = config.hidden_size
        self.encoder = build_encoder(config.encoder_config, dtype=dtype, rngs=rngs)
        self.layers_fuser = _layers_fuser(config, config.encoder_config, dtype, rngs)
        self.projection = _projection(config.encoder_config.hidden_size, hidden, dtype, rngs)
        if config.is_bi_encoder:
            self.labels_encoder = build_encoder(config.labels_encoder_config, dtype=dtype, rngs=rngs)
            self.labels_layers_fuser = _layers_fuser(config, config.labels_encoder_config, dtype, rngs)
            self.labels_projection = _projection(config.labels_encoder_config.hidden_size, hidden, dtype, rngs)
        else:
            self.labels_encoder = self.labels_layers_fuser = self.labels_projection = None
        self.rnn = BiLSTM(hidden, config.num_rnn_layers, dtype=dtype, rngs=rngs) if config.num_rnn_layers else None
        if config.span_mode == "token_level":
            # gliner's TokenMarker (markerV0's MLPs): a token relation model's entities, with its prompt projection;
            # a token model's spans (`represent_spans`), scored against the unprojected prompts; gliner's token
            # decoder model builds a prompt projection too, and never runs it
            self.span_rep = (
                SpanMarkerV0(hidden, 1, config.dropout, dtype, rngs)
                if config.is_relex or config.represents_spans
                else None
            )
            projects = config.is_relex or config.is_decoder
            self.prompt_rep = ProjectionMLP(hidden, hidden, config.dropout, dtype, rngs) if projects else None
            self.scorer = TokenScorer(hidden, config.dropout, dtype, rngs)
        else:
            self.span_rep = build_span_mode(config.span_mode, hidden, config.max_width, config.dropout, dtype, rngs)
            self.prompt_rep = ProjectionMLP(hidden, hidden, config.dropout, dtype, rngs)
            self.scorer = None
        self.context_encoder = (
            ContextEncoder(config.span_encoder_config, hidden, hidden, dtype=dtype, rngs=rngs)
            if config.has_span_encoder
            else None
        )
        # gliner builds the cross fuser in every model but runs it only in the bi-encoder
        self.cross_fuser = build_cross_fuser(config, dtype, rngs)
        # a bi-encoder's labels have no prompts to store: its label encoder reads the stored labels
        self.precomputed_prompts = None if config.is_bi_encoder else _stored_prompts(config.precomputed_labels, hidden)
        self.precomputed_rel_prompts = _stored_prompts(config.precomputed_relations, hidden)
        relex = config.is_relex
        self.relation_head = (
            RelationHead(config.relations_layer, config.triples_layer, hidden, config.dropout, dtype, rngs)
            if relex
            else None
        )
        # gliner's label-generating decoder (`labels_decoder`): built whatever the decoder_mode, as gliner builds it
        self.label_decoder = (
            LabelDecoder(config.labels_decoder_config, hidden, config.dropout, dtype=dtype, rngs=rngs)
            if config.is_decoder
            else None
        )

    def encode_text(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """Token states [B, T, hidden_size] of the text encoder (projected where its width differs)."""
        tokens = _encode(self.encoder, self.layers_fuser, input_ids, attention_mask)
        return tokens if self.projection is None else self.projection(tokens)

    def encode_labels(self, labels_input_ids: jax.Array, labels_attention_mask: jax.Array) -> jax.Array:
        """Bi-encoder label embeddings [L, hidden_size] of tokenized labels [L, T_l]: the label encoder's states,
        projected token by token where its width differs, then averaged over every attended token (special tokens
        included), as gliner pools them."""
        if self.labels_encoder is None:
            raise NotImplementedError("label embeddings exist only for bi-encoder models (config.labels_encoder)")
        states = _encode(self.labels_encoder, self.labels_layers_fuser, labels_input_ids, labels_attention_mask)
        if self.labels_projection is not None:
            states = self.labels_projection(states)
        return masked_mean(states, labels_attention_mask)

    def word_states(
        self, tokens: jax.Array, attention_mask: jax.Array, words_mask: jax.Array, num_slots: int, num_words: int
    ) -> jax.Array:
        """Word states [B * S, W, H] (subtokens pooled as `subtoken_pooling` says) of the S examples (segments 1..S
        of `attention_mask`) of each row of token states [B, T, H]."""
        examples, num_examples = _examples(attention_mask, num_slots)
        return pool_words(tokens, words_mask, num_words, self.config.subtoken_pooling, examples, num_examples)

    def representations(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        words_mask: jax.Array,
        num_slots: int,
        num_labels: int,
        num_words: int,
    ) -> tuple[jax.Array, jax.Array]:
        """Uni-encoder: label prompts [B * S, C, H] (`prompt_states`) and word states [B * S, W, H] of the S examples
        (segments 1..S of `attention_mask`) of each row."""
        tokens = self.encode_text(input_ids, attention_mask)
        prompts = self.prompt_states(tokens, input_ids, attention_mask, num_slots, num_labels)
        return prompts, self.word_states(tokens, attention_mask, words_mask, num_slots, num_words)

    def prompt_states(
        self,
        tokens: jax.Array,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        num_slots: int,
        num_prompts: int,
        *,
        relations: bool = False,
        from_text: bool = False,
    ) -> jax.Array:
        """The prompt states [B * S, num_prompts, H] of token states [B, T, H]: at each `<<ENT>>` (`relations`: each
        `<<REL>>`), in order, or at the token after it (`embed_ent_token` / `embed_rel_token` False); in
        `precomputed_prompts_mode` the stored prompts instead, the same in every example (`precomputed_prompts`,
        `precomputed_rel_prompts`; a relation model that stores no relation prompts reads them from the text), unless
        `from_text` (what `compress_prompt_embeddings` averages)."""
        config = self.config
        stored = self.precomputed_rel_prompts if relations else self.precomputed_prompts
        if stored is not None and not from_text:
            return _broadcast_stored(stored, num_prompts, attention_mask.shape[0] * num_slots, tokens.dtype)
        token_index, at_token = (
            (config.rel_token_index, config.embed_rel_token)
            if relations
            else (config.class_token_index, config.embed_ent_token)
        )
        examples, num_examples = _examples(attention_mask, num_slots)
        marked = (input_ids == token_index) & (attention_mask > 0)
        index = jnp.where(marked, segment_cumsum(marked.astype(jnp.int32), attention_mask) - 1, num_prompts)
        source = tokens if at_token else jnp.roll(tokens, -1, axis=1)
        return scatter_rows(source, index, num_prompts, examples, num_examples)

    def relex(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        words_mask: jax.Array,
        words_valid: jax.Array,
        labels_valid: jax.Array,
        relations_valid: jax.Array,
        span_idx: jax.Array | None = None,
        span_mask: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """A relation extraction model's first stage (relations_valid [B, R] fixes R): entity logits (span model:
        [B, W, K, C]; token model: [B, W, C, 3]), the states `relation_scores` reads the selected entities from (span
        model: the span representations the logits score [B, W*K, H]; token model: the word states [B, W, H], through
        the span context encoder where there is one) and the relation prompts [B, R, H] (token states at `<<REL>>`,
        not projected, as in gliner). Packed rows (`gliner_jax.packing`, as `__call__`): every per-example input and
        output has the slot axis, [B, S, ...]."""
        if self.relation_head is None:
            raise ValueError("relex needs a relation extraction model (config.relations_layer)")
        if self.scorer is None and (span_idx is None or span_mask is None):
            raise ValueError("the span model needs span_idx and span_mask")
        examples = words_valid.shape[:-1]  # (B,) or, packed, (B, S)
        num_slots = examples[1] if len(examples) == 2 else 1
        num_words, num_labels = words_valid.shape[-1], labels_valid.shape[-1]
        words_valid = words_valid.reshape(-1, num_words)
        tokens = self.encode_text(input_ids, attention_mask)
        prompts = self.prompt_states(tokens, input_ids, attention_mask, num_slots, num_labels)
        relations = self.prompt_states(
            tokens, input_ids, attention_mask, num_slots, relations_valid.shape[-1], relations=True
        )
        words = self.word_states(tokens, attention_mask, words_mask, num_slots, num_words)
        if self.rnn is not None:
            words = self.rnn(words, words_valid)
        if self.scorer is not None:
            logits, states = self.scorer(words, self.prompt_rep(prompts)), self.span_words(words, words_valid)
        else:
            span_idx = (span_idx * span_mask[..., None].astype(span_idx.dtype)).reshape(-1, *span_idx.shape[-2:])
            spans = self.span_rep.spans(self.span_words(words, words_valid), span_idx, words_valid)  # [N, W, K, H]
            logits = jnp.einsum("nwkh,nch->nwkc", spans, self.prompt_rep(prompts))
            states = spans.reshape(spans.shape[0], -1, spans.shape[-1])
        return tuple(value.reshape(*examples, *value.shape[1:]) for value in (logits, states, relations))

    def span_words(self, words: jax.Array, words_valid: jax.Array) -> jax.Array:
        """The word states [N, W, H] the span representation reads: through the span context encoder where there is
        one. gliner runs it with every word slot of its batch valid (its batch is padded to the longest row, and that
        padding is read too), so here every slot below the batch's width is (`span_modes.batch_width`)."""
        if self.context_encoder is None:
            return words
        valid = jnp.arange(words.shape[1]) < batch_width(words, words_valid)
        return self.context_encoder(words, jnp.broadcast_to(valid, words.shape[:2]))

    def relation_scores(
        self,
        states: jax.Array,
        entity_index: jax.Array,
        entity_mask: jax.Array,
        relations: jax.Array,
        selection: PairSelection | None = None,
    ) -> tuple[jax.Array | None, jax.Array]:
        """The relation stage on the selected entities (entity_mask [B, E]: which are real) against relation prompts
        [B, R, H] -> (adjacency [B, E, E], None for relations_layer "none"; pair logits [B, E, E, R], head i and
        tail j). Span model: the entities are rows entity_index [B, E] of the span representations `states`
        [B, N, H]; token model: entity_index [B, E, 2] holds their first and last words, represented from the word
        states `states` [B, W, H] (gliner's TokenMarker). `selection`: the pairs gliner scores (`PairSelection`),
        which a TuckER triples layer needs."""
        if self.scorer is not None:
            entities = self.span_rep.endpoints(states, entity_index)
        else:
            entities = jnp.take_along_axis(states, entity_index[..., None], axis=1)
        entities = entities * entity_mask[..., None].astype(entities.dtype)
        return self.relation_head(entities, entity_mask, relations, selection)

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
        vectors: bool = False,
        label_vectors: bool = False,
        span_states: bool = False,
    ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
        """Logits; with `vectors` / `label_vectors`, (logits, {"vectors": ..., "label_vectors": ...}) holding what
        gliner attaches to entities, per example as the logits: a span model's span representations [W, K, H] or a
        token model's running sums of word states [W + 1, H] (float32, 0 first), and the label vectors [C, H] the
        head scores against (a span model's projected prompts, a token model's prompts). `span_states` (a token
        model with `represent_spans`): also what `span_scores` reads, "span_words" [W, H] and "span_prompts"
        [C, H]."""
        examples = words_valid.shape[:-1]  # (B,) or, packed, (B, S)
        if len(examples) not in (1, 2) or labels_valid.shape[:-1] != examples:
            raise ValueError(
                f"words_valid {words_valid.shape} and labels_valid {labels_valid.shape} need the same leading axes: "
                "(rows,) or, packed, (rows, slots)"
            )
        num_slots = examples[1] if len(examples) == 2 else 1
        num_words, num_labels = words_valid.shape[-1], labels_valid.shape[-1]
        if span_idx is not None and span_mask is not None:
            span_idx = (span_idx * span_mask[..., None].astype(span_idx.dtype)).reshape(-1, *span_idx.shape[-2:])
        elif self.scorer is None:
            raise ValueError("the span model needs span_idx and span_mask")
        words_valid, labels_valid = words_valid.reshape(-1, num_words), labels_valid.reshape(-1, num_labels)
        if self.labels_encoder is None:
            prompts, words = self.representations(
                input_ids, attention_mask, words_mask, num_slots, num_labels, num_words
            )
            if self.rnn is not None:
                words = self.rnn(words, words_valid)
            if self.scorer is None:
                words = self.span_words(words, words_valid)
            logits = self._logits(words, prompts, span_idx, words_valid)
        else:
            if labels_index is None:
                raise ValueError("the bi-encoder needs labels_index")
            tokens = self.encode_text(input_ids, attention_mask)
            words = self.word_states(tokens, attention_mask, words_mask, num_slots, num_words)
            if self.scorer is None:
                words = self.span_words(words, words_valid)
            if labels_embeddings is None:
                if labels_input_ids is None or labels_attention_mask is None:
                    raise ValueError(
                        "the bi-encoder needs labels_embeddings or labels_input_ids and labels_attention_mask"
                    )
                labels_embeddings = self.encode_labels(labels_input_ids, labels_attention_mask)
            table, labels_index = labels_embeddings.astype(words.dtype), labels_index.reshape(-1, num_labels)
            logits = None
            fast = self.scorer is None and isinstance(self.span_rep, SpanMarkerV0)
            fast = fast and self.prompt_rep.dropout.deterministic
            if fast and self.cross_fuser is None:
                logits = self._span_logits_from_table(words, span_idx, table, labels_index, labels_valid)
            if label_vectors or span_states or logits is None:
                # gliner zeroes absent labels
                prompts = table[labels_index] * labels_valid[..., None].astype(words.dtype)
            if self.cross_fuser is not None:  # gliner's features_enhancement, absent labels zeroed again after it
                prompts, words = self.cross_fuser(prompts, words, labels_valid, words_valid)
                prompts = prompts * labels_valid[..., None].astype(words.dtype)
            if logits is None:
                logits = self._logits(words, prompts, span_idx, words_valid)
        logits = logits.reshape(*examples, *logits.shape[1:])
        if not (vectors or label_vectors or span_states):
            return logits
        extras = {}
        if span_states:
            if not self.config.represents_spans:
                raise ValueError("span_states needs a token model with represent_spans")
            extras |= {"span_words": self.span_words(words, words_valid), "span_prompts": prompts}
        if vectors:
            extras["vectors"] = self._entity_vectors(words, span_idx, words_valid)
        if label_vectors:
            extras["label_vectors"] = prompts if self.scorer is not None else self.prompt_rep(prompts)
        return logits, {name: value.reshape(*examples, *value.shape[1:]) for name, value in extras.items()}

    def span_scores(self, span_words: jax.Array, prompts: jax.Array, span_idx: jax.Array) -> jax.Array:
        """A token model's span logits (`represent_spans`): spans span_idx [N, S, 2] (first and last word) represented
        from the word states `span_words` [N, W, H] (gliner's TokenMarker) and scored against the label prompts
        [N, C, H] -> [N, S, C]. `__call__` with `span_states` gives both inputs."""
        spans = self.span_rep.endpoints(span_words, span_idx)
        return jnp.einsum("nsh,nch->nsc", spans, prompts.astype(spans.dtype))

    def _entity_vectors(self, words: jax.Array, span_idx: jax.Array | None, words_valid: jax.Array) -> jax.Array:
        """What an entity's vector is read from: span representations [N, W, K, H], or (token model) the running
        sums of the word states [N, W + 1, H] in float32, whose differences are sums over spans."""
        if self.scorer is None:
            return self.span_rep.spans(words, span_idx, words_valid)
        sums = jnp.cumsum(words.astype(jnp.float32), axis=1)
        return jnp.concatenate([jnp.zeros_like(sums[:, :1]), sums], axis=1)

    def _logits(
        self, words: jax.Array, prompts: jax.Array, span_idx: jax.Array | None, words_valid: jax.Array
    ) -> jax.Array:
        """The head on words [N, W, H] and label prompts [N, C, H] (span_idx [N, W*K, 2], masked spans at (0, 0))."""
        if self.scorer is not None:  # a token relation model projects its prompts first, as gliner does
            return self.scorer(words, self.prompt_rep(prompts) if self.config.is_relex else prompts)
        return self.span_rep(words, span_idx, self.prompt_rep(prompts), words_valid)

    def _span_logits_from_table(
        self,
        words: jax.Array,
        span_idx: jax.Array,
        table: jax.Array,
        labels_index: jax.Array,
        labels_valid: jax.Array,
    ) -> jax.Array:
        """Bi-encoder markerV0 span logits with the prompt projection and the label fold run once per label table
        [L, H], not once per (row, label) slot: the same numbers, without N x C copies of that work (eval mode;
        dropout would draw one mask per slot). A slot without a label reads an appended zero row, as gliner zeroes
        it."""
        table = self.prompt_rep(jnp.concatenate([table, jnp.zeros((1, table.shape[1]), table.dtype)]))
        weights, bias = self.span_rep.fold_labels(table)  # [4H, L + 1], [L + 1]
        index = jnp.where(labels_valid, labels_index, table.shape[0] - 1)
        folded = (jnp.moveaxis(weights[:, index], 0, 1), bias[index])  # [N, 4H, C], [N, C]
        return self.span_rep(words, span_idx, folded=folded)

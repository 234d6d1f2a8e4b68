"""GLiNER's training objective: focal BCE with clamped logs over span or token logits, with negative masking.

Matches gliner 0.2.29 (`focal_loss_with_logits`, `BaseModel._loss`, the span and token models' `loss`) exactly:
the logs are clamped at 1e-6 (not log-sigmoid), so every element costs at most -log(1e-6) ~ 13.8. Targets are
built on device from the batch's `entities` rows (start word, end word inclusive, class id 1..C; class 0 ignored).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

EPS = 1e-6  # clamp of the probabilities inside the logs
REDUCTIONS = ("sum", "mean")
MASKINGS = ("none", "global", "label", "span")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss settings; defaults are gliner's TrainingArguments defaults.

    alpha < 0 turns class weighting off (else alpha weighs positives, 1 - alpha negatives); gamma > 0 turns on
    the focal factor (1 - p_t)^gamma; label_smoothing moves targets towards 0.5; prob_margin is subtracted from
    the probability in the negative term. `masking` drops each negative element with probability 1 - negatives:
    "global" any element whose target is 0, "label" only elements of classes with no positive in the row, "span"
    only elements of spans with no positive class. The token model ignores masking, as gliner does.
    """

    alpha: float = -1.0
    gamma: float = 0.0
    label_smoothing: float = 0.0
    prob_margin: float = 0.0
    reduction: str = "sum"
    negatives: float = 1.0
    masking: str = "global"
    rel_alpha: float | None = None  # relation models' adjacency and relation terms (None: alpha), gliner's rel_alpha
    rel_gamma: float | None = None  # their gamma (None: gamma)

    def __post_init__(self) -> None:
        if not (self.alpha < 0 or 0 <= self.alpha <= 1):
            raise ValueError(f"loss.alpha must be < 0 (off) or in [0, 1], got {self.alpha!r}")
        if not (self.gamma >= 0 and math.isfinite(self.gamma)):
            raise ValueError(f"loss.gamma must be a finite number >= 0, got {self.gamma!r}")
        if not (self.rel_alpha is None or self.rel_alpha < 0 or 0 <= self.rel_alpha <= 1):
            raise ValueError(f"loss.rel_alpha must be null, < 0 (off) or in [0, 1], got {self.rel_alpha!r}")
        if not (self.rel_gamma is None or (self.rel_gamma >= 0 and math.isfinite(self.rel_gamma))):
            raise ValueError(f"loss.rel_gamma must be null or a finite number >= 0, got {self.rel_gamma!r}")
        for name in ("label_smoothing", "prob_margin", "negatives"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"loss.{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"loss.reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        if self.masking not in MASKINGS:
            raise ValueError(f"loss.masking must be one of {MASKINGS}, got {self.masking!r}")


def focal_loss_with_logits(
    logits: jax.Array,
    targets: jax.Array,
    *,
    alpha: float,
    gamma: float,
    label_smoothing: float,
    prob_margin: float,
    probabilities: bool = False,
) -> jax.Array:
    """Elementwise focal binary cross-entropy of `logits` against `targets` (same shape), in float32.

    t' = t(1 - ls) + ls/2; p = sigmoid(x) (x itself with `probabilities`, gliner's normalize_prob=False);
    pm = clip(p - prob_margin, 0, 1); loss = -t' log(max(p, 1e-6)) - (1 - t') log(max(1 - pm, 1e-6)), times
    (1 - p_t)^gamma with p_t = p t' + (1 - pm)(1 - t') when gamma > 0, times alpha t' + (1 - alpha)(1 - t')
    when alpha >= 0.
    """
    x = jnp.asarray(logits).astype(jnp.float32)
    t = jnp.asarray(targets).astype(jnp.float32)
    if label_smoothing:
        t = t * (1 - label_smoothing) + 0.5 * label_smoothing
    p = x if probabilities else jax.nn.sigmoid(x)
    pm = jnp.clip(p - prob_margin, 0.0, 1.0)
    loss = -t * jnp.log(jnp.maximum(p, EPS)) - (1.0 - t) * jnp.log(jnp.maximum(1.0 - pm, EPS))
    if gamma > 0:
        p_t = p * t + (1 - pm) * (1 - t)
        loss = loss * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss


def _paint(hits: jax.Array, classes: jax.Array, num_labels: int) -> jax.Array:
    """[B, N, C] float 0/1: cell (b, n, c) is 1 iff some entity row e of b has hits[b, e, n] and class id c + 1."""
    one_hot = jax.nn.one_hot(classes - 1, num_labels, dtype=jnp.float32)  # class 0 (and > C) -> all zeros
    return jnp.minimum(jnp.einsum("ben,bec->bnc", hits.astype(jnp.float32), one_hot), 1.0)


def _entity_columns(entities: jax.Array, num_words: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Start, end, class id and validity ([B, E] each) of the `entities` rows; invalid: end < start or out of words."""
    entities = jnp.asarray(entities, jnp.int32)
    start, end, cls = entities[..., 0], entities[..., 1], entities[..., 2]
    valid = (cls > 0) & (start >= 0) & (start <= end) & (end < num_words)
    return start, end, cls, valid


def span_targets(entities: jax.Array, num_words: int, max_width: int, num_labels: int) -> jax.Array:
    """Dense span targets [B, W*K, C] (W = num_words, K = max_width) from `entities` [B, E, 3].

    Row s*K + (e - s) of class c - 1 is 1 for each entity (s, e, c) with c > 0 and e - s < K, as gliner's span
    processor builds its labels; wider entities, class 0 rows and rows ending past `num_words` are ignored.
    """
    start, end, cls, valid = _entity_columns(entities, num_words)
    valid &= end - start < max_width
    index = jnp.where(valid, start * max_width + end - start, -1)  # -1 one-hots to zeros
    return _paint(jax.nn.one_hot(index, num_words * max_width, dtype=jnp.bool_), cls, num_labels)


def token_targets(entities: jax.Array, num_words: int, num_labels: int) -> jax.Array:
    """Dense token targets [B, W, C, 3] (start, end, inside) from `entities` [B, E, 3], as gliner's token processor.

    For each entity (s, e, c) with c > 0: start at word s, end at word e, inside on words s..e, all of class c - 1.
    Class 0 rows and rows ending past `num_words` are ignored; there is no width limit.
    """
    start, end, cls, valid = _entity_columns(entities, num_words)
    words = jnp.arange(num_words)
    start = jnp.where(valid, start, -1)[..., None]
    end = jnp.where(valid, end, -1)[..., None]
    marks = (words == start, words == end, (words >= start) & (words <= end))
    return jnp.stack([_paint(hits, cls, num_labels) for hits in marks], axis=-1)


def _negative_keep(key: jax.Array | None, targets: jax.Array, config: LossConfig) -> jax.Array | None:
    """Per-element 0/1 keep mask of gliner's negative masking, or None when it keeps everything.

    The Bernoulli draws are `jax.random.uniform(key, targets.shape) < negatives` (gliner: torch.rand_like).
    """
    if config.masking == "none" or config.negatives >= 1:
        return None
    if key is None:
        raise ValueError(f"loss.masking={config.masking!r} with negatives < 1 needs a PRNG key")
    draw = jax.random.uniform(key, targets.shape) < config.negatives
    positive = targets > 0
    if config.masking == "global":
        negative = ~positive
    elif config.masking == "label":  # classes with no positive span in the row
        negative = ~jnp.any(positive, axis=1, keepdims=True)
    else:  # "span": spans with no positive class
        negative = ~jnp.any(positive, axis=2, keepdims=True)
    return jnp.where(negative, draw, True)


def _masked_focal(
    logits: jax.Array, targets: jax.Array, valid: jax.Array, config: LossConfig, *, probabilities: bool = False
) -> jax.Array:
    """Focal loss on the valid cells, 0 elsewhere; invalid logits are replaced by 0 first (probabilities by 0.5), so
    that saturated padding (where (1 - p_t)^gamma has an infinite slope for gamma < 1) cannot put NaNs into the
    gradients."""
    losses = focal_loss_with_logits(
        jnp.where(valid, logits, 0.5 if probabilities else 0.0),
        targets,
        alpha=config.alpha,
        gamma=config.gamma,
        label_smoothing=config.label_smoothing,
        prob_margin=config.prob_margin,
        probabilities=probabilities,
    )
    return jnp.where(valid, losses, 0.0)


def _reduce(losses: jax.Array, count: jax.Array, reduction: str) -> jax.Array:
    total = jnp.sum(losses)
    if reduction == "sum":
        return total
    return total / jnp.maximum(count, 1).astype(jnp.float32)  # the sum is 0 when nothing is valid, as in gliner


RELATION_TARGETS = ("entity_index", "entity_mask", "adjacency", "relation_rows")
# A decoder model's decoder inputs and targets (`training.data.decoder_arrays`): rows' decoder tokens, the gold spans
# (row, start, end), their label tokens and targets, gliner's prefix length (the same in every row).
DECODER_TARGETS = (
    "decoder_input_ids",
    "decoder_words_mask",
    "decoder_spans",
    "decoder_labels_ids",
    "decoder_labels_mask",
    "decoder_labels",
    "decoder_prefix_len",
)
TOKEN_SPAN_TARGETS = ("token_spans", "token_span_mask")  # a represent_spans token model's span targets
PER_EXAMPLE_KEYS = (
    "entities",
    "labels_valid",
    "words_valid",
    "span_mask",
    "relations_valid",
    *RELATION_TARGETS,
    *TOKEN_SPAN_TARGETS,
)


def per_example_rows(logits: jax.Array, batch: Mapping[str, Any]) -> tuple[jax.Array, dict[str, Any]]:
    """The logits and per-example batch arrays of a packed batch ([rows, slots, ...], `gliner_jax.packing`) with
    rows and slots flattened into one example axis; an unpacked batch as it is."""
    lead = jnp.ndim(batch["labels_valid"]) - 1
    if lead == 1:
        return logits, dict(batch)
    flat = {
        name: jnp.reshape(batch[name], (-1, *jnp.shape(batch[name])[lead:]))
        for name in PER_EXAMPLE_KEYS
        if name in batch
    }
    return logits.reshape(-1, *logits.shape[lead:]), flat


def _element_losses(
    logits: jax.Array, batch: Mapping[str, Any], config: LossConfig, key: jax.Array | None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The elementwise losses (0 on invalid or masked cells), their targets (same shape) and the count that "mean"
    divides by, for span logits [B, W, K, C] (cells [B, W*K, C]) or token logits [B, W, C, 3]."""
    logits, batch = per_example_rows(logits, batch)
    entities = batch["entities"]
    labels_valid = jnp.asarray(batch["labels_valid"], bool)
    if "span_mask" in batch:
        b, w, k, c = logits.shape
        span_mask = jnp.asarray(batch["span_mask"], bool)
        targets = span_targets(entities, w, k, c) * span_mask[:, :, None]  # gliner zeroes spans past the text
        valid = span_mask[:, :, None] & labels_valid[:, None, :]
        losses = _masked_focal(logits.reshape(b, w * k, c), targets, valid, config)
        keep = _negative_keep(key, targets, config)
        if keep is not None:
            losses = losses * keep
        return losses, targets, jnp.sum(span_mask)
    _, w, c, _ = logits.shape
    valid = jnp.asarray(batch["words_valid"], bool)[:, :, None] & labels_valid[:, None, :]
    targets = token_targets(entities, w, c)
    return _masked_focal(logits, targets, valid[..., None], config), targets, jnp.sum(valid)


def gliner_loss(
    logits: jax.Array, batch: Mapping[str, Any], config: LossConfig, key: jax.Array | None = None
) -> jax.Array:
    """GLiNER's scalar training loss for span logits [B, W, K, C] or token logits [B, W, C, 3] (packed: [B, S, ...]).

    The batch (training batch contract, packed or not) picks the model: with `span_mask` the span loss over valid
    (span, label) cells, "mean" dividing by the number of valid spans; without it the token loss over valid (word,
    label) cells (start, end and inside), "mean" dividing by the number of valid (word, label) pairs. `key` drives
    the negative masking (span model only, and only when masking != "none" and negatives < 1; its draws follow the
    example rows, so a packed batch draws other masks than the same batch unpacked).
    """
    losses, _, count = _element_losses(logits, batch, config, key)
    return _reduce(losses, count, config.reduction)


def gliner_loss_terms(
    logits: jax.Array, batch: Mapping[str, Any], config: LossConfig, key: jax.Array | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`gliner_loss` (computed exactly as there) and its split into terms, each reduced as the loss is: "positive"
    and "negative", the cells whose target is 1 or 0 (before label smoothing), and for the token model also
    "start", "end" and "inside". Each split sums to the loss up to rounding."""
    losses, targets, count = _element_losses(logits, batch, config, key)
    parts = {"positive": targets > 0, "negative": targets <= 0}
    if "span_mask" not in batch:
        parts |= {name: jnp.arange(3) == i for i, name in enumerate(("start", "end", "inside"))}
    terms = {name: _reduce(jnp.where(part, losses, 0.0), count, config.reduction) for name, part in parts.items()}
    return _reduce(losses, count, config.reduction), terms


def token_span_loss_terms(
    logits: jax.Array,
    span_logits: jax.Array,
    batch: Mapping[str, Any],
    config: LossConfig,
    token_weight: float,
    span_weight: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A token model's training loss under `represent_spans`, as gliner 0.2.29's token models compute it:
    token_weight * token loss + span_weight * span loss (its config's token_loss_coef, span_loss_coef), and its terms
    (the token loss's, plus "token" and "span", each before its coefficient).

    `logits` are the token logits (their loss is `gliner_loss`); `span_logits` [B, N, C] (packed: [B * S, N, C]) the
    logits of the batch's `token_spans` [B, N, 3] (start, end, class id: one-hot target of class id - 1, none for a
    negative span of class 0), scored with the token loss's focal settings on the cells of `token_span_mask` [B, N]
    and the row's labels, without negative masking (gliner's token loss has none); "mean" divides by the number of
    those cells."""
    token, terms = gliner_loss_terms(logits, batch, config)
    _, flat = per_example_rows(logits, batch)
    num_labels = span_logits.shape[-1]
    classes = jnp.asarray(flat["token_spans"], jnp.int32)[..., 2]
    targets = jax.nn.one_hot(classes - 1, num_labels, dtype=jnp.float32)  # class 0 (a negative) -> zeros
    valid = jnp.asarray(flat["token_span_mask"], bool)[:, :, None] & jnp.asarray(flat["labels_valid"], bool)[:, None]
    span = _reduce(_masked_focal(span_logits, targets, valid, config), jnp.sum(valid), config.reduction)
    return token * token_weight + span * span_weight, terms | {"token": token, "span": span}


@dataclasses.dataclass(frozen=True)
class RelationWeights:
    """A relation model's loss coefficients (its config's span_loss_coef, adjacency_loss_coef, relation_loss_coef)."""

    span: float = 1.0
    adjacency: float = 1.0
    relation: float = 1.0


def relation_cell_targets(rows: jax.Array, num_entities: int, num_relations: int) -> jax.Array:
    """Dense relation targets [B, E*E, R] from `rows` [B, P, 3] (head, tail, class id 1..R; class 0 ignored): cell
    (h * E + t, c - 1) is 1 for each row."""
    rows = jnp.asarray(rows, jnp.int32)
    head, tail, cls = rows[..., 0], rows[..., 1], rows[..., 2]
    valid = (cls > 0) & (head >= 0) & (tail >= 0) & (head < num_entities) & (tail < num_entities)
    index = jnp.where(valid, head * num_entities + tail, -1)
    return _paint(jax.nn.one_hot(index, num_entities * num_entities, dtype=jnp.bool_), cls, num_relations)


def _masked_sum(losses: jax.Array, mask: jax.Array, reduction: str) -> jax.Array:
    losses = jnp.where(mask, losses, 0.0)
    return _reduce(losses, jnp.sum(mask), reduction)


def scored_pairs(batch: dict[str, jax.Array], adjacency: bool) -> jax.Array:
    """The (head, tail) pairs [B, E, E] a relation model's relation term scores, as gliner selects them in training:
    the gold adjacency's pairs (positives and the sampled negatives) or, without an adjacency layer (`adjacency`
    False: relations_layer "none"), every ordered pair of two real entities."""
    if adjacency:
        return jnp.asarray(batch["adjacency"]) > 0
    entity_mask = jnp.asarray(batch["entity_mask"], bool)
    e = entity_mask.shape[1]
    return entity_mask[:, :, None] & entity_mask[:, None, :] & ~jnp.eye(e, dtype=bool)


def relation_loss_terms(
    logits: jax.Array,
    adjacency: jax.Array | None,
    pair_logits: jax.Array,
    batch: Mapping[str, Any],
    config: LossConfig,
    weights: RelationWeights,
    key: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A relation model's training loss, as gliner 0.2.29's `UniEncoderSpanRelexModel.forward` computes it, and its
    terms "entity", "adjacency", "relation" (each before its coefficient) plus the entity term's "positive" and
    "negative".

    `logits` [B, W, K, C] are the entity logits (their loss is `gliner_loss`); `adjacency` [B, E, E] the adjacency
    probabilities of the batch's gold entities (`entity_index`, `entity_mask` [B, E]; None for relations_layer
    "none"), scored against the gold `adjacency` over every pair of real entities (the diagonal included); and
    `pair_logits` [B, E, E, R] the relation logits, scored on the pairs the gold adjacency selects (relations_layer
    "none": every ordered pair of two real entities) and the row's real relations (`relations_valid` [B, R])
    against `relation_rows` [B, P, 3]. The adjacency and relation terms use `rel_alpha` / `rel_gamma` (default
    alpha / gamma) and the other focal settings, reduction and masking of `config`. Total: entity * span +
    adjacency * adjacency + relation * relation coefficient; a batch without any relation prompt has the entity
    term alone (no coefficient), as in gliner.
    """
    entity_key = relation_key = adjacency_key = None
    if key is not None:
        entity_key, adjacency_key, relation_key = jax.random.split(key, 3)
    entity, terms = gliner_loss_terms(logits, batch, config, entity_key)
    focal = dataclasses.replace(
        config,
        alpha=config.alpha if config.rel_alpha is None else config.rel_alpha,
        gamma=config.gamma if config.rel_gamma is None else config.rel_gamma,
    )
    entity_mask = jnp.asarray(batch["entity_mask"], bool)
    gold = jnp.asarray(batch["adjacency"]).astype(jnp.float32)
    b, e, _, r = pair_logits.shape
    relations_valid = jnp.asarray(batch["relations_valid"], bool)
    rel_targets = relation_cell_targets(batch["relation_rows"], e, r)
    pairs = scored_pairs(batch, adjacency is not None)
    rel_mask = pairs.reshape(b, e * e, 1) & relations_valid[:, None, :]
    rel_losses = _masked_focal(pair_logits.reshape(b, e * e, r), rel_targets, rel_mask, focal)
    keep = _negative_keep(relation_key, rel_targets, focal)
    relation = _masked_sum(rel_losses if keep is None else rel_losses * keep, rel_mask, focal.reduction)
    total = entity * weights.span + relation * weights.relation
    terms = terms | {"entity": entity, "relation": relation}
    if adjacency is not None:
        pair_mask = (entity_mask[:, :, None] & entity_mask[:, None, :]).reshape(b, e * e, 1)
        adj_targets = gold.reshape(b, e * e, 1)
        adj_losses = _masked_focal(adjacency.reshape(b, e * e, 1), adj_targets, pair_mask, focal, probabilities=True)
        keep = _negative_keep(adjacency_key, adj_targets, focal)
        terms["adjacency"] = _masked_sum(adj_losses if keep is None else adj_losses * keep, pair_mask, focal.reduction)
        total = total + terms["adjacency"] * weights.adjacency
    return jnp.where(jnp.any(relations_valid), total, entity), terms

"""The one builder of the train state and the jitted, sharded train step (the Trainer, the benchmarks and the tools
all train through it).

`build_train_program` takes a built GLiNER network and sets it up for training as `gliner-jax train` does: encoder
attributes and the remat policy through the checked path (`set_encoder_attributes`), the layers unrolled or in a
scan. Parameters are held in `param_dtype`; below float32 the optimizer keeps float32 master weights
(`optim.with_master_weights`) that start from the float32 initialisation, not from its rounding. Parameters,
optimizer state and the batch are placed on the mesh under the logical axis rules. A network built under
`nnx.eval_shape` gives an abstract program: the same shapes and shardings, for compiling ahead of time.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gliner_jax.modeling import axes
from gliner_jax.modeling.relations import PairSelection
from gliner_jax.sharding import DEFAULT_RULES, LogicalRules, batch_sharding, state_shardings
from gliner_jax.text.collate import SHARED_LABEL_ARRAYS
from gliner_jax.training.loss import (
    DECODER_TARGETS,
    RELATION_TARGETS,
    TOKEN_SPAN_TARGETS,
    LossConfig,
    RelationWeights,
    gliner_loss_terms,
    per_example_rows,
    relation_loss_terms,
    scored_pairs,
    token_span_loss_terms,
)
from gliner_jax.training.optim import (
    OptimizerConfig,
    apply_updates,
    float32_params,
    make_optimizer,
    with_master_weights,
)

logger = logging.getLogger(__name__)

StepFn = Callable[..., tuple[nnx.State, optax.OptState, nnx.State, dict[str, jax.Array]]]


def set_encoder_attributes(model: nnx.Module, attributes: Mapping[str, Any]) -> None:
    """Set attributes of the encoder's modules by name (`model.encoder.set_attributes`); ValueError naming any that
    no module of this encoder family has."""
    if not attributes:
        return
    try:
        model.encoder.set_attributes(**attributes)
    except ValueError as error:
        family = type(model.encoder).__name__
        raise ValueError(f"model: {family} has no module attribute among {sorted(attributes)} ({error})") from None


def _network_inputs(batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The batch's arrays that the network takes (all but the loss targets)."""
    targets = {"entities", *RELATION_TARGETS, *TOKEN_SPAN_TARGETS, *DECODER_TARGETS}
    return {name: value for name, value in batch.items() if name not in targets}


def decoder_loss(model: nnx.Module, states: jax.Array, batch: dict[str, jax.Array]) -> jax.Array:
    """A decoder model's decoder loss on the batch's gold spans (`decoder_spans` [M, 3]: row, first and last word;
    padding spans have no targets), as gliner trains it: read from its span representations `states` [B, W, K, H],
    or a token decoder model's from its word states [B, W, H] (`span_rep.endpoints`, its prefixes reading the word
    before the span as in inference). Packed rows (`gliner_jax.packing`): the example axes [R, S] become one, which
    the spans' first column indexes."""
    spans = batch["decoder_spans"]
    token_level = model.config.span_mode == "token_level"
    per_example = 2 if token_level else 3  # [W, H] or [W, K, H] after the example axes
    states = states.reshape(-1, *states.shape[-per_example:])  # packed: rows and slots become one axis
    if token_level:
        reps = model.span_rep.endpoints(states[spans[:, 0]], spans[:, None, 1:])[:, 0]
    else:
        width = states.shape[2]
        reps = states.reshape(states.shape[0], -1, states.shape[-1])
        reps = reps[spans[:, 0], spans[:, 1] * width + spans[:, 2] - spans[:, 1]]
    context = ()
    if "decoder_input_ids" in batch:
        words = batch["decoder_words_mask"]
        ids = batch["decoder_input_ids"].reshape(-1, words.shape[-1])
        rows = (ids[spans[:, 0]], words.reshape(-1, words.shape[-1])[spans[:, 0]])
        context = (*rows, batch["decoder_prefix_len"].reshape(-1)[0])
    labels = (batch[name] for name in ("decoder_labels_ids", "decoder_labels_mask", "decoder_labels"))
    return model.label_decoder.training_loss(reps, spans[:, 1:], *labels, *context, word_base=0 if token_level else 1)


def _token_span_loss(
    model: nnx.Module, batch: dict[str, jax.Array], loss_config: LossConfig
) -> tuple[jax.Array, dict[str, jax.Array], jax.Array]:
    """A represent_spans token model's `token_span_loss_terms` (the span logits of the batch's token_spans from the
    same forward pass), and its word states [B, W, H] (unpacked rows)."""
    config = model.config
    logits, kept = model(**_network_inputs(batch), span_states=True)
    words, prompts, spans = (
        value.reshape(-1, *value.shape[-2:])  # packed: rows and slots become one axis of examples
        for value in (kept["span_words"], kept["span_prompts"], jnp.asarray(batch["token_spans"]))
    )
    span_logits = model.span_scores(words, prompts, spans[..., :2])
    weights = (config.token_loss_coef, config.span_loss_coef)
    return *token_span_loss_terms(logits, span_logits, batch, loss_config, *weights), kept["span_words"]


def loss_terms(
    model: nnx.Module, batch: dict[str, jax.Array], loss_config: LossConfig, key: jax.Array | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The training loss of `model` (a GLiNER network) on `batch` and its terms: `gliner_loss_terms` of its logits,
    or for a relation model `relation_loss_terms` of its two stages run on the batch's gold entities (as gliner
    trains it: the gold spans selected, the gold adjacency choosing the pairs; finite where gliner's attention layers
    give NaN for a row without entities). A TuckER triples layer reads gliner's flattened batch of the scored pairs
    (`relations.PairSelection`). A token model with `represent_spans`: `token_span_loss_terms`, the span logits of
    the batch's token_spans computed from the same forward pass. A decoder model whose batch has its decoder arrays:
    the span loss and `decoder_loss` weighed by its decoder_loss_coef and span_loss_coef (terms "span",
    "decoder"); a token decoder model's represent_spans loss weighed by token_loss_coef once more, as gliner's."""
    config = model.config
    decodes = model.label_decoder is not None and "decoder_spans" in batch
    if decodes and config.span_mode == "token_level":  # gliner's token decoder: decoder + coef * (token + span)
        inner, terms, words = _token_span_loss(model, batch, loss_config)
        decoder = decoder_loss(model, words, batch)
        total = decoder * config.decoder_loss_coef + inner * config.token_loss_coef
        return total, terms | {"decoder": decoder}
    if decodes:  # gliner's span and decoder terms, weighed
        logits, kept = model(**_network_inputs(batch), vectors=True)
        span, terms = gliner_loss_terms(logits, batch, loss_config, key)
        decoder = decoder_loss(model, kept["vectors"], batch)
        total = decoder * config.decoder_loss_coef + span * config.span_loss_coef
        return total, terms | {"span": span, "decoder": decoder}
    if config.represents_spans:  # the token loss and the span loss of the batch's token_spans
        return _token_span_loss(model, batch, loss_config)[:2]
    if model.relation_head is None:  # entity models
        return gliner_loss_terms(model(**_network_inputs(batch)), batch, loss_config, key)
    logits, spans, relations = model.relex(**_network_inputs(batch))
    if jnp.ndim(batch["labels_valid"]) == 3:  # packed: rows and slots become one axis of examples
        spans, relations = (value.reshape(-1, *value.shape[2:]) for value in (spans, relations))
        logits, batch = per_example_rows(logits, batch)
    # A row without gold entities (padding, an example without any) gets its first slot as a placeholder entity:
    # attention over no entity at all gives NaN (as in torch), whose gradients no mask removes. The loss reads the
    # batch's entity_mask, so the placeholder counts nowhere.
    mask = jnp.asarray(batch["entity_mask"], bool)
    attended = mask.at[:, 0].set(mask[:, 0] | ~jnp.any(mask, axis=1))
    selection = PairSelection(
        examples=jnp.any(jnp.asarray(batch["words_valid"], bool), axis=-1),
        relations_valid=jnp.asarray(batch["relations_valid"], bool),
        pairs=scored_pairs(batch, model.relation_head.relation_rep_layer is not None),
        entity_mask=mask,
    )
    adjacency, pair_logits = model.relation_scores(spans, batch["entity_index"], attended, relations, selection)
    weights = RelationWeights(config.span_loss_coef, config.adjacency_loss_coef, config.relation_loss_coef)
    return relation_loss_terms(logits, adjacency, pair_logits, batch, loss_config, weights, key)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, loss_config: LossConfig) -> StepFn:
    """`step(params, opt_state, stats, batch, key, rest) -> (params, opt_state, stats, metrics)`: forward with
    dropout drawn from `key`, the GLiNER loss, gradients, one optimizer update (not jitted); `stats`, the network's
    BatchNorm statistics (`nnx.BatchStat`: a TuckER triples layer's; empty for every other model), come back as the
    forward pass updated them, never optimised. With `optim.with_master_weights` the
    parameters become the rounded float32 masters of the optimizer state. The metrics: "loss", "grad_norm" and the
    loss's terms from the same forward pass (`loss_terms`) as "loss/positive", "loss/negative" (and the token
    model's "loss/start", "loss/end", "loss/inside", with represent_spans also "loss/token", "loss/span"; a relation
    model's "loss/entity", "loss/adjacency", "loss/relation"))."""

    def loss_fn(
        params: nnx.State, stats: nnx.State, batch: dict[str, jax.Array], key: jax.Array, rest: nnx.State
    ) -> tuple[jax.Array, tuple[dict[str, jax.Array], nnx.State]]:
        # Fresh copies of the non-parameter variables (RNG streams, BatchNorm statistics), made at this trace level as
        # NNX requires of variables it mutates.
        model = nnx.merge(graphdef, params, *jax.tree.map(jnp.asarray, (stats, rest)))
        dropout_key, loss_key = jax.random.split(key)
        nnx.reseed(model, dropout=dropout_key, policy="match_shape")
        loss, terms = loss_terms(model, batch, loss_config, loss_key)
        return loss, (terms, nnx.state(model, nnx.BatchStat))

    def step(params, opt_state, stats, batch, key, rest):
        (loss, (terms, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, batch, key, rest)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = apply_updates(params, updates, opt_state)
        grad_norm = optax.global_norm(jax.tree.map(lambda g: g.astype(jnp.float32), grads))
        metrics = {"loss": loss, "grad_norm": grad_norm} | {f"loss/{name}": value for name, value in terms.items()}
        return params, opt_state, stats, metrics

    return step


@dataclasses.dataclass(frozen=True)
class TrainStep:
    """The jitted sharded step, `step(params, opt_state, stats, batch, key) -> (params, opt_state, stats, metrics)`,
    parameters, optimizer state and BatchNorm statistics donated; `step.lower(...)` with the same arguments lowers it
    ahead of time. A concrete network's other non-parameter state (RNG streams) is a constant of the program; an
    abstract one's is `bound`, passed last."""

    jitted: Any
    bound: tuple[Any, ...] = ()

    def __call__(self, params: Any, opt_state: Any, stats: Any, batch: dict[str, Any], key: jax.Array) -> Any:
        return self.jitted(params, opt_state, stats, batch, key, *self.bound)

    def lower(
        self, params: Any, opt_state: Any, stats: Any, batch: dict[str, Any], key: jax.Array
    ) -> jax.stages.Lowered:
        """The step lowered for these (concrete or abstract) arguments."""
        return self.jitted.lower(params, opt_state, stats, batch, key, *self.bound)


@dataclasses.dataclass(frozen=True)
class TrainProgram:
    """What `build_train_program` returns: the initial train state on the mesh (parameters, optimizer state, BatchNorm
    statistics: `stats`, an empty state for a network without BatchNorm), the step, and what evaluation and export
    need (the eval-mode graph and the host's other non-parameter state)."""

    params: nnx.State
    opt_state: optax.OptState
    stats: nnx.State
    step: TrainStep
    eval_graphdef: nnx.GraphDef
    rest: nnx.State
    batch_shardings: dict[str, NamedSharding]
    eval_loss_fn: Callable[..., jax.Array]

    def eval_loss(self, batch: dict[str, Any]) -> float:
        """The loss of the initial parameters (the float32 masters where there are any) on `batch` in eval mode
        (no dropout); call it before the first step, which takes over the initial state."""
        return float(self.eval_loss_fn(float32_params(self.params, self.opt_state), self.stats, self.rest, batch))


def _make_eval_loss(graphdef: nnx.GraphDef, loss_config: LossConfig) -> Callable[..., jax.Array]:
    """`loss(params, stats, rest, batch)`, jitted: the GLiNER loss of the network `graphdef` (in eval mode: no
    dropout, BatchNorms on their running statistics)."""

    def loss(params: nnx.State, stats: nnx.State, rest: nnx.State, batch: dict[str, jax.Array]) -> jax.Array:
        model = nnx.merge(graphdef, params, stats, jax.tree.map(jnp.asarray, rest))
        return loss_terms(model, batch, loss_config)[0]

    return jax.jit(loss)


def _is_abstract(tree: Any) -> bool:
    return any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(tree))


def _place(tree: Any, shardings: Any) -> Any:
    """`tree` on the mesh: device_put, or for abstract leaves their shapes with the shardings."""
    if _is_abstract(tree):
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
    return jax.device_put(tree, shardings)


def build_train_program(
    model: nnx.Module,
    optimizer: OptimizerConfig,
    loss: LossConfig,
    mesh: Mesh,
    batch_names: Sequence[str],
    *,
    rules: LogicalRules = DEFAULT_RULES,
    param_dtype: str = "float32",
    remat: str = "none",
    unroll_layers: bool = True,
    encoder_attributes: Mapping[str, Any] | None = None,
) -> TrainProgram:
    """Set `model` (a GLiNER network, concrete or from `nnx.eval_shape`) up for training and build its sharded train
    state and step.

    `encoder_attributes` reach the encoder for training and evaluation, `remat` and `unroll_layers` for training
    only; `batch_names` are the arrays of a training batch (a bi-encoder's label table is split over its labels, the
    rest over the batch)."""
    set_encoder_attributes(model, encoder_attributes or {})
    model.eval()
    eval_graphdef = nnx.graphdef(model)  # evaluation and export: the encoder layers in a scan
    model.train()
    model.set_attributes(unroll_layers=unroll_layers, raise_if_not_found=False)  # a decoder backbone has none
    if remat != "none":  # an encoder without remat support is refused by name
        set_encoder_attributes(model, {"remat": remat})
        if unroll_layers and jax.default_backend() == "cpu":
            logger.warning(
                "model.remat=%s saves no memory in unrolled layers on XLA:CPU, which drops the optimization barriers "
                "that keep recomputation apart from the forward pass; set model.unroll_layers=false",
                remat,
            )
    graphdef, initial, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    dtype = jnp.dtype(param_dtype)

    def cast(tree: Any) -> Any:
        return jax.tree.map(lambda p: p.astype(dtype), tree)

    abstract = _is_abstract(initial)
    params = jax.eval_shape(cast, initial) if abstract else cast(initial)
    tx = make_optimizer(optimizer, params)
    if dtype != jnp.float32:
        tx = with_master_weights(tx)  # masters start from the float32 weights, not their rounding
    param_shardings = state_shardings(params, mesh, rules)
    opt_shardings = state_shardings(jax.eval_shape(tx.init, initial), mesh, rules)
    params = _place(params, param_shardings)
    initial = _place(initial, param_shardings)
    stats_shardings = state_shardings(stats, mesh, rules)
    stats = _place(stats, stats_shardings)
    if abstract:
        opt_state = _place(jax.eval_shape(tx.init, initial), opt_shardings)
    else:
        opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(initial)
    label_table = batch_sharding(mesh, rules, axes.LABELS)
    batch_shardings = {
        name: label_table if name in SHARED_LABEL_ARRAYS else batch_sharding(mesh, rules) for name in batch_names
    }
    replicated = NamedSharding(mesh, PartitionSpec())
    in_shardings = (param_shardings, opt_shardings, stats_shardings, batch_shardings, replicated)
    step = make_train_step(graphdef, tx, loss)
    if abstract:  # the RNG state as an argument: an abstract one cannot be a constant
        rest_shardings = state_shardings(rest, mesh, rules)
        in_shardings, bound = (*in_shardings, rest_shardings), (_place(rest, rest_shardings),)
    else:
        step, bound = functools.partial(step, rest=rest), ()
    jitted = jax.jit(
        step,
        in_shardings=in_shardings,
        out_shardings=(param_shardings, opt_shardings, stats_shardings, replicated),
        donate_argnums=(0, 1, 2),
    )
    return TrainProgram(
        params=params,
        opt_state=opt_state,
        stats=stats,
        step=TrainStep(jitted, bound),
        eval_graphdef=eval_graphdef,
        rest=rest,
        batch_shardings=batch_shardings,
        eval_loss_fn=_make_eval_loss(eval_graphdef, loss),
    )

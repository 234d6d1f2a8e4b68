"""Optax optimizer: regex parameter groups (encoder / labels encoder / others / frozen), AdamW, clipping, warmup
schedules.

Mirrors the reference trainer (gliner's `Trainer.create_optimizer` on transformers' AdamW): the backbone and
its output projection ("token_rep_layer" there) train at `encoder_lr`, everything else at `others_lr`; names
containing "bias" and every LayerNorm's scale get no weight decay (embeddings do). A bi-encoder's label encoder and
its projection (also in gliner's "token_rep_layer", so at gliner's encoder rate) form their own group, at
`labels_encoder_lr` / `labels_encoder_weight_decay`, which default to the encoder's (gliner has no such setting).
Parameters no GLiNER computation reads are never updated, as torch's AdamW skips a parameter whose gradient is None:
the BERT family's pooler, and a bi-encoder's BiLSTM (gliner builds it and never runs it). Gradients of all trainable
parameters are clipped together to `max_grad_norm` before AdamW, and the learning rate follows transformers'
`get_scheduler` (linear warmup from 0, then cosine / linear decay to 0 or constant) over optimizer steps.

Parameters stored in bfloat16 (`model.param_dtype`) train through `with_master_weights`: the optimizer state keeps a
float32 copy of every parameter, AdamW updates that copy from float32 gradients, and the parameters are its rounding.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.tree_util import DictKey, GetAttrKey, SequenceKey

SCHEDULERS = ("cosine", "linear", "constant")
TRAINED_GROUPS = ("encoder", "labels_encoder", "others")
FROZEN = "frozen"
# Parameters no GLiNER computation reads, kept for strict checkpoint round trips: the BERT family's pooler, in a
# bi-encoder (a tree with a label encoder) the BiLSTM, elsewhere the cross fuser (`post_fusion_schema`, run by the
# bi-encoder only). gliner's torch AdamW never updates them (their gradient is None); here they would still decay,
# so they are frozen.
NEVER_TRAINED = (r"(^|/)pooler/",)
BI_ENCODER_NEVER_TRAINED = (r"^rnn/",)
UNI_ENCODER_NEVER_TRAINED = (r"^cross_fuser/",)
BI_ENCODER_MARK = "labels_encoder/"


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    """AdamW with two learning rates (three for a bi-encoder); `num_steps` counts optimizer steps (not
    micro-batches).

    Patterns are regexes searched (`re.search`) in "/"-joined parameter paths such as
    "encoder/encoder/layer/attention/self/query_proj/kernel". Frozen patterns win over the group patterns, the label
    encoder's over the encoder's; `labels_encoder_lr` / `labels_encoder_weight_decay` set (not None) require
    `labels_encoder_pattern` to match, like every configured pattern.
    `warmup_steps`, when set, overrides `warmup_ratio` (warmup = ceil(ratio * num_steps), as gliner).
    """

    num_steps: int
    encoder_lr: float = 1e-5
    others_lr: float = 3e-5
    encoder_weight_decay: float = 0.1
    others_weight_decay: float = 0.01
    labels_encoder_lr: float | None = None  # None: encoder_lr
    labels_encoder_weight_decay: float | None = None  # None: encoder_weight_decay
    encoder_pattern: str = r"^(encoder|projection)/"
    labels_encoder_pattern: str = r"^(labels_encoder|labels_projection)/"
    frozen_patterns: tuple[str, ...] = ()
    no_decay_patterns: tuple[str, ...] = (r"bias", r"(^|/)scale$")  # biases and every LayerNorm's scale
    scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None
    max_grad_norm: float | None = 1.0
    grad_accum_steps: int = 1
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        object.__setattr__(self, "frozen_patterns", tuple(self.frozen_patterns))
        object.__setattr__(self, "no_decay_patterns", tuple(self.no_decay_patterns))
        checks = {
            "num_steps": self.num_steps >= 1,
            "encoder_lr": self.encoder_lr >= 0,
            "others_lr": self.others_lr >= 0,
            "encoder_weight_decay": self.encoder_weight_decay >= 0,
            "others_weight_decay": self.others_weight_decay >= 0,
            "labels_encoder_lr": self.labels_encoder_lr is None or self.labels_encoder_lr >= 0,
            "labels_encoder_weight_decay": self.labels_encoder_weight_decay is None
            or self.labels_encoder_weight_decay >= 0,
            "scheduler": self.scheduler in SCHEDULERS,
            "warmup_ratio": 0 <= self.warmup_ratio <= 1,
            "warmup_steps": self.warmup_steps is None or 0 <= self.warmup_steps <= self.num_steps,
            "max_grad_norm": self.max_grad_norm is None or self.max_grad_norm >= 0,
            "grad_accum_steps": self.grad_accum_steps >= 1,
            "b1": 0 <= self.b1 < 1,
            "b2": 0 <= self.b2 < 1,
            "eps": self.eps >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"invalid optimizer config {name}={getattr(self, name)!r}")
        patterns = {
            "encoder_pattern": (self.encoder_pattern,),
            "labels_encoder_pattern": (self.labels_encoder_pattern,),
        }
        patterns.update(frozen_patterns=self.frozen_patterns, no_decay_patterns=self.no_decay_patterns)
        for name, values in patterns.items():
            for pattern in values:
                try:
                    re.compile(pattern)
                except re.error as error:
                    raise ValueError(f"invalid optimizer config {name}: bad regex {pattern!r} ({error})") from None

    @property
    def num_warmup_steps(self) -> int:
        """`warmup_steps`, or ceil(num_steps * warmup_ratio) as gliner's TrainingArguments."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return math.ceil(self.num_steps * self.warmup_ratio)


def parameter_path(path: tuple[Any, ...]) -> str:
    """A pytree key path of an nnx.State (or nested dict) leaf as "a/b/c"; Variable attributes are skipped."""
    parts = []
    for key in path:
        if isinstance(key, DictKey):
            parts.append(str(key.key))
        elif isinstance(key, SequenceKey):
            parts.append(str(key.idx))
        elif not isinstance(key, GetAttrKey):
            raise TypeError(f"unexpected key {key!r} in parameter path {path}")
    return "/".join(parts)


def _map_paths(fn: Callable[[str], Any], tree: Any) -> Any:
    return jax.tree_util.tree_map_with_path(lambda path, _: fn(parameter_path(path)), tree)


def _group_of(path: str, config: OptimizerConfig, never_trained: tuple[str, ...]) -> str:
    if any(re.search(p, path) for p in (*config.frozen_patterns, *never_trained)):
        return FROZEN
    if re.search(config.labels_encoder_pattern, path):
        return "labels_encoder"
    return "encoder" if re.search(config.encoder_pattern, path) else "others"


def _groups(tree: Any, config: OptimizerConfig, bi_encoder: bool) -> Any:
    never_trained = NEVER_TRAINED + (BI_ENCODER_NEVER_TRAINED if bi_encoder else UNI_ENCODER_NEVER_TRAINED)
    return _map_paths(lambda path: _group_of(path, config, never_trained), tree)


def _is_bi_encoder(params: Any) -> bool:
    return any(
        parameter_path(path).startswith(BI_ENCODER_MARK) for path, _ in jax.tree_util.tree_leaves_with_path(params)
    )


def _check_patterns_match(params: Any, config: OptimizerConfig) -> None:
    paths = [parameter_path(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    named = [("encoder_pattern", config.encoder_pattern)]
    if config.labels_encoder_lr is not None or config.labels_encoder_weight_decay is not None:
        named.append(("labels_encoder_pattern", config.labels_encoder_pattern))
    named += [("frozen_patterns", p) for p in config.frozen_patterns]
    named += [("no_decay_patterns", p) for p in config.no_decay_patterns]
    for name, pattern in named:
        if not any(re.search(pattern, path) for path in paths):
            raise ValueError(f"optimizer config {name}: {pattern!r} matches no parameter")


def parameter_groups(params: Any, config: OptimizerConfig) -> Any:
    """The group of each parameter ("encoder", "labels_encoder", "others" or "frozen"), as a pytree shaped like
    `params`.

    Raises ValueError if a configured pattern matches no parameter."""
    _check_patterns_match(params, config)
    return _groups(params, config, _is_bi_encoder(params))


def decay_mask(params: Any, config: OptimizerConfig) -> Any:
    """Whether weight decay applies to each parameter (False for biases and LayerNorm), shaped like `params`."""
    return _map_paths(lambda path: not any(re.search(p, path) for p in config.no_decay_patterns), params)


def schedule(config: OptimizerConfig, peak: float) -> optax.Schedule:
    """Learning rate per optimizer step: linear warmup 0 -> peak, then `config.scheduler` (to 0 at num_steps)."""
    warmup = config.num_warmup_steps
    rest = max(1, config.num_steps - warmup)
    after = {
        "cosine": optax.cosine_decay_schedule(peak, rest),
        "linear": optax.linear_schedule(peak, 0.0, rest),
        "constant": optax.constant_schedule(peak),
    }[config.scheduler]
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def _adamw(config: OptimizerConfig, lr: float, weight_decay: float) -> optax.GradientTransformation:
    return optax.inject_hyperparams(optax.adamw, static_args=("mask",), hyperparam_dtype=jnp.float32)(
        learning_rate=schedule(config, lr),
        b1=config.b1,
        b2=config.b2,
        eps=config.eps,
        weight_decay=weight_decay,
        mask=lambda params: decay_mask(params, config),
    )


def make_optimizer(config: OptimizerConfig, params: Any) -> optax.GradientTransformation:
    """AdamW per group, gradients clipped by their global norm over all trainable parameters first.

    Frozen parameters get zero updates and hold no optimizer state (no moments, no accumulated gradients).
    With `grad_accum_steps` = n, n calls accumulate the mean gradient and every n-th call applies it."""
    groups = parameter_groups(params, config)
    bi_encoder = _is_bi_encoder(params)
    settings = {
        "encoder": (config.encoder_lr, config.encoder_weight_decay),
        "labels_encoder": (
            config.encoder_lr if config.labels_encoder_lr is None else config.labels_encoder_lr,
            config.encoder_weight_decay
            if config.labels_encoder_weight_decay is None
            else config.labels_encoder_weight_decay,
        ),
        "others": (config.others_lr, config.others_weight_decay),
    }
    present = set(jax.tree.leaves(groups))
    trained = optax.multi_transform(
        {group: _adamw(config, *settings[group]) for group in TRAINED_GROUPS if group in present},
        lambda tree: _groups(tree, config, bi_encoder),  # the trainable part: frozen leaves are masked out
    )
    if config.max_grad_norm:
        trained = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), trained)
    if config.grad_accum_steps > 1:
        trained = optax.MultiSteps(trained, every_k_schedule=config.grad_accum_steps).gradient_transformation()
    return optax.multi_transform(
        {"trained": trained, FROZEN: optax.set_to_zero()},
        jax.tree.map(lambda group: FROZEN if group == FROZEN else "trained", groups),
    )


def learning_rates(opt_state: Any) -> dict[str, jax.Array]:
    """{"lr/encoder": ..., "lr/others": ...} (and "lr/labels_encoder" for a bi-encoder): the rates of the latest
    optimizer step (of step 0 before any)."""
    rates = {}
    for path, hyperparams in optax.tree_utils.tree_get_all_with_path(opt_state, "hyperparams"):
        group = next(k.key for k in reversed(path) if isinstance(k, DictKey) and k.key in TRAINED_GROUPS)
        rates[f"lr/{group}"] = hyperparams["learning_rate"]
    return rates


class MasterWeightsState(NamedTuple):
    """The optimizer state of `with_master_weights`: float32 master weights and the wrapped optimizer's state."""

    master: Any
    inner: optax.OptState


def with_master_weights(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """`inner` run on float32 master copies of the parameters, for parameters stored in a lower precision.

    The state holds the master weights; gradients are cast to float32 and `inner` (clipping, AdamW, accumulation)
    updates the masters exactly as it would float32 parameters. The returned updates are the masters' float32
    changes; `apply_updates` sets the parameters to the new masters rounded to the parameters' dtype (adding a
    rounded difference would drift from them).
    """

    def init(params: Any) -> MasterWeightsState:
        master = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
        return MasterWeightsState(master, inner.init(master))

    def update(grads: Any, state: MasterWeightsState, params: Any = None) -> tuple[Any, MasterWeightsState]:
        del params  # the masters stand in for them
        grads = jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), grads)
        updates, inner_state = inner.update(grads, state.inner, state.master)
        return updates, MasterWeightsState(optax.apply_updates(state.master, updates), inner_state)

    return optax.GradientTransformation(init, update)


def apply_updates(params: Any, updates: Any, opt_state: Any) -> Any:
    """The parameters after an optimizer step: with master weights (`with_master_weights`, the state after the
    step), the masters rounded to the parameters' dtype; otherwise `optax.apply_updates`."""
    if isinstance(opt_state, MasterWeightsState):
        return jax.tree.map(lambda master, p: master.astype(p.dtype), opt_state.master, params)
    return optax.apply_updates(params, updates)


def float32_params(params: Any, opt_state: Any) -> Any:
    """The most precise copy of the parameters: the float32 master weights when the optimizer keeps them, else
    `params` (evaluation and export read these)."""
    return opt_state.master if isinstance(opt_state, MasterWeightsState) else params

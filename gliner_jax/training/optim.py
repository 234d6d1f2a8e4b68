"""Optax optimizer: regex parameter groups (encoder / others / frozen), AdamW, clipping, warmup schedules.

Mirrors the reference trainer (gliner's `Trainer.create_optimizer` on transformers' AdamW): the backbone and
its output projection ("token_rep_layer" there) train at `encoder_lr`, everything else at `others_lr`; names
containing "bias" and LayerNorm parameters get no weight decay (embeddings do); the BERT family's pooler, which no
GLiNER computation reads, is never updated (torch skips it: its gradient is None). Gradients of all trainable
parameters are clipped together to `max_grad_norm` before AdamW, and the learning rate follows transformers'
`get_scheduler` (linear warmup from 0, then cosine / linear decay to 0 or constant) over optimizer steps.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.tree_util import DictKey, GetAttrKey, SequenceKey

SCHEDULERS = ("cosine", "linear", "constant")
TRAINED_GROUPS = ("encoder", "others")
FROZEN = "frozen"
# Parameters no GLiNER computation reads, kept for strict checkpoint round trips: the BERT family's pooler. gliner's
# torch AdamW never updates them (their gradient is None); here they would still decay, so they are frozen.
NEVER_TRAINED = (r"(^|/)pooler/",)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    """AdamW with two learning rates; `num_steps` counts optimizer steps (not micro-batches).

    Patterns are regexes searched (`re.search`) in "/"-joined parameter paths such as
    "encoder/encoder/layer/attention/self/query_proj/kernel". Frozen patterns win over the encoder pattern.
    `warmup_steps`, when set, overrides `warmup_ratio` (warmup = ceil(ratio * num_steps), as gliner).
    """

    num_steps: int
    encoder_lr: float = 1e-5
    others_lr: float = 3e-5
    encoder_weight_decay: float = 0.1
    others_weight_decay: float = 0.01
    encoder_pattern: str = r"^(encoder|projection)/"
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
        patterns = {"encoder_pattern": (self.encoder_pattern,)}
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


def _group_of(path: str, config: OptimizerConfig) -> str:
    if any(re.search(p, path) for p in (*config.frozen_patterns, *NEVER_TRAINED)):
        return FROZEN
    return "encoder" if re.search(config.encoder_pattern, path) else "others"


def _groups(tree: Any, config: OptimizerConfig) -> Any:
    return _map_paths(lambda path: _group_of(path, config), tree)


def _check_patterns_match(params: Any, config: OptimizerConfig) -> None:
    paths = [parameter_path(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    named = [("encoder_pattern", config.encoder_pattern)]
    named += [("frozen_patterns", p) for p in config.frozen_patterns]
    named += [("no_decay_patterns", p) for p in config.no_decay_patterns]
    for name, pattern in named:
        if not any(re.search(pattern, path) for path in paths):
            raise ValueError(f"optimizer config {name}: {pattern!r} matches no parameter")


def parameter_groups(params: Any, config: OptimizerConfig) -> Any:
    """The group of each parameter ("encoder", "others" or "frozen"), as a pytree shaped like `params`.

    Raises ValueError if a configured pattern matches no parameter."""
    _check_patterns_match(params, config)
    return _groups(params, config)


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
    trained = optax.multi_transform(
        {
            "encoder": _adamw(config, config.encoder_lr, config.encoder_weight_decay),
            "others": _adamw(config, config.others_lr, config.others_weight_decay),
        },
        lambda tree: _groups(tree, config),  # the trainable part of the tree: frozen leaves are masked out
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
    """{"lr/encoder": ..., "lr/others": ...}: the rates of the latest optimizer step (of step 0 before any)."""
    rates = {}
    for path, hyperparams in optax.tree_utils.tree_get_all_with_path(opt_state, "hyperparams"):
        group = next(k.key for k in reversed(path) if isinstance(k, DictKey) and k.key in TRAINED_GROUPS)
        rates[f"lr/{group}"] = hyperparams["learning_rate"]
    return rates

"""A tiny parameter tree, random gradients and optax runs over them, for the optimizer tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gliner_jax.training.optim import OptimizerConfig, learning_rates, make_optimizer, parameter_path


def flat(tree) -> dict[str, object]:
    return {parameter_path(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def tiny_params() -> nnx.State:
    rng = np.random.default_rng(0)

    def param(*shape: int) -> nnx.Param:
        return nnx.Param(jnp.asarray(rng.normal(size=shape), jnp.float32))

    return nnx.State(
        {
            "encoder": {
                "layer": {"kernel": param(2, 4, 3), "bias": param(2, 3)},
                "LayerNorm": {"scale": param(3), "bias": param(3)},
                "embed": {"embedding": param(5, 3)},
            },
            "projection": {"kernel": param(3, 2), "bias": param(2)},
            "rnn": {"layers": {0: {"forward": {"weight_ih": param(2, 8), "bias_ih": param(8)}}}},
            "head": {"kernel": param(2, 2), "bias": param(2)},
        }
    )


def random_grads(params: nnx.State, steps: int, scale: float = 2.0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [
        {k: scale * rng.normal(size=v.shape).astype(np.float32) for k, v in flat(params).items()} for _ in range(steps)
    ]


def as_tree(params: nnx.State, values: dict[str, np.ndarray]) -> nnx.State:
    return jax.tree_util.tree_map_with_path(lambda path, _: jnp.asarray(values[parameter_path(path)]), params)


def run_optax(config: OptimizerConfig, params: nnx.State, grads: list[dict]) -> tuple[list[dict], list[dict]]:
    """Params after each update, and `learning_rates` after each update."""
    tx = make_optimizer(config, params)
    state = tx.init(params)
    update = jax.jit(tx.update)
    trajectory, rates = [], []
    for g in grads:
        updates, state = update(as_tree(params, g), state, params)
        params = optax.apply_updates(params, updates)
        trajectory.append({k: np.asarray(v) for k, v in flat(params).items()})
        rates.append({k: float(v) for k, v in learning_rates(state).items()})
    return trajectory, rates
